"""Plans, prices and features: the seed catalog and the lookups the app makes on it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from flask import current_app, session
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import PlanFeature, SubscriptionPlan
from app.models.plan import PlanPricing
from app.services import DomainError

UNLIMITED = None

#: (key, kind) of every feature the app gates on, in display order.
FEATURE_KEYS = (
    ("strategies_max", "limit"),
    ("backtests_per_month", "limit"),
    ("history_years", "limit"),
    ("indicators", "limit"),
    ("paper_trading", "flag"),
    ("strategy_templates", "flag"),
    ("community_support", "flag"),
    ("email_alerts", "flag"),
    ("email_support", "flag"),
    ("realtime_alerts", "flag"),
    ("api_access", "flag"),
    ("priority_support", "flag"),
)
FEATURE_KIND = dict(FEATURE_KEYS)
FEATURE_ORDER = {key: i for i, (key, _) in enumerate(FEATURE_KEYS)}


@dataclass(frozen=True)
class PlanSpec:
    name: str
    display_name: str
    description: str
    price_monthly: Decimal
    price_yearly: Decimal | None
    monthly_env: str
    yearly_env: str | None
    sort_order: int
    #: key -> (display name, limit value for "limit" features; ignored for flags)
    features: dict[str, tuple[str, int | None]] = field(default_factory=dict)


PLAN_CATALOG: tuple[PlanSpec, ...] = (
    PlanSpec(
        name="free",
        display_name="Free",
        description="Learn the ropes and build your first strategies.",
        price_monthly=Decimal("0.00"),
        price_yearly=None,
        monthly_env="STRIPE_PRICE_FREE_MONTHLY",
        yearly_env=None,
        sort_order=0,
        features={
            "strategies_max": ("Up to 3 strategies", 3),
            "backtests_per_month": ("20 backtests per month", 20),
            "history_years": ("1 year of historical data", 1),
            "indicators": ("Basic indicators (10)", 10),
            "paper_trading": ("Paper trading", None),
            "strategy_templates": ("Strategy templates", None),
            "community_support": ("Community support", None),
        },
    ),
    PlanSpec(
        name="starter",
        display_name="Starter",
        description="For active traders testing ideas every week.",
        price_monthly=Decimal("19.99"),
        price_yearly=Decimal("199.99"),
        monthly_env="STRIPE_PRICE_STARTER_MONTHLY",
        yearly_env="STRIPE_PRICE_STARTER_YEARLY",
        sort_order=1,
        features={
            "strategies_max": ("Up to 25 strategies", 25),
            "backtests_per_month": ("500 backtests per month", 500),
            "history_years": ("5 years of historical data", 5),
            "indicators": ("All indicators (50+)", UNLIMITED),
            "paper_trading": ("Paper trading", None),
            "email_alerts": ("Email alerts", None),
            "email_support": ("Email support", None),
        },
    ),
    PlanSpec(
        name="pro",
        display_name="Pro",
        description="Unlimited research, real-time alerts and the API.",
        price_monthly=Decimal("49.99"),
        price_yearly=Decimal("479.99"),
        monthly_env="STRIPE_PRICE_PRO_MONTHLY",
        yearly_env="STRIPE_PRICE_PRO_YEARLY",
        sort_order=2,
        features={
            "strategies_max": ("Unlimited strategies", UNLIMITED),
            "backtests_per_month": ("Unlimited backtests", UNLIMITED),
            "history_years": ("20 years of historical data", 20),
            "indicators": ("All indicators (50+)", UNLIMITED),
            "paper_trading": ("Paper trading", None),
            "email_alerts": ("Email alerts", None),
            "realtime_alerts": ("Real-time alerts", None),
            "api_access": ("API access", None),
            "priority_support": ("Priority support", None),
        },
    ),
)


class SeedError(DomainError):
    code = "seed_error"


@dataclass
class SeededPlan:
    plan: SubscriptionPlan
    created: bool
    feature_count: int


def price_ids_from_config(config: Mapping[str, object]) -> dict[str, str | None]:
    """The STRIPE_PRICE_* values, by variable name."""
    names = [s.monthly_env for s in PLAN_CATALOG] + [s.yearly_env for s in PLAN_CATALOG if s.yearly_env]
    return {name: (str(config[name]) if config.get(name) else None) for name in names}


def seed_plans(price_ids: Mapping[str, str | None], require_price_ids: bool) -> list[SeededPlan]:
    """Create or update the three plans and their features; one transaction, idempotent.

    With `require_price_ids` (production), a missing price id raises before anything is written.
    """
    if require_price_ids:
        missing = [name for name, value in price_ids.items() if not value]
        if missing:
            raise SeedError(f"{missing[0]} is not set: cannot seed plans without their Stripe price ids")

    existing = {
        p.name: p for p in db.session.scalars(select(SubscriptionPlan).options(selectinload(SubscriptionPlan.features)))
    }
    results = []
    for spec in PLAN_CATALOG:
        found = existing.get(spec.name)
        created = found is None
        plan = found if found is not None else SubscriptionPlan(name=spec.name)
        if created:
            db.session.add(plan)
        plan.display_name = spec.display_name
        plan.description = spec.description
        plan.price_monthly = spec.price_monthly
        plan.price_yearly = spec.price_yearly
        plan.stripe_price_id_monthly = price_ids.get(spec.monthly_env)
        plan.stripe_price_id_yearly = price_ids.get(spec.yearly_env) if spec.yearly_env else None
        plan.is_active = True
        plan.sort_order = spec.sort_order

        by_key = {f.key: f for f in plan.features}
        for key, retired in list(by_key.items()):
            if key not in spec.features:
                plan.features.remove(retired)
        for key, (display_name, limit) in spec.features.items():
            feature = by_key.get(key) or PlanFeature(key=key)
            if feature not in plan.features:
                plan.features.append(feature)
            feature.display_name = display_name
            feature.kind = FEATURE_KIND[key]
            feature.limit_value = limit if feature.kind == "limit" else None
            feature.sort_order = FEATURE_ORDER[key]
        results.append(SeededPlan(plan=plan, created=created, feature_count=len(spec.features)))
    db.session.commit()
    forget_catalog()
    return results


def seed_plans_from_config() -> list[SeededPlan]:
    """`seed_plans` with the price ids of the running app's configuration."""
    config = current_app.config
    return seed_plans(price_ids_from_config(config), require_price_ids=config["ENVIRONMENT"] == "production")


