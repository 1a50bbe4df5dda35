"""Idempotency-Key misuse as Stripe answers it: a key reused with other parameters is a 400 `idempotency_error`
(stripe-python's IdempotencyError), a key whose first request is still being carried out a 409
`idempotency_key_in_use` (retried by stripe-python, then an APIError); neither is saved."""

from __future__ import annotations

import threading
import time

import pytest
import stripe


def test_a_key_reused_with_other_parameters_is_a_400_idempotency_error_without_the_in_use_code(raw):
    assert raw("POST", "/v1/customers", {"email": "a@example.com"}, {"Idempotency-Key": "k"})[0] == 200
    status, body, _ = raw("POST", "/v1/customers", {"email": "b@example.com"}, {"Idempotency-Key": "k"})
    assert status == 400
    assert body["error"]["type"] == "idempotency_error"
    assert body["error"]["code"] is None  # `idempotency_key_in_use` is the 409 of a request still in flight
    assert "can only be used with the same parameters" in body["error"]["message"]


def in_flight_while(emulator, request):
    """Run `request()` in a thread while the emulator's state is locked, once its key is in flight; answers the
    thread's result holder and the lock's releaser."""
    store = emulator.emulator.store
    store.lock.acquire()
    answer: list = []
    worker = threading.Thread(target=lambda: answer.append(request()))
    worker.start()
    deadline = time.monotonic() + 10
    while not emulator.emulator.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emulator.emulator.in_flight, "the first request never started"
    return answer, worker


def test_the_same_key_while_its_first_request_runs_is_a_409_and_nothing_is_saved(emulator, raw):
    answer, worker = in_flight_while(
        emulator, lambda: raw("POST", "/v1/customers", {"email": "a@example.com"}, {"Idempotency-Key": "twice"})
    )
    try:
        status, body, _ = raw("POST", "/v1/customers", {"email": "a@example.com"}, {"Idempotency-Key": "twice"})
    finally:
        emulator.emulator.store.lock.release()
    worker.join(10)
    assert status == 409
    assert (body["error"]["code"], body["error"]["type"]) == ("idempotency_key_in_use", "invalid_request_error")
    assert "another in-progress request" in body["error"]["message"]
    first_status, first, _ = answer[0]
    assert first_status == 200
    # The 409 was not saved: the same request again replays the first one's answer.
    status, again, headers = raw("POST", "/v1/customers", {"email": "a@example.com"}, {"Idempotency-Key": "twice"})
    assert (status, again["id"], headers.get("Idempotent-Replayed")) == (200, first["id"], "true")
    assert not emulator.emulator.in_flight


def test_stripe_python_retries_a_409_and_then_raises_an_api_error_with_status_409(emulator):
    client = emulator.client(max_network_retries=0)
    answer, worker = in_flight_while(
        emulator,
        lambda: emulator.client().v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "dbl"}),
    )
    try:
        with pytest.raises(stripe.APIError) as raised:
            client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "dbl"})
    finally:
        emulator.emulator.store.lock.release()
    worker.join(10)
    assert not isinstance(raised.value, stripe.IdempotencyError)
    assert raised.value.http_status == 409 and raised.value.error.code == "idempotency_key_in_use"
    assert answer and answer[0].email == "a@example.com"
