import secrets

from flask import Blueprint, jsonify
from sqlalchemy import text

from app.extensions import cache, db, limiter
from app.logging import get_logger
from app.services import metrics

#: One line per failed probe, naming the error: probes come every few seconds, and a traceback each time (3 KB)
#: buried the log; the cause is the same error each time.
log = get_logger(__name__)

bp = Blueprint("health", __name__)


def check_database() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except Exception as error:  # any failure means "not ok"; the reason is logged, not shown
        log.warning("healthz_database_failed", error=f"{type(error).__name__}: {error}")
        metrics.DATABASE_ERRORS.inc()  # probed every few seconds: the alert fires even with no traffic
        db.session.rollback()
        return False


def check_cache() -> bool:
    """A real round trip through the cache (Redis in production), not just a ping."""
    token = secrets.token_hex(8)
    try:
        cache.set("healthz:probe", token, timeout=10)
        return cache.get("healthz:probe") == token
    except Exception as error:
        log.warning("healthz_cache_failed", error=f"{type(error).__name__}: {error}")
        return False


@bp.get("/healthz")
@limiter.exempt
def healthz():
    """What a load balancer asks: may this host take traffic? The database is needed for every page, the API and
    webhooks, so without it the answer is 503 `unavailable`. Without the cache (Redis) the host still serves
    everything (entitlements from the database, rate limits per process; README → Production), so the answer is
    200 `degraded`, the cache `unavailable`: a Redis blip must not take every host out of the balancer at once."""
    database, cache_ok = check_database(), check_cache()
    status = "ok" if database and cache_ok else "degraded" if database else "unavailable"
    body = {
        "status": status,
        "database": "ok" if database else "unavailable",
        "cache": "ok" if cache_ok else "unavailable",
    }
    return jsonify(body), 200 if database else 503