@dataclass(frozen=True)
class FeatureView:
    key: str
    display_name: str
    kind: str
    limit_value: int | None


@dataclass(frozen=True)
class PlanView(PlanPricing):
    """A plan as the pricing page and price lookups need it: plain values, safe to share across requests."""

    id: int
    name: str
    display_name: str
    description: str
    price_monthly: Decimal
    price_yearly: Decimal | None
    stripe_price_id_monthly: str | None
    stripe_price_id_yearly: str | None
    sort_order: int
    is_active: bool
    features: tuple[FeatureView, ...]


def catalog() -> tuple[PlanView, ...]:
    """Every plan (active or retired), cheapest first, read at most every CATALOG_CACHE_SECONDS per process.

    The catalog changes only when an operator seeds it; every pricing page and every webhook reads it. Seeding
    in this process drops the copy at once; other processes pick the change up within the TTL (default 60 s).
    """
    cached = current_app.extensions.get("catalog_snapshot")
    now = time.monotonic()
    if cached is not None and cached[0] > now:
        return cached[1]
    plans = tuple(
        PlanView(
            p.id,
            p.name,
            p.display_name,
            p.description,
            p.price_monthly,
            p.price_yearly,
            p.stripe_price_id_monthly,
            p.stripe_price_id_yearly,
            p.sort_order,
            p.is_active,
            tuple(FeatureView(f.key, f.display_name, f.kind, f.limit_value) for f in p.features),
        )
        for p in db.session.scalars(
            select(SubscriptionPlan)
            .options(selectinload(SubscriptionPlan.features))
            .order_by(SubscriptionPlan.sort_order)
        )
    )
    current_app.extensions["catalog_snapshot"] = (now + current_app.config.get("CATALOG_CACHE_SECONDS", 60), plans)
    return plans


def forget_catalog() -> None:
    current_app.extensions.pop("catalog_snapshot", None)


def active_plans() -> tuple[PlanView, ...]:
    """The plans shown on the pricing page, cheapest first, with their features."""
    return tuple(plan for plan in catalog() if plan.is_active)


def plan_by_name(name: str) -> SubscriptionPlan | None:
    return db.session.scalar(select(SubscriptionPlan).where(SubscriptionPlan.name == name))


def feature_display_names() -> list[str]:
    """Every distinct feature name the catalog shows, in display order."""
    seen: dict[str, None] = {}
    for spec in PLAN_CATALOG:
        for display_name, _ in spec.features.values():
            seen.setdefault(display_name)
    return list(seen)


def plan_for_price(price_id: str | None) -> tuple[SubscriptionPlan, str] | None:
    """The (plan, billing cycle) a Stripe price id belongs to, or None for a price we do not sell.

    Looked up in the cached catalog; the model comes from the session's identity map when already loaded.
    """
    if not price_id:
        return None
    for view in catalog():
        for cycle in ("monthly", "yearly"):
            plan = db.session.get(SubscriptionPlan, view.id) if view.stripe_price_id_for(cycle) == price_id else None
            if plan is not None:
                return plan, cycle
    return None


def plan_view_for_price(price_id: str | None) -> tuple[PlanView, str] | None:
    """`plan_for_price` as plain values: the cached catalog's plan, nothing loaded into the session (the webhook's
    writer reads only the plan's values). A price seeded by another process since this one read the catalog is
    not in its copy yet: the copy is then read again, so the event is applied, not skipped as an unknown price."""
    if not price_id:
        return None
    for attempt in range(2):
        for view in catalog():
            for cycle in ("monthly", "yearly"):
                if view.stripe_price_id_for(cycle) == price_id:
                    return view, cycle
        if not attempt:
            forget_catalog()
    return None


