"""Entitlements: what a user's effective plan lets them do, cached, and the decorators that gate views on it.

`get_entitlements(user_id)` answers from (1) a memo on `flask.g`, so a request reads them at most once,
(2) the cache under exactly `entitlements:<user-id>` as plain JSON (so `redis-cli GET entitlements:42` and
`redis-cli DEL entitlements:42` work as the deployment guide says), (3) the database, which then fills the cache.
Every billing commit sends `subscription_changed`, whose receiver `forget_changed_entitlements` calls
`invalidate_entitlements_cache(user_id)`, so an upgrade shows on the very next request.

A fill must not undo an invalidation: a request that read the database just before a webhook's commit would
otherwise store the old plan just after the webhook dropped the entry, and a new Pro customer would be refused Pro
features (or a canceled one keep them) for ENTITLEMENTS_CACHE_TTL. So every invalidation first writes a fresh random
token to `entitlements_generation:<user-id>`, then drops the entry; a read fetches the entry and the token together
(one MGET, the one round trip of a hit), and a miss stores what it read from the database only if the token is
still the one it read before (a compare-and-set in one Lua script). A reader that found no token puts one there
before reading the database (one more round trip, seldom: a token outlives the entries), so that a token's expiry,
eviction or a flush can never make a stale fill look current: the script refuses a missing token, and a random
token, unlike a counter that restarts from nothing, never comes back.

On a gated view the entry and the token are read without a round trip of their own when they can be: the view's
per-user rate limit (every API route has one) counts its hit in one Lua script on Redis, and when that Redis is the
cache's (the same server and db), the script reads the two keys too (`read_with_hit`, app/extensions.py). The gate
takes them from the request (for that user only, once, never across requests) exactly as it would take its MGET's
answer: an entry is used, a miss goes to the database and fills by the same compare-and-set. An invalidation coming
between that script and the gate is one coming just after the gate's own MGET: either way the request answers from
what it read, and the fill finds a new token and stores nothing. Anywhere else (no such limit, another Redis, the
limiter or the cache down, an address rather than a user) the gate makes its MGET.

A cache outage is not an outage of the app: reads fall back to the database, the outage is logged once (and its
end once), and the cache is left alone for a few seconds so a hung Redis cannot add a timeout to every request.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import current_app, g, has_app_context, request
from flask_jwt_extended import get_jwt, get_jwt_identity, verify_jwt_in_request
from flask_login import current_user
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.extensions import cache, cache_redis, db, forget_read_with_hit, limiter, take_read_with_hit
from app.models import SubscriptionPlan
from app.services import DomainError
from app.services.catalog import PLAN_CATALOG, PlanView
from app.services.queries import effective_plan
from app.services.signals import CacheWrites, SyncResult
from app.urls import is_api_request

CACHE_KEY = "entitlements:{user_id}"
#: The user's cache generation: a random token each invalidation replaces (before dropping the entry), which a fill
#: must still find to store what it read from the database.
GENERATION_KEY = "entitlements_generation:{user_id}"
#: A generation lives at least this long (and at least ENTITLEMENTS_CACHE_TTL), renewed by each fill, so that a miss
#: seldom finds none and pays the round trip that puts one there. Its length is a matter of speed, never of
#: correctness: a fill finding no token stores nothing.
GENERATION_MIN_SECONDS = 24 * 3600
#: After a cache failure, reads and writes skip the cache this long (invalidation always tries).
CACHE_RETRY_SECONDS = 5.0
_G_MEMO = "_entitlements"
_EXTENSION_FILL = "entitlements_fill"
_EXTENSION_SAME_REDIS = "entitlements_limiter_redis"
#: The attribute that marks a view gated on entitlements (functools.wraps carries it to the decorators above).
_GATED_VIEW = "reads_entitlements"

#: The fill's compare-and-set. KEYS: the entry, the generation; ARGV: the generation read before the database, the
#: entry's JSON, its TTL, the generation's TTL. Stores only while no invalidation has come since that read (the same
#: token, still there), in one step no other command comes between.
FILL_SCRIPT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

#: Without Redis (SimpleCache, a fresh clone: a cache per process), the compare-and-set and the invalidation's two
#: writes take this lock instead, which makes them as atomic as the script: no other process shares that cache.
_LOCAL_CACHE_LOCK = threading.Lock()

#: How a feature is named to a person (on the upgrade page, in API messages, on the account page).
FEATURE_LABELS = {
    "strategies_max": "Strategies",
    "backtests_per_month": "Backtests per month",
    "history_years": "Historical data",
    "indicators": "Indicators",
    "paper_trading": "Paper trading",
    "strategy_templates": "Strategy templates",
    "community_support": "Community support",
    "email_alerts": "Email alerts",
    "email_support": "Email support",
    "realtime_alerts": "Real-time alerts",
    "api_access": "API access",
    "priority_support": "Priority support",
}
#: The unit a counted limit is measured in: "3 strategies", "20 backtests this month", "1 year of history".
LIMIT_UNITS = {
    "strategies_max": ("strategy", "strategies"),
    "backtests_per_month": ("backtest this month", "backtests this month"),
    "history_years": ("year of historical data", "years of historical data"),
    "indicators": ("indicator", "indicators"),
}
#: How a plan's allowance is said in an offer: "Upgrade to Starter for 25 strategies".
OFFER_UNITS = {
    "strategies_max": "strategies",
    "backtests_per_month": "backtests a month",
    "history_years": "years of historical data",
    "indicators": "indicators",
}
PLAN_DISPLAY_NAMES = {spec.name: spec.display_name for spec in PLAN_CATALOG}


def feature_label(key: str) -> str:
    return FEATURE_LABELS.get(key, key.replace("_", " ").capitalize())


def label_in_sentence(label: str) -> str:
    """A feature label inside a sentence: "Email alerts" -> "email alerts"; an acronym keeps its capitals
    ("API access")."""
    if len(label) > 1 and label[0].isupper() and label[1].islower():
        return label[0].lower() + label[1:]
    return label


def plan_display_name(name: str | None) -> str:
    return PLAN_DISPLAY_NAMES.get(name or "", (name or "no").capitalize())


def count_phrase(key: str, n: int) -> str:
    """`count_phrase("strategies_max", 3)` → "3 strategies"."""
    one, many = LIMIT_UNITS.get(key, (key, key))
    return f"{n} {one if n == 1 else many}"


class Entitlements(dict):
    """`{feature key: True | limit | None (unlimited), "plan": plan name}`; a key that is absent is not included."""

    @property
    def plan(self) -> str | None:
        return self.get("plan")

    def allows(self, key: str) -> bool:
        """Whether the plan includes the feature at all (a limit of 0 does not count as included)."""
        return key in self and key != "plan" and self[key] is not False and self[key] != 0

    def limit(self, key: str) -> int | None:
        """The allowance of a counted feature: an int, None for unlimited, 0 when the plan does not include it."""
        if key not in self or key == "plan":
            return 0
        value = self[key]
        return None if value is None else int(value)

    def within(self, key: str, amount: int) -> bool:
        """Whether `amount` (usage after the action) stays within the allowance."""
        limit = self.limit(key)
        return limit is None or amount <= limit


class UpgradeRequired(DomainError):
    """The user's plan does not include a feature, or the action would go past a limit: 403 with an upgrade offer.

    `required_plan` is the cheapest plan that would allow it (None when no plan does).
    """

    code = "upgrade_required"
    status = 403

    def __init__(
        self,
        feature: str,
        current_plan: str | None,
        required_plan: SubscriptionPlan | None,
        limit: int | None = None,
        usage: int | None = None,
        message: str | None = None,
    ):
        self.feature = feature
        self.feature_label = feature_label(feature)
        self.current_plan = current_plan
        self.required_plan = required_plan.name if required_plan is not None else None
        self.required_plan_display = required_plan.display_name if required_plan is not None else None
        #: The required plan's allowance of a counted feature (None: unlimited).
        self.required_limit = (
            next((f.limit_value for f in required_plan.features if f.key == feature), None)
            if required_plan is not None
            else None
        )
        self.limit = limit
        self.usage = usage
        super().__init__(message or self._default_message())

    @property
    def is_limit(self) -> bool:
        """A counted allowance ran out (rather than a feature the plan lacks)."""
        return self.limit is not None or self.usage is not None

    @property
    def headline(self) -> str:
        """The upgrade page's title."""
        if self.is_limit:
            return f"You have reached the {plan_display_name(self.current_plan)} plan's limit"
        # The plan is the subject, so the sentence is right whether the label is singular or plural.
        feature = label_in_sentence(self.feature_label)
        if self.required_plan_display:
            return f"The {self.required_plan_display} plan includes {feature}"
        return f"No plan includes {feature}"

    def _default_message(self) -> str:
        current = plan_display_name(self.current_plan)
        if not self.is_limit:
            text = f"The {current} plan does not include {label_in_sentence(self.feature_label)}."
            if self.required_plan_display:
                return f"{text} Upgrade to {self.required_plan_display} to use it."
            return text
        text = f"The {current} plan includes {count_phrase(self.feature, self.limit or 0)}."
        if self.required_plan_display:
            unit = OFFER_UNITS.get(self.feature, self.feature)
            amount = "unlimited" if self.required_limit is None else str(self.required_limit)
            return f"{text} Upgrade to {self.required_plan_display} for {amount} {unit}."
        return f"{text} No plan includes more."

    def to_json(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "feature": self.feature,
            "required_plan": self.required_plan,
            "message": self.message,
        }


