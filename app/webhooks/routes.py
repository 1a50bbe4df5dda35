from flask import jsonify, request

from app.services.webhooks import WebhookRejected, handle
from app.webhooks import bp


@bp.post("/stripe")
def receive_stripe_event():
    """Stripe's deliveries: 200 once recorded and applied (or a duplicate), 400 for a bad signature, 500 to retry."""
    payload = request.get_data(cache=False)  # the raw bytes the signature covers; never the parsed JSON
    try:
        outcome = handle(payload, request.headers.get("Stripe-Signature"))
    except WebhookRejected as rejected:
        return jsonify(error=rejected.code, message=rejected.message), rejected.status
    return jsonify(status=outcome.status, event_id=outcome.event_id)
