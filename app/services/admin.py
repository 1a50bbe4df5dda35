"""What an admin can do from the dashboard: replay a webhook event, re-sync a user from Stripe. Audited."""

from __future__ import annotations

from app.extensions import db
from app.logging import get_logger
from app.models import User
from app.services import audit
from app.services.sync import sync_customer
from app.services.webhooks import reprocess

log = get_logger(__name__)


def replay_event(event_id: str, admin_id: int) -> tuple[str, str]:
    """Run the handler of a recorded event again; (flash category, message). Never raises for a handler fault:
    the event row keeps the error, as it does for Stripe's own retries."""
    try:
        outcome = reprocess(event_id)
    except LookupError:
        return "warning", f"No recorded event {event_id}."
    except Exception as error:  # the handler failed again: reprocess recorded it; say what it was
        db.session.rollback()
        log.warning(
            "admin_webhook_replay_failed",
            event_id=event_id,
            admin_id=admin_id,
            error=f"{type(error).__name__}: {error}",
        )
        audit.record("admin.event_replayed", admin_id, event=event_id, outcome="failed")
        db.session.commit()
        return "danger", f"Replay of {event_id} failed again: {type(error).__name__}: {error}"
    # reprocess's commit sent subscription_changed (entitlements cache, mail, metrics) for the event's user.
    audit.record("admin.event_replayed", admin_id, event=event_id, outcome=outcome.status)
    db.session.commit()
    log.info(
        "admin_webhook_replayed",
        event_id=event_id,
        event_type=outcome.event_type,
        outcome=outcome.status,
        admin_id=admin_id,
    )
    return "success", f"Replayed {event_id} ({outcome.event_type}): {outcome.status}."


def sync_user(user_id: int, admin_id: int) -> tuple[str, list[str]]:
    """Re-read the user's subscriptions from Stripe; (email, audit actions written). LookupError without a customer."""
    user = db.session.get(User, user_id)
    if user is None or not user.stripe_customer_id:
        raise LookupError(user_id)
    email = user.email
    # Commits, then sends subscription_changed for the user even when nothing drifted (the user is the customer's),
    # so the entitlements cache is dropped: the admin asked for a fresh read.
    result = sync_customer(user.stripe_customer_id)
    audit.record("admin.user_synced", admin_id, user=user_id, actions=result.actions)
    db.session.commit()
    log.info("admin_user_synced", user_id=user_id, admin_id=admin_id, actions=result.actions)
    return email, result.actions
