"""Operator work against Stripe: the catalog, the webhook endpoint, the nightly reconcile, event replay."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator

from sqlalchemy import select

from app.extensions import db
from app.models import StripeEvent, User
from app.services import audit, stripe_gateway
from app.services.catalog import PLAN_CATALOG
from app.services.signals import SyncResult
from app.services.sync import sync_customer
from app.services.webhooks import GUIDE_EVENTS, HANDLERS


@dataclass
class CatalogPrice:
    env: str
    lookup_key: str
    price_id: str
    created: bool


def catalog_prices() -> list[tuple[str, str, str, int, str]]:
    """(env variable, lookup key, plan name, amount in cents, interval) for the five prices of the guide."""
    rows = []
    for spec in PLAN_CATALOG:
        rows.append((spec.monthly_env, f"{spec.name}_monthly", spec.name, int(spec.price_monthly * 100), "month"))
        if spec.yearly_env:
            rows.append((spec.yearly_env, f"{spec.name}_yearly", spec.name, int(spec.price_yearly * 100), "year"))
    return rows


def create_catalog() -> list[CatalogPrice]:
    """Create the three products and five prices (with lookup keys) unless they exist; idempotent."""
    wanted = catalog_prices()
    existing = {p["lookup_key"]: p for p in stripe_gateway.list_prices([row[1] for row in wanted])}
    products: dict[str, str] = {}
    for product in stripe_gateway.list_products():
        plan = (product.get("metadata") or {}).get("plan")
        if plan and product.get("active") and plan not in products:
            products[plan] = product["id"]
    results = []
    for env, lookup_key, plan_name, amount, interval in wanted:
        price = existing.get(lookup_key)
        if price is not None:
            results.append(CatalogPrice(env, lookup_key, price["id"], False))
            continue
        if plan_name not in products:
            spec = next(s for s in PLAN_CATALOG if s.name == plan_name)
            product = stripe_gateway.create_product(
                {"name": spec.display_name, "description": spec.description, "metadata": {"plan": plan_name}},
                idempotency_key=f"catalog-product-{plan_name}")
            products[plan_name] = product["id"]
        price = stripe_gateway.create_price(
            {"product": products[plan_name], "currency": "usd", "unit_amount": amount,
             "recurring": {"interval": interval}, "lookup_key": lookup_key,
             "metadata": {"plan": plan_name, "billing_cycle": "monthly" if interval == "month" else "yearly"}},
            idempotency_key=f"catalog-price-{lookup_key}-{amount}")
        results.append(CatalogPrice(env, lookup_key, price["id"], True))
    return results


#: What a new endpoint listens to: the guide's six events and the others the endpoint handles (invoice.paid,
#: customer.updated for card changes, asynchronous Checkout payments), so none of those features is left unfed.
ENDPOINT_EVENTS = sorted(set(GUIDE_EVENTS) | set(HANDLERS))


def create_webhook_endpoint(url: str) -> tuple[dict, bool]:
    """Register `url` for ENDPOINT_EVENTS; (endpoint, created). The secret is only in a new endpoint."""
    for endpoint in stripe_gateway.list_webhook_endpoints():
        if endpoint.get("url") == url:
            return endpoint, False
    endpoint = stripe_gateway.create_webhook_endpoint(
        {"url": url, "enabled_events": ENDPOINT_EVENTS, "description": "Smart Strategies Builder billing"})
    return endpoint, True


@dataclass
class Drift:
    user_id: int
    email: str
    customer_id: str
    actions: list[str] = field(default_factory=list)


def customers_to_sync(email: str | None) -> list[tuple[int, str, str]]:
    """(user id, email, customer id) of the users to reconcile: one by email, or every linked user."""
    query = select(User.id, User.email, User.stripe_customer_id).where(User.stripe_customer_id.is_not(None))
    if email:
        query = query.where(User.email == email.strip().lower())
    return [tuple(row) for row in db.session.execute(query.order_by(User.id))]


def reconcile(customers: list[tuple[int, str, str]]) -> Iterator[Drift]:
    """Sync each customer from Stripe; yield what had drifted (and audit the repair)."""
    for user_id, email, customer_id in customers:
        result: SyncResult = sync_customer(customer_id)
        if result.changed:
            audit.record("reconcile.drift_repaired", user_id, customer=customer_id, actions=result.actions)
            db.session.commit()
        yield Drift(user_id, email, customer_id, result.actions)


def events_to_replay(failed_only: bool, since: datetime | None, event_id: str | None) -> list[str]:
    query = select(StripeEvent.id).order_by(StripeEvent.stripe_created, StripeEvent.received_at)
    if event_id:
        query = query.where(StripeEvent.id == event_id)
    if failed_only:
        query = query.where(StripeEvent.status == "failed")
    if since:
        query = query.where(StripeEvent.received_at >= since)
    return list(db.session.scalars(query))