# --- the cache ---------------------------------------------------------------------------------------------


@dataclass
class _CacheHealth:
    """Per app (so per process): whether the outage was logged, and until when to leave the cache alone."""

    outage_logged: bool = False
    skip_until: float = 0.0


def _health() -> _CacheHealth:
    return current_app.extensions.setdefault("entitlements_cache", _CacheHealth())


def _cache_failed(action: str) -> None:
    health = _health()
    health.skip_until = time.monotonic() + CACHE_RETRY_SECONDS
    if not health.outage_logged:
        health.outage_logged = True
        current_app.logger.warning(
            "entitlements_cache_unavailable action=%s: reading from the database", action, exc_info=True
        )


def _cache_worked() -> None:
    health = _health()
    if health.outage_logged:
        health.outage_logged = False
        current_app.logger.info("entitlements_cache_recovered")


def _cache_usable() -> bool:
    return time.monotonic() >= _health().skip_until


#: A generation as read from the cache: bytes from Redis (passed back to the script as they are), str from SimpleCache.
Generation = bytes | str


def _new_generation() -> str:
    return secrets.token_hex(12)


def _generation_seconds() -> int:
    return max(int(current_app.config.get("ENTITLEMENTS_CACHE_TTL", 3600)), GENERATION_MIN_SECONDS)


