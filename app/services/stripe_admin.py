"""Operator work against Stripe: the catalog, the webhook endpoint, the Customer Portal configuration, the nightly
reconcile, event replay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from app.extensions import db
from app.models import StripeEvent, SubscriptionPlan, User
from app.services import DomainError, audit, stripe_gateway
from app.services.catalog import PLAN_CATALOG
from app.services.signals import SyncResult
from app.services.subscriptions import SCHEDULED_AT_PERIOD_END
from app.services.sync import sync_customer
from app.services.webhooks import API_VERSION, GUIDE_EVENTS


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
        if spec.yearly_env and spec.price_yearly is not None:
            rows.append((spec.yearly_env, f"{spec.name}_yearly", spec.name, int(spec.price_yearly * 100), "year"))
    return rows


def price_matches(price: dict, amount: int, interval: str, active_products: set[str]) -> bool:
    """Whether a price is the catalog's: its amount in USD every `interval`, on a product that is not archived."""
    recurring = price.get("recurring") or {}
    return (
        price.get("unit_amount") == amount
        and price.get("currency") == "usd"
        and recurring.get("interval") == interval
        and (recurring.get("interval_count") or 1) == 1
        and stripe_gateway.id_of(price.get("product")) in active_products
    )


def create_catalog() -> list[CatalogPrice]:
    """Create the three products and five prices (with lookup keys) unless they exist; idempotent.

    A lookup key stays on its price when the price is archived, and Stripe refuses it to another price: the price
    holding it is reactivated when it is the catalog's (amount, USD, interval, a product not archived; reported as
    existing), otherwise a new price takes the key over (`transfer_lookup_key`; reported as created).
    """
    wanted = catalog_prices()
    existing = {p["lookup_key"]: p for p in stripe_gateway.list_prices([row[1] for row in wanted])}
    products: dict[str, str] = {}
    active_products: set[str] = set()
    for product in stripe_gateway.list_products():
        plan = (product.get("metadata") or {}).get("plan")
        if product.get("active"):
            active_products.add(product["id"])
        if plan and product.get("active") and plan not in products:
            products[plan] = product["id"]
    results = []
    for env, lookup_key, plan_name, amount, interval in wanted:
        price = existing.get(lookup_key)
        if price is not None and price_matches(price, amount, interval, active_products):
            if not price.get("active"):
                price = stripe_gateway.update_price(price["id"], {"active": True})
            results.append(CatalogPrice(env, lookup_key, price["id"], False))
            continue
        if plan_name not in products:
            spec = next(s for s in PLAN_CATALOG if s.name == plan_name)
            product = stripe_gateway.create_product(
                {
                    "name": product_name(spec.display_name),
                    "description": spec.description,
                    "metadata": {"plan": plan_name},
                },
                idempotency_key=f"catalog-product-{plan_name}",
            )
            products[plan_name] = product["id"]
        params = {
            "product": products[plan_name],
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": interval},
            "lookup_key": lookup_key,
            "metadata": {"plan": plan_name, "billing_cycle": "monthly" if interval == "month" else "yearly"},
        }
        key = f"catalog-price-{lookup_key}-{amount}"
        if price is not None:
            # Another price holds the key (another amount or interval, or an archived product): the new one takes it
            # over. The key names the price it replaces, so it never meets the plain creation's other parameters.
            params["transfer_lookup_key"] = True
            key = f"{key}-replaces-{price['id']}"
        price = stripe_gateway.create_price(params, idempotency_key=key)
        results.append(CatalogPrice(env, lookup_key, price["id"], True))
    return results


def product_name(display_name: str) -> str:
    """The Stripe product's name for a plan: "Free Plan", "Starter Plan", "Pro Plan"."""
    return f"{display_name} Plan"


#: Events the endpoint takes beyond the six, each with what it adds. The six alone keep every subscription, payment
#: and customer right (the life-cycle test runs on them only). `customer.subscription.created` brings a new
#: subscription's row with the event itself, so a completed Checkout no longer reads it back from Stripe; the two
#: async ones only matter to a Checkout paid by a delayed method (a bank debit), which completes unpaid and is
#: settled later.
EXTRA_EVENTS: dict[str, str] = {
    "customer.subscription.created": "a new subscription's row comes with its own event, so a completed Checkout "
    "does not read the subscription back from Stripe (one Stripe call fewer per new subscriber, and faster)",
    "checkout.session.async_payment_succeeded": "a Checkout paid by bank debit is counted as completed (billing_checkout_sessions_completed_total) "
    "when its payment arrives",
    "checkout.session.async_payment_failed": "a bank debit that fails after Checkout is audited (checkout.payment_failed)",
}
#: What `flask stripe webhook-endpoint` registers: the six, then the extras.
ENDPOINT_EVENTS = [*GUIDE_EVENTS, *EXTRA_EVENTS]


