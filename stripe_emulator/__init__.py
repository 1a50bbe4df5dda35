"""A stateful, offline Stripe emulator for development and tests.

Serves the subset of Stripe's API this product uses (API version
``2026-10-28.endive``, as pinned by stripe-python 16.1.0), hosted Checkout,
customer portal and invoice pages, signed webhooks and a clock. See
``stripe_emulator/README.md``; tests use ``stripe_emulator.testing``.
"""

from .objects import API_VERSION

__all__ = ["API_VERSION", "create_app", "Emulator"]


def __getattr__(name):  # lazy: importing the package must not import Flask
    if name in ("create_app", "Emulator"):
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