def _read_cached(user_id: int) -> tuple[Entitlements | None, Generation | None]:
    """The cached entitlements (None on a miss) and the generation a fill must find (None: do not fill, the cache
    is unusable), as this request's rate-limit hit read them for this user, else by one MGET. On a miss with no
    generation, one is put there first, so that an invalidation from now on replaces a token this reader holds."""
    if not _cache_usable():
        return None, None
    key, generation_key = CACHE_KEY.format(user_id=user_id), GENERATION_KEY.format(user_id=user_id)
    read_with_hit = take_read_with_hit(key, generation_key)
    if read_with_hit is not None:
        # Read by this request's rate-limit hit, both in one step as the MGET reads them. An invalidation since then
        # is one that came just after the MGET: the answer is what was read (the request's own invalidations drop
        # it), and a fill holding the old generation stores nothing.
        raw, generation = read_with_hit
    else:
        try:
            client = cache_redis("read")
            raw, generation = (
                client.mget(key, generation_key) if client is not None else cache.get_many(key, generation_key)
            )
        except (RedisError, OSError):
            _cache_failed("read")
            return None, None
    _cache_worked()
    entitlements = _parse_cached(key, raw)
    if entitlements is None and generation is None:
        generation = _reserve_generation(generation_key)
    return entitlements, generation