def plan_view(plan_id: int) -> PlanView:
    """The catalog's plan of id `plan_id` (a row's plan: it exists, as the foreign key holds). A plan seeded by
    another process since this one read the catalog is not in its copy yet: the copy is then read again."""
    for _ in range(2):
        for view in catalog():
            if view.id == plan_id:
                return view
        forget_catalog()
    raise LookupError(f"no plan {plan_id} in the catalog")


def plan_view_by_name(name: str) -> PlanView | None:
    """The catalog's plan called `name` (active or retired), or None."""
    return next((view for view in catalog() if view.name == name), None)


@dataclass(frozen=True)
class PlanChoice:
    """A paid plan and billing cycle someone chose on the pricing page, as the sign-up and review pages show it."""

    plan: SubscriptionPlan
    cycle: str

    @property
    def price(self) -> Decimal:
        price = self.plan.price_for(self.cycle)
        assert price is not None  # validate_choice accepted only a cycle the plan has a price for
        return price

    @property
    def period(self) -> str:
        """ "month" or "year": what one payment of `price` covers."""
        return "month" if self.cycle == "monthly" else "year"


def chosen_plan(plan_name: str | None, cycle: str | None) -> PlanChoice | None:
    """The choice a link carries (`?plan=pro&cycle=yearly`) when `validate_choice` accepts it, else None.

    For pages that ignore a bad choice rather than complain about it (sign-up: the visitor still gets an account).
    """
    try:
        plan, cycle, _ = validate_choice(plan_name, cycle)
    except DomainError:
        return None
    return PlanChoice(plan, cycle)


#: Where a browser keeps the plan its member chose before confirming their email (`remember_plan_choice`).
PLAN_CHOICE_KEY = "plan_after_confirming"


def remember_plan_choice(plan_name: str, cycle: str) -> None:
    """Keep in this browser's session the plan a member chose while their email waits for confirmation: the link
    mailed at sign-up names no plan, and following it must lead back to that plan's review all the same."""
    session[PLAN_CHOICE_KEY] = f"{plan_name}:{cycle}"


def remembered_plan_choice() -> PlanChoice | None:
    """The plan `remember_plan_choice` kept, taken out of the session (once); None when none (or no longer sold)."""
    kept = session.pop(PLAN_CHOICE_KEY, None)
    if not isinstance(kept, str) or ":" not in kept:
        return None
    return chosen_plan(*kept.split(":", 1))


def validate_choice(plan_name: str | None, cycle: str | None) -> tuple[SubscriptionPlan, str, str]:
    """A paid plan and cycle someone may buy: (plan, cycle, Stripe price id), or a 400 naming the problem."""
    if cycle not in ("monthly", "yearly"):
        raise DomainError("Choose a monthly or yearly billing cycle.", code="invalid_billing_cycle")
    plan = plan_by_name(plan_name or "")
    if plan is None or not plan.is_active:
        raise DomainError(f"There is no plan called {plan_name!r}.", code="unknown_plan")
    if plan.is_free:
        raise DomainError(
            "The Free plan needs no payment: cancel your paid plan to return to Free.", code="free_plan_not_purchasable"
        )
    price_id = plan.stripe_price_id_for(cycle)
    if price_id is None or plan.price_for(cycle) is None:
        raise DomainError(f"The {plan.display_name} plan has no {cycle} price.", code="invalid_billing_cycle")
    return plan, cycle, price_id


# --- what moving to a lower plan takes away (the confirmation pages of a cancellation and of a downgrade) --------


@dataclass(frozen=True)
class PlanLoss:
    """One line of what moving to a lower plan takes away: the current plan's words and the lower plan's (None: it
    has none of it)."""

    now: str
    then: str | None


def losses_between(plan_name: str, lower_name: str) -> list[PlanLoss]:
    """What `plan_name` has that `lower_name` has less of or lacks, in the catalog's order and words."""
    plans = {view.name: view for view in catalog()}
    if plan_name not in plans:
        return []
    lower_features = {f.key: f for f in plans[lower_name].features} if lower_name in plans else {}
    losses = []
    for feature in plans[plan_name].features:
        lower = lower_features.get(feature.key)
        if lower is None:
            losses.append(PlanLoss(feature.display_name, None))
        elif (
            feature.kind == "limit"
            and lower.limit_value is not None
            and (feature.limit_value is None or feature.limit_value > lower.limit_value)
        ):
            losses.append(PlanLoss(feature.display_name, lower.display_name))
    return losses


def losses_on_free(plan_name: str) -> list[PlanLoss]:
    """What a paid plan has that Free has less of or lacks."""
    return losses_between(plan_name, "free")


def free_limit(key: str) -> int | None:
    """Free's allowance of a counted feature (None: unlimited or not in the catalog)."""
    free = next((view for view in catalog() if view.name == "free"), None)
    return next((f.limit_value for f in free.features if f.key == key), None) if free else None
