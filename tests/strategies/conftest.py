"""The strategy pages' tests reuse the entitlement tests' members: users on a plan, logged in on the client."""

from tests.entitlements.conftest import member  # noqa: F401