def _parse_cached(key: str, raw: Any) -> Entitlements | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:  # not ours or damaged: a miss, and the write that follows repairs it
        current_app.logger.warning("entitlements_cache_unreadable key=%s", key)
        return None
    return Entitlements(data) if isinstance(data, dict) else None


def _reserve_generation(generation_key: str) -> Generation | None:
    """Put a generation where there is none (keeping one a concurrent reader or invalidation put there first) and
    return the one there; None when the cache could not be reached."""
    seconds = _generation_seconds()
    try:
        client = cache_redis("write")
        if client is None:
            with _LOCAL_CACHE_LOCK:
                cache.add(generation_key, _new_generation(), timeout=seconds)
                return cache.get(generation_key)
        pipe = client.pipeline(transaction=False)
        pipe.set(generation_key, _new_generation(), nx=True, ex=seconds)
        pipe.get(generation_key)
        return pipe.execute()[1]
    except (RedisError, OSError):
        _cache_failed("write")
        return None


def _fill_script(client: Any) -> Any:
    """The fill's script registered with the cache's client (once per app; redis-py loads it on the server when the
    server does not know it, after a restart)."""
    script = current_app.extensions.get(_EXTENSION_FILL)
    if script is None or script.registered_client is not client:
        script = current_app.extensions[_EXTENSION_FILL] = client.register_script(FILL_SCRIPT)
    return script


def _fill_cached(user_id: int, entitlements: Entitlements, generation: Generation) -> None:
    """Store what the database said, unless an invalidation came after `generation` was read: then what was read
    may predate the commit that invalidated, and the next read goes to the database instead."""
    if not _cache_usable():
        return
    key, generation_key = CACHE_KEY.format(user_id=user_id), GENERATION_KEY.format(user_id=user_id)
    text = json.dumps(entitlements, sort_keys=True, separators=(",", ":"))
    ttl = current_app.config.get("ENTITLEMENTS_CACHE_TTL", 3600)
    try:
        client = cache_redis("write")
        if client is not None:
            _fill_script(client)(keys=[key, generation_key], args=[generation, text, ttl, _generation_seconds()])
            return
        with _LOCAL_CACHE_LOCK:
            if cache.get(generation_key) == generation:
                cache.set(key, text, timeout=ttl)
                cache.set(generation_key, generation, timeout=_generation_seconds())  # renewed, as the script does
    except (RedisError, OSError):
        _cache_failed("write")


@limiter.read_with_hit
def read_with_rate_limit_hit(identifiers: tuple[str, ...], limiter_client: Redis) -> tuple[str, ...]:
    """The keys a gated view's rate-limit hit reads for the gate: the user's entry and generation, when the limit
    counts a user (`user:<id>` from `rate_limit_identity`, which verified who that is) and its Redis is the cache's.
    Nothing when the view is not gated (it would not use them) or the cache is left alone after a failure."""
    user_id = _limited_user_id(identifiers)
    if user_id is None or not _cache_usable():
        return ()
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if not getattr(view, _GATED_VIEW, False) or not _is_cache_redis(limiter_client):
        return ()
    return CACHE_KEY.format(user_id=user_id), GENERATION_KEY.format(user_id=user_id)


def _limited_user_id(identifiers: tuple[str, ...]) -> int | None:
    """The user a per-user limit counts, from its key (`user:42`), as the gate reads an identity; None for an
    address or anything else."""
    for identifier in identifiers:
        if identifier.startswith("user:"):
            identity = identifier.removeprefix("user:")
            return int(identity) if identity.isascii() and identity.isdigit() else None
    return None


def _is_cache_redis(client: Redis) -> bool:
    """Whether `client` talks to the server and db the cache reads from (decided once per pair of clients and app).
    Only then does what it read stand for the cache's MGET."""
    cache_client = cache_redis("read")
    if cache_client is None:
        return False
    known = current_app.extensions.get(_EXTENSION_SAME_REDIS)
    if known is None or known[0] is not client or known[1] is not cache_client:
        same = _server_and_db(client) is not None and _server_and_db(client) == _server_and_db(cache_client)
        known = current_app.extensions[_EXTENSION_SAME_REDIS] = (client, cache_client, same)
    return known[2]


