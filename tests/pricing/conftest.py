"""Pricing fixtures: the billing tests' logged-in user who pays through the emulator (tests/billing/conftest.py)."""

from tests.billing.conftest import billing  # noqa: F401  (the fixture, shared)
