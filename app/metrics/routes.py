import hmac
import ipaddress

from flask import Blueprint, Response, abort, current_app, request

from app.extensions import csrf, limiter
from app.services.metrics import render_metrics

bp = Blueprint("metrics", __name__)


def address_allowed(remote_addr: str | None, networks: list[str]) -> bool:
    """True when `remote_addr` (the client as ProxyFix resolved it) is inside one of `networks`."""
    if not remote_addr:
        return False
    try:
        address = ipaddress.ip_address(remote_addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(network) for network in networks)


def token_accepted(header: str | None, token: str | None) -> bool:
    """True for `Authorization: Bearer <METRICS_TOKEN>` when a token is configured (constant-time compare)."""
    if not token or not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


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