def _server_and_db(client: Redis) -> tuple | None:
    """Where a client's connections go: their class, host and port or socket path, db; None when the pool does not
    say (a Sentinel pool asks the sentinels), which never counts as the same."""
    pool = client.connection_pool
    settings = pool.connection_kwargs
    if not (settings.get("host") or settings.get("path")):
        return None
    return (
        type(pool),
        pool.connection_class,
        settings.get("host"),
        int(settings.get("port") or 6379),
        settings.get("path"),
        int(settings.get("db") or 0),
    )


# --- the service -------------------------------------------------------------------------------------------


def load_entitlements(user_id: int) -> Entitlements:
    """The entitlements straight from the database: the effective plan's features (no cache involved)."""
    return plan_entitlements(effective_plan(user_id))


def plan_entitlements(plan: SubscriptionPlan | PlanView | None) -> Entitlements:
    """What a plan includes, from its row or its catalogue entry; a page that read the effective plan already
    needs no other read. None (the catalogue is not seeded) includes nothing."""
    if plan is None:
        return Entitlements(plan=None)
    entitlements = Entitlements(
        {feature.key: True if feature.kind == "flag" else feature.limit_value for feature in plan.features}
    )
    entitlements["plan"] = plan.name
    return entitlements


def get_entitlements(user_id: int) -> Entitlements:
    """The user's entitlements: from this request's memo, else the cache, else the database (filling the cache)."""
    memo: dict[int, Entitlements] = g.setdefault(_G_MEMO, {})
    if user_id in memo:
        return memo[user_id]
    entitlements, generation = _read_cached(user_id)
    if entitlements is None:
        entitlements = load_entitlements(user_id)
        if entitlements.plan is not None and generation is not None:
            _fill_cached(user_id, entitlements, generation)
    memo[user_id] = entitlements
    return entitlements


def invalidate_entitlements_cache(user_id: int) -> bool:
    """Forget the user's cached entitlements (and this request's memo); the next read goes to the database.

    Call it after every change that can alter them, after the commit. Never raises: returns False (and logs)
    when the cache could not be reached, in which case the entry expires after ENTITLEMENTS_CACHE_TTL.
    """
    key, generation_key = CACHE_KEY.format(user_id=user_id), GENERATION_KEY.format(user_id=user_id)
    if has_app_context():
        g.get(_G_MEMO, {}).pop(user_id, None)
        forget_read_with_hit(key, generation_key)  # read before this invalidation: stale from now on
    try:
        client = cache_redis("write")
        if client is not None:
            # In this order (a pipeline runs its commands in turn): a fill that comes between the two finds the new
            # generation and stores nothing, and one that came before is dropped by the DEL.
            pipe = client.pipeline(transaction=False)
            pipe.set(generation_key, _new_generation(), ex=_generation_seconds())
            pipe.delete(key)
            pipe.execute()
        else:
            with _LOCAL_CACHE_LOCK:
                cache.set(generation_key, _new_generation(), timeout=_generation_seconds())
                cache.delete(key)
    except (RedisError, OSError):
        current_app.logger.warning("entitlements_cache_invalidate_failed user_id=%s", user_id, exc_info=True)
        _cache_failed("invalidate")
        return False
    return True


def forget_changed_entitlements(sender, change: SyncResult, writes: CacheWrites | None = None, **_) -> None:
    """`subscription_changed` receiver: the user's next request reads the committed plan. The generation is replaced
    and the cache entry dropped, in that order, with the announcement's other cache writes (`writes`, one round
    trip), or at once without them (or without Redis)."""
    user_id = change.user_id
    if user_id is None:  # announce() sends only for a user; a None here would name nobody
        return
    if writes is None or cache_redis() is None:
        invalidate_entitlements_cache(user_id)
        return
    g.get(_G_MEMO, {}).pop(user_id, None)
    forget_read_with_hit(CACHE_KEY.format(user_id=user_id), GENERATION_KEY.format(user_id=user_id))

    def failed(error: Exception) -> None:
        current_app.logger.warning("entitlements_cache_invalidate_failed user_id=%s", user_id, exc_info=error)
        _cache_failed("invalidate")

    # The pipeline sends the two in this order, as `invalidate_entitlements_cache` does (a failed send fails both:
    # it is logged once, by the DEL's on_failure).
    writes.set_raw(GENERATION_KEY.format(user_id=user_id), _new_generation(), _generation_seconds())
    writes.delete_raw(CACHE_KEY.format(user_id=user_id), on_failure=failed)


