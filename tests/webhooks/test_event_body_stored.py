"""The event's row is written from the body as it came: the database parses the verified JSON text itself, and the
parsed event is not encoded back to JSON to be stored (what it holds reads back the same)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from app.extensions import db
from app.models import StripeEvent
from tests.factories import UserFactory
from tests.webhooks.signing import sign
from tests.webhooks.test_endpoint import event, secret


def test_the_event_row_binds_the_body_as_it_came(seeded, client):
    with seeded.app_context():
        UserFactory(email="old@example.com", stripe_customer_id="cus_test")
        engine = db.engine
    sent = event(obj={"id": "cus_test", "object": "customer", "email": "new@example.com", "name": "Zoë ☕"})
    body = json.dumps(sent, separators=(",", ":"), ensure_ascii=False).encode()  # not how Python would encode it
    bound = []

    def statement(conn, cursor, text, params, context, executemany):
        if text.startswith("INSERT INTO stripe_events"):
            bound.append(params["payload"])

    sa.event.listen(engine, "before_cursor_execute", statement)
    try:
        response = client.post(
            "/api/v1/billing/webhooks/stripe",
            data=body,
            content_type="application/json",
            headers={"Stripe-Signature": sign(body, secret(seeded))},
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", statement)
    assert response.status_code == 200
    assert bound == [body.decode()]
    with seeded.app_context():
        assert db.session.get(StripeEvent, sent["id"]).payload == sent