class WebhookEndpointUnusable(DomainError):
    """The endpoint registered at the URL cannot be put right by adding events: its API version or its status."""

    code = "webhook_endpoint_unusable"
    status = 409


@dataclass
class RegisteredEndpoint:
    endpoint: dict
    created: bool
    #: Events an existing endpoint lacked, now added to it.
    added: list[str] = field(default_factory=list)


def missing_endpoint_events(endpoint: dict) -> list[str]:
    """The ENDPOINT_EVENTS the endpoint does not send (none when it sends every event, `*`), in their order."""
    enabled = set(endpoint.get("enabled_events") or [])
    return [] if "*" in enabled else [event for event in ENDPOINT_EVENTS if event not in enabled]


def register_webhook_endpoint(url: str) -> RegisteredEndpoint:
    """Register `url` for ENDPOINT_EVENTS in the API version the handlers read, or bring the endpoint already
    registered there up to them (its other events kept).

    Without `api_version` Stripe would render the events in the account's default version, whose shapes the
    handlers refuse; an endpoint's version cannot be changed, so an existing one in another version (or disabled)
    is refused with what to do. The secret is only in a new endpoint.
    """
    for endpoint in stripe_gateway.list_webhook_endpoints():
        if endpoint.get("url") == url:
            return complete_webhook_endpoint(endpoint, url)
    endpoint = stripe_gateway.create_webhook_endpoint(
        {
            "url": url,
            "enabled_events": ENDPOINT_EVENTS,
            "api_version": API_VERSION,
            "description": "Smart Strategies Builder billing",
        }
    )
    return RegisteredEndpoint(endpoint, True)


def create_webhook_endpoint(url: str) -> tuple[dict, bool]:
    """`register_webhook_endpoint` as (endpoint, created), for scripts/dev_webhook_endpoint.py."""
    registered = register_webhook_endpoint(url)
    return registered.endpoint, registered.created


def complete_webhook_endpoint(endpoint: dict, url: str) -> RegisteredEndpoint:
    """Add the events the existing endpoint at `url` lacks; refuse one that would still not work."""
    if endpoint.get("api_version") != API_VERSION:
        raise WebhookEndpointUnusable(
            f"Endpoint {endpoint['id']} at {url} sends events in API version "
            f"{endpoint.get('api_version') or 'the account default'}, the app reads {API_VERSION} (an endpoint's "
            "version cannot be changed): delete it in the Stripe Dashboard → Developers → Webhooks and run this "
            "command again"
        )
    if endpoint.get("status") not in (None, "enabled"):
        raise WebhookEndpointUnusable(
            f"Endpoint {endpoint['id']} at {url} is {endpoint.get('status')}: enable it in the Stripe Dashboard → "
            "Developers → Webhooks (or delete it and run this command again)"
        )
    missing = missing_endpoint_events(endpoint)
    if missing:
        endpoint = stripe_gateway.update_webhook_endpoint(
            endpoint["id"], {"enabled_events": [*endpoint.get("enabled_events", []), *missing]}
        )
    return RegisteredEndpoint(endpoint, False, missing)


# --- the Customer Portal configuration ------------------------------------------------------------------------------


def paid_prices() -> dict[str, list[str]]:
    """{product id: [price ids]} of the seeded paid plans: the prices the portal may switch between."""
    products: dict[str, list[str]] = {}
    for plan in db.session.scalars(
        select(SubscriptionPlan).where(SubscriptionPlan.price_monthly > 0).order_by(SubscriptionPlan.price_monthly)
    ):
        for price_id in (plan.stripe_price_id_monthly, plan.stripe_price_id_yearly):
            if price_id:
                product = stripe_gateway.id_of(stripe_gateway.retrieve_price(price_id)["product"])
                products.setdefault(product, []).append(price_id)
    return products


#: When the portal schedules a plan switch for the end of the period instead of making it now: a cheaper price or a
#: shorter interval. The app's own plan changes follow the same conditions (`subscriptions.scheduled_at_period_end`,
#: where they are defined). A portal without them switched a Pro customer to Starter at once and invoiced a credit,
#: while the same change in the app waited for the period end.
PORTAL_SCHEDULED_AT_PERIOD_END = SCHEDULED_AT_PERIOD_END


#: How the portal bills a plan switch made now: invoiced and charged at once, as the app's own upgrade is. Stripe's
#: default (`create_prorations`) leaves the difference for the next invoice: a customer who upgraded, then cancelled
#: at the period end, had the better plan for the cheaper one's price.
PORTAL_PRORATION = "always_invoice"