def cheapest_plan_with(feature_key: str, at_least: int | None = None) -> SubscriptionPlan | None:
    """The cheapest active plan that includes the feature (with an allowance of at least `at_least`), or None."""
    plans = db.session.scalars(
        select(SubscriptionPlan)
        .where(SubscriptionPlan.is_active.is_(True))
        .options(selectinload(SubscriptionPlan.features))
        .order_by(SubscriptionPlan.price_monthly, SubscriptionPlan.sort_order)
    )
    for plan in plans:
        for feature in plan.features:
            if feature.key != feature_key:
                continue
            if (
                feature.kind == "flag"
                or at_least is None
                or feature.limit_value is None
                or feature.limit_value >= at_least
            ):
                return plan
    return None


def require_feature(user_id: int, feature_key: str) -> Entitlements:
    """Raise UpgradeRequired unless the user's plan includes the feature."""
    entitlements = get_entitlements(user_id)
    if not entitlements.allows(feature_key):
        raise UpgradeRequired(feature_key, entitlements.plan, cheapest_plan_with(feature_key))
    return entitlements


def require_within_limit(user_id: int, feature_key: str, usage: int, adding: int = 1) -> Entitlements:
    """Raise UpgradeRequired unless `usage + adding` stays within the user's allowance of `feature_key`."""
    entitlements = get_entitlements(user_id)
    wanted = usage + adding
    if not entitlements.within(feature_key, wanted):
        raise UpgradeRequired(
            feature_key,
            entitlements.plan,
            cheapest_plan_with(feature_key, at_least=wanted),
            limit=entitlements.limit(feature_key),
            usage=usage,
        )
    return entitlements


# --- decorators --------------------------------------------------------------------------------------------


def current_user_id() -> int | None:
    """Who the request is for: the bearer token's user under API_PREFIX, the logged-in user elsewhere.

    Under the API the session cookie is never looked at, so a browser session cannot lend its plan to a token.
    """
    if is_api_request():
        if not access_token_verified():
            verify_jwt_in_request()  # no or bad token → the API's JSON 401 (app/api/auth.py's loaders)
        identity = get_jwt_identity()
        return int(identity) if str(identity).isdigit() else None
    return current_user.id if current_user.is_authenticated else None


def access_token_verified() -> bool:
    """Whether this request's access token was already verified (by `@jwt_required()` above the gate, or by the
    API rate limit's key): signature, expiry, revocation (one query) and user were checked then, and checking
    them again would give the same answer at the cost of a second decode and query. A refresh token, or a
    request verified as carrying no token at all, does not count."""
    try:
        claims = get_jwt()
    except RuntimeError:  # nothing verified yet in this request
        return False
    return bool(claims) and claims.get("type") == "access"


def _gate(check: Callable[[int], Any]) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def gated(*args, **kwargs):
            user_id = current_user_id()
            if user_id is None:
                return current_app.login_manager.unauthorized()
            check(user_id)
            return view(*args, **kwargs)

        setattr(gated, _GATED_VIEW, True)  # the rate limit's hit reads the entitlements for it
        return gated

    return decorator


def requires_feature(feature_key: str) -> Callable:
    """Gate a view or API route on a feature flag: `@requires_feature("api_access")` → 403 upgrade_required."""
    return _gate(lambda user_id: require_feature(user_id, feature_key))


def within_limit(feature_key: str, usage: Callable[[int], int]) -> Callable:
    """Gate an action that adds one more of a counted thing: `@within_limit("strategies_max", usage=count_fn)`.

    `usage(user_id)` returns how many the user has now; the action is allowed while `usage + 1 <= limit`.
    """
    return _gate(lambda user_id: require_within_limit(user_id, feature_key, usage(user_id)))
