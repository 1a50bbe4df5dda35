"""The baselines served beside the app, shared by bench/wsgi_bench.py (gunicorn), bench/request_overhead.py and
bench/webhook_cpu.py (in process): importing it builds no app.

- `receive_raw_event`: the floor of a webhook: verify the signature from the raw body, insert the raw event into
  `bench_raw_events` (created by the bench like `stripe_events`), commit. Nothing else.
- `ungated_api_blueprint`: the API's strategies list without its entitlement gate.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import Blueprint, jsonify, request
from sqlalchemy import text

from app.api import api_limit, api_limit_key
from app.api.common import access_token_required, current_api_user
from app.api.schemas import StrategyList
from app.api.spec import UNAUTHORIZED, UPGRADE_REQUIRED, operation
from app.api.strategies import strategy_list
from app.extensions import csrf, db, limiter
from app.services.stripe_gateway import SignatureInvalid, gateway
from app.services.webhooks import TOLERANCE_SECONDS, configured_secrets

INSERT_RAW_EVENT = text(
    "INSERT INTO bench_raw_events (id, type, livemode, stripe_created, received_at, status, attempts, payload) "
    "VALUES (:id, :type, :livemode, :stripe_created, :received_at, 'received', 0, CAST(:payload AS JSONB)) "
    "ON CONFLICT (id) DO NOTHING"
)


def receive_raw_event():
    """The webhook floor: signature check and one INSERT of the raw event, in one transaction."""
    payload = request.get_data(cache=False)
    signature = request.headers.get("Stripe-Signature") or ""
    for secret in configured_secrets():
        try:
            gateway().verify_webhook(payload, signature, secret, tolerance=TOLERANCE_SECONDS)
            break
        except SignatureInvalid:
            continue
    else:
        return jsonify(error="invalid_signature"), 400
    event = json.loads(payload)
    db.session.execute(
        INSERT_RAW_EVENT,
        {
            "id": event["id"],
            "type": event["type"],
            "livemode": bool(event.get("livemode")),
            "stripe_created": datetime.fromtimestamp(int(event.get("created") or 0), tz=UTC),
            "received_at": datetime.now(UTC),
            "payload": payload.decode("utf-8"),
        },
    )
    db.session.commit()
    return jsonify(status="recorded", event_id=event["id"])


def ungated_api_blueprint() -> Blueprint:
    """The API's strategies list without its entitlement gate, limited like every API route."""
    bp = Blueprint("bench_api", __name__)
    csrf.exempt(bp)
    limiter.limit(api_limit, key_func=api_limit_key)(bp)

    @bp.get("/strategies-ungated")
    @access_token_required
    @operation(
        "benchListStrategiesUngated",
        "bench",
        {200: (StrategyList, "The strategies."), 401: UNAUTHORIZED, 403: UPGRADE_REQUIRED},
    )
    def list_strategies_ungated():
        """`GET {API_PREFIX}/strategies` minus `@requires_feature("api_access")`."""
        return strategy_list(current_api_user().id).respond()

    return bp
