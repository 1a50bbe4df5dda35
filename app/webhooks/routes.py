from flask import Blueprint, jsonify, request

from app.extensions import csrf, limiter
from app.services.webhooks import WebhookRejected, handle

bp = Blueprint("webhooks", __name__)
csrf.exempt(bp)
limiter.exempt(bp)


@bp.post("/stripe")
def receive_stripe_event():
    """Stripe's deliveries: 200 once recorded and applied (or a duplicate) — with WEBHOOK_APPLY=queue, once recorded
    (`queued`: a worker applies it) —, 400 for a bad signature or body, 422 for an event that cannot be applied as it
    is (kept as failed) or of another API version, 500 for our own faults; Stripe retries non-2xx."""
    payload = request.get_data(cache=False)  # the raw bytes the signature covers; never the parsed JSON
    try:
        outcome = handle(payload, request.headers.get("Stripe-Signature"))
    except WebhookRejected as rejected:
        return jsonify(error=rejected.code, message=rejected.message), rejected.status
    return jsonify(status=outcome.status, event_id=outcome.event_id)
