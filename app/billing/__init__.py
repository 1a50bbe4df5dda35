"""Billing pages: Checkout, Portal, plan changes; `bp` and its routes live in app/billing/routes.py."""

from app.billing.routes import bp

__all__ = ["bp"]
