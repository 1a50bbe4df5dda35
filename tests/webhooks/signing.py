"""Signing payloads exactly as Stripe does (`t=…,v1=…`, HMAC-SHA256 over "{t}.{body}")."""

from __future__ import annotations

import hashlib
import hmac
import json
import time


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def post_event(
    client, event: dict, secret: str, timestamp: int | None = None, path: str = "/api/v1/billing/webhooks/stripe"
):
    body = json.dumps(event).encode()
    response = client.post(
        path, data=body, content_type="application/json", headers={"Stripe-Signature": sign(body, secret, timestamp)}
    )
    response.close()  # as a WSGI server does once the body is sent: what waits for after the response runs now
    return response
