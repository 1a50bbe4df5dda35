"""Stripe's REST API (``/v1``), one module per resource, each a Blueprint of handlers.

Handlers are registered with ``plumbing.api``, which owns authentication,
parameters, idempotency, errors and ``expand[]``; the handlers only validate
parameters and call the store and the billing engine.
"""

from __future__ import annotations

from flask import Flask

from . import (
    account,
    billing_portal,
    checkout_sessions,
    customers,
    events,
    invoices,
    payment_methods,
    products,
    subscription_schedules,
    subscriptions,
    webhook_endpoints,
)

RESOURCES = (
    account,
    products,
    customers,
    payment_methods,
    checkout_sessions,
    subscriptions,
    subscription_schedules,
    invoices,
    billing_portal,
    events,
    webhook_endpoints,
)


def register(app: Flask) -> None:
    """Serve every resource's routes on ``app``."""
    for module in RESOURCES:
        app.register_blueprint(module.bp)