def portal_features(products: dict[str, list[str]]) -> dict:
    """The portal's features: card and billing details (name, email, address) editable, cancellation at period end
    only, every invoice shown, switching between the paid prices only (never to Free, which is a cancellation),
    a cheaper price or a shorter interval at the end of the period (a subscription schedule, as the app does)."""
    return {
        "payment_method_update": {"enabled": True},
        "customer_update": {"enabled": True, "allowed_updates": ["name", "email", "address"]},
        "subscription_cancel": {"enabled": True, "mode": "at_period_end", "proration_behavior": "none"},
        "invoice_history": {"enabled": True},
        "subscription_update": {
            "enabled": True,
            "default_allowed_updates": ["price"],
            "proration_behavior": PORTAL_PRORATION,
            "products": [{"product": product, "prices": prices} for product, prices in products.items()],
            "schedule_at_period_end": {"conditions": [{"type": kind} for kind in PORTAL_SCHEDULED_AT_PERIOD_END]},
        },
    }


def portal_differences(configuration: dict, products: dict[str, list[str]]) -> list[str]:
    """What in `configuration` differs from `portal_features`, one phrase each (empty: all as wanted)."""
    features = configuration.get("features") or {}

    def feature(name: str) -> dict:
        return features.get(name) or {}

    wrong = []
    if not feature("payment_method_update").get("enabled"):
        wrong.append("payment methods are not updatable")
    if not feature("customer_update").get("enabled"):
        wrong.append("billing info is not updatable")
    elif set(feature("customer_update").get("allowed_updates") or []) < {"name", "email", "address"}:
        wrong.append(
            f"billing info updates allow {', '.join(feature('customer_update').get('allowed_updates') or [])}"
            " only, not name, email and address"
        )
    if not feature("subscription_cancel").get("enabled"):
        wrong.append("customers cannot cancel")
    elif feature("subscription_cancel").get("mode") != "at_period_end":
        wrong.append(f"cancellation is {feature('subscription_cancel').get('mode')}, not at period end")
    if not feature("invoice_history").get("enabled"):
        wrong.append("invoice history is hidden")
    update = feature("subscription_update")
    offered = {p.get("product"): sorted(p.get("prices") or []) for p in update.get("products") or []}
    if not update.get("enabled"):
        wrong.append("plan switching is off")
    elif offered != {product: sorted(prices) for product, prices in products.items()}:
        wrong.append("plan switching offers other prices than the paid plans'")
    else:
        later = {c.get("type") for c in (update.get("schedule_at_period_end") or {}).get("conditions") or []}
        if not later >= set(PORTAL_SCHEDULED_AT_PERIOD_END):
            wrong.append("downgrades take effect at once, not at the period end")
        proration = update.get("proration_behavior")
        if proration != PORTAL_PRORATION:
            wrong.append(f"an upgrade is not charged at once (proration {proration}, not {PORTAL_PRORATION})")
    return wrong


def default_portal_configuration() -> dict | None:
    """The configuration portal sessions use when they name none: the account's default, if active."""
    return next(
        (c for c in stripe_gateway.list_portal_configurations() if c.get("is_default") and c.get("active")), None
    )


def configure_portal() -> tuple[dict, bool, dict]:
    """Set the default portal configuration to `portal_features` (create one when the account has none);
    (configuration, created, the features sent). Refused, changing nothing, before `flask seed-plans`: with no paid
    plan seeded the portal would be left without plan switching ("plan switching: none") and the command said ✓."""
    products = paid_prices()
    current = default_portal_configuration()  # read first: a refused key or an unreachable Stripe says so first
    if not products:
        raise DomainError(
            "No paid plan with a Stripe price is seeded, so the portal would offer no plan switching: run "
            "`flask seed-plans` first, then `flask stripe portal-config` again.",
            code="no_paid_plans",
        )
    features = portal_features(products)
    if current is not None:
        return stripe_gateway.update_portal_configuration(current["id"], {"features": features}), False, features
    created = stripe_gateway.create_portal_configuration(
        {"features": features, "business_profile": {"headline": "Smart Strategies Builder billing"}}
    )
    return created, True, features


@dataclass
class Drift:
    user_id: int
    email: str
    customer_id: str
    actions: list[str] = field(default_factory=list)


def customers_to_sync(
    email: str | None, after_user_id: int = 0, limit: int | None = None
) -> list[tuple[int, str, str]]:
    """(user id, email, customer id) of the users to reconcile: one by email, or every linked user (those after
    `after_user_id`, at most `limit` of them: the nightly job takes them a chunk at a time), in user id order."""
    query = select(User.id, User.email, User.stripe_customer_id).where(
        User.stripe_customer_id.is_not(None), User.id > after_user_id
    )
    if email:
        query = query.where(User.email == email.strip().lower())
    return [tuple(row) for row in db.session.execute(query.order_by(User.id).limit(limit))]


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
