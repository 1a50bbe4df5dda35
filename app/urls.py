"""Absolute URLs for links that leave the app (Stripe's redirects, the billing mails), and which part of the app
a request is for."""

from __future__ import annotations

from flask import current_app, has_request_context, request, url_for


def external_url(endpoint: str, **values) -> str:
    """`APP_BASE_URL` + the endpoint's path in production (and outside a request); the request's host otherwise.

    In production the Host header is the client's choice: a URL built on it would let anyone have Stripe send a
    customer to another site after Checkout or the Portal.
    """
    base = (current_app.config.get("APP_BASE_URL") or "").rstrip("/")
    if has_request_context():
        if base and current_app.config["ENVIRONMENT"] == "production":
            return base + url_for(endpoint, **values)
        return url_for(endpoint, _external=True, **values)
    with current_app.test_request_context():  # the CLI (nightly sync): only the path comes from the URL map
        return base + url_for(endpoint, **values)


def is_api_request() -> bool:
    """Whether the request is for the JSON API (every path under API_PREFIX): bearer tokens and JSON errors there,
    sessions and HTML pages elsewhere."""
    prefix = current_app.config["API_PREFIX"]
    return request.path == prefix or request.path.startswith(prefix + "/")
