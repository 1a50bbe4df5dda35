"""The key of a customer's creation is this user's of this install, and Stripe's two idempotency refusals are told
apart: a key used before with other parameters (400) is not "already being processed" (a 409 of a request still
running)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import User
from app.services.checkout import customer_key, ensure_customer
from app.services.stripe_gateway import BillingUnavailable, IdempotencyKeyReused
from tests.factories import UserFactory

IN_PROGRESS = "This request is already being processed — please wait a moment and try again."
REUSED = "Billing could not start this request. Nothing was charged; please try again in a minute."


def customer_of_a_user_whose_id_comes_again(app, first_email: str, second_email: str) -> tuple[str, str]:
    """A user gets a customer; the database starts again (the row gone, its id given to a new user, as in a fresh
    database, or another install on the same Stripe account); the new user's customer."""
    with app.app_context():
        first = UserFactory(email=first_email)
        user_id = first.id
        first_customer = ensure_customer(user_id)
        db.session.execute(sa.delete(User).where(User.id == user_id))
        db.session.commit()
        db.session.expunge_all()
        UserFactory(id=user_id, email=second_email)
        return first_customer, ensure_customer(user_id)


def test_a_new_user_with_an_old_users_id_gets_a_customer_of_its_own(seeded, stripe_emulator):
    first, second = customer_of_a_user_whose_id_comes_again(seeded, "old@example.com", "new@example.com")
    assert first != second
    customer = stripe_emulator.client().v1.customers.retrieve(second)
    assert customer.email == "new@example.com"


def test_with_the_same_email_the_other_users_customer_is_not_handed_back(seeded, stripe_emulator):
    first, second = customer_of_a_user_whose_id_comes_again(seeded, "same@example.com", "same@example.com")
    assert first != second


def test_the_key_names_the_row_and_never_changes(seeded):
    with seeded.app_context():
        user = UserFactory(email="key@example.com")
        key = customer_key(user)
        db.session.expunge_all()
        again = db.session.get(User, user.id)
        assert customer_key(again) == key  # read back from the database: the same microsecond
        assert key.startswith(f"customer-create-{user.id}-") and key != f"customer-create-{user.id}"


def test_a_key_used_before_with_other_parameters_has_its_own_message_and_an_operator_log(
    billing, stripe_emulator, caplog
):
    user = billing.user()
    with billing.app.app_context():
        key = customer_key(db.session.get(User, user.id))
    stripe_emulator.client().v1.customers.create({"email": "someone-else@example.com"}, {"idempotency_key": key})
    with caplog.at_level(logging.ERROR):
        response = billing.checkout("pro", "monthly")
    assert response.status_code == 303
    page = billing.client.get(response.headers["Location"]).get_data(as_text=True)
    assert REUSED in page and IN_PROGRESS not in page
    assert billing.user().stripe_customer_id is None
    logged = [r.getMessage() for r in caplog.records if "stripe_idempotency_key_reused" in r.getMessage()]
    assert logged and "already used with other parameters" in logged[0], [r.getMessage() for r in caplog.records]
    with billing.app.app_context(), pytest.raises(IdempotencyKeyReused) as raised:
        ensure_customer(user.id)
    assert (raised.value.code, raised.value.message) == ("idempotency_key_reused", REUSED)


def test_the_same_request_still_running_is_already_being_processed(seeded, stripe_emulator):
    emulator = stripe_emulator.emulator
    with seeded.app_context():
        user = UserFactory(email="twice@example.com")
        key = customer_key(user)
        params = {"email": "twice@example.com", "metadata": {"user_id": str(user.id)}}
        emulator.store.lock.acquire()  # the first request (a double click's other half) waits inside the emulator
        first: list = []
        worker = threading.Thread(
            target=lambda: first.append(stripe_emulator.client().v1.customers.create(params, {"idempotency_key": key}))
        )
        worker.start()
        try:
            deadline = time.monotonic() + 10
            while not emulator.in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(BillingUnavailable) as raised:
                ensure_customer(user.id)
        finally:
            emulator.store.lock.release()
        worker.join(10)
        db.session.rollback()
        assert raised.value.message == IN_PROGRESS and raised.value.code == "billing_unavailable"
        assert not isinstance(raised.value, IdempotencyKeyReused)
        assert ensure_customer(user.id) == first[0].id  # once it is done, trying again gets its answer
