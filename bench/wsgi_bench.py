"""The app as `make bench` serves it: `gunicorn -c deploy/gunicorn.conf.py bench.wsgi_bench:app`.

The production app from the factory, plus — only when BENCH_BASELINE_ROUTES=1 — the baselines every figure is
divided by, served by the same workers so that both sides of a ratio share the process, the pool and the noise:

- `POST /bench/webhook-floor`: the floor of a webhook: verify the signature from the raw body, insert the raw
  event into `bench_raw_events` (created by bench/run.py like `stripe_events`), commit. Nothing else.
- `GET /bench/api/strategies-ungated`: `GET {API_PREFIX}/strategies` without `@requires_feature("api_access")`:
  the same token check, the same per-user API rate limit (its own blueprint, limited like the API's), the same
  service call, the same response model checked by the same spectree validation, the same JSON.
- `GET /bench/hello`: a bare route in the same app (same middleware, same logging).

None of this is in the `app` package: production never has these routes.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Blueprint, Flask, jsonify, request  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app import create_app  # noqa: E402
from app.extensions import csrf, db, limiter  # noqa: E402
from app.services.stripe_gateway import SignatureInvalid, gateway  # noqa: E402
from app.services.webhooks import TOLERANCE_SECONDS, configured_secrets  # noqa: E402
from bench.baselines import ungated_api_blueprint  # noqa: E402

INSERT_RAW_EVENT = text(
    "INSERT INTO bench_raw_events (id, type, livemode, stripe_created, received_at, status, attempts, payload) "
    "VALUES (:id, :type, :livemode, :stripe_created, :received_at, 'received', 0, CAST(:payload AS JSONB)) "
    "ON CONFLICT (id) DO NOTHING"
)


def baseline_blueprint() -> Blueprint:
    bp = Blueprint("bench", __name__)
    csrf.exempt(bp)
    limiter.exempt(bp)

    @bp.post("/webhook-floor")
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

    @bp.get("/hello")
    def hello():
        """The cheapest page the app can serve."""
        return "hello"

    return bp


def create_bench_app() -> Flask:
    app = create_app()
    if os.environ.get("BENCH_BASELINE_ROUTES") == "1":
        app.register_blueprint(baseline_blueprint(), url_prefix="/bench")
        app.register_blueprint(ungated_api_blueprint(), url_prefix="/bench/api")
    return app


app = create_bench_app()
