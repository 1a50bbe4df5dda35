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

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Blueprint, Flask  # noqa: E402

from app import create_app  # noqa: E402
from app.extensions import csrf, limiter  # noqa: E402
from bench.baselines import receive_raw_event, ungated_api_blueprint  # noqa: E402


def baseline_blueprint() -> Blueprint:
    bp = Blueprint("bench", __name__)
    csrf.exempt(bp)
    limiter.exempt(bp)

    bp.post("/webhook-floor")(receive_raw_event)

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
