from flask import Blueprint, Response, abort, current_app, request

from app.extensions import csrf, limiter
from app.services.metrics import address_allowed, render_metrics, token_accepted

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@limiter.exempt
@csrf.exempt
def scrape():
    """The Prometheus exposition: counters, histograms and the revenue gauges computed in SQL now."""
    config = current_app.config
    if not (
        address_allowed(request.remote_addr, config["METRICS_ALLOWED_NETWORKS"])
        or token_accepted(request.headers.get("Authorization"), config.get("METRICS_TOKEN"))
    ):
        abort(403)
    body, content_type = render_metrics()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
