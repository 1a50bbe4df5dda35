"""The product catalog every fresh emulator starts with.

Ids and lookup keys are the ones the app's development seed stores, so a fresh
clone can subscribe without any set-up: three products ("Free Plan", "Starter Plan", "Pro Plan") and
five prices, plus the default Customer Portal configuration. Lookup key = price id without the
``price_`` prefix.
"""

from __future__ import annotations

from . import objects

PRODUCTS = [
    ("prod_free", "Free Plan", "free", "Learn the ropes and build your first strategies."),
    ("prod_starter", "Starter Plan", "starter", "For active traders testing ideas every week."),
    ("prod_pro", "Pro Plan", "pro", "Unlimited research, real-time alerts and the API."),
]

# (price id, product id, unit amount in cents, interval)
PRICES = [
    ("price_free_monthly", "prod_free", 0, "month"),
    ("price_starter_monthly", "prod_starter", 1999, "month"),
    ("price_starter_yearly", "prod_starter", 19999, "year"),
    ("price_pro_monthly", "prod_pro", 4999, "month"),
    ("price_pro_yearly", "prod_pro", 47999, "year"),
]

CYCLE = {"month": "monthly", "year": "yearly"}


def default_portal_configuration(created: int) -> dict:
    """The account's default portal configuration: switching among the paid prices only (never to Free), a cheaper
    price or a shorter interval at the end of the period, a switch made now invoiced (and charged) at once, as
    `flask stripe portal-config` sets it. With Stripe's own default (`create_prorations`) an upgrade's difference
    waited for the next invoice, and a customer who then cancelled at the period end never paid it."""
    products = [
        objects.portal_product(
            product_id, [price_id for price_id, owner, amount, _ in PRICES if owner == product_id and amount > 0]
        )
        for product_id, _, _, _ in PRODUCTS
    ]
    features = objects.portal_features([p for p in products if p["prices"]], reasons=True)
    features["subscription_update"]["proration_behavior"] = "always_invoice"
    features["subscription_update"]["schedule_at_period_end"] = {
        "conditions": [{"type": "decreasing_item_amount"}, {"type": "shortening_interval"}]
    }
    return objects.portal_configuration(objects.DEFAULT_PORTAL_CONFIGURATION, created, features, is_default=True)


def seed_objects(created: int) -> list[tuple[str, dict]]:
    """The catalog as (collection, object) pairs in creation order, products first.

    The store puts them; building them here without the store keeps the
    catalog free of any dependency on the store that seeds it.
    """
    products = {
        pid: objects.product(pid, name, created, description=description, metadata={"plan": plan})
        for pid, name, plan, description in PRODUCTS
    }
    prices = []
    for price_id, product_id, amount, interval in PRICES:
        prod = products[product_id]
        plan = prod["metadata"]["plan"]
        prices.append(
            objects.price(
                price_id,
                product_id,
                amount,
                created,
                interval=interval,
                lookup_key=price_id[len("price_") :],
                nickname=f"{plan.title()} {CYCLE[interval]}",
                metadata={"plan": plan, "billing_cycle": CYCLE[interval]},
            )
        )
        if prod["default_price"] is None:
            prod["default_price"] = price_id
    return (
        [("products", p) for p in products.values()]
        + [("prices", p) for p in prices]
        + [("portal_configurations", default_portal_configuration(created))]
    )
