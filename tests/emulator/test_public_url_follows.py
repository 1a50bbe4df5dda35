"""The addresses of the emulator's own hosted pages (an invoice's page and PDF, a Checkout session's and a portal
session's `url`) follow its current public URL: an emulator restarted on another port (`make run EMULATOR_PORT=…`)
or with another `--public-url` serves the invoices, sessions and events of its state file on the new one, as the
README says ("every address built on them follows") — not on the address they were first made on, now refused.
A state file written by an older emulator, which kept them absolute, loads and is served the same way."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from emulator_helpers import new_checkout, subscribe

from stripe_emulator.testing import EmulatorServer, WebhookReceiver

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> tuple[int, str, bytes]:
    with _OPENER.open(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def a_customers_life(server: EmulatorServer) -> dict:
    """A subscription paid through Checkout (an invoice), an open Checkout session, a portal session."""
    client = server.client()
    sub = subscribe(server, client, "price_pro_monthly")
    return {
        "invoice": sub.latest_invoice,
        "checkout": new_checkout(client, "price_starter_monthly").id,
        "portal": client.v1.billing_portal.sessions.create({"customer": sub.customer}).id,
        "customer": sub.customer,
    }


def reopened(path: str, **options) -> EmulatorServer:
    """An emulator on the state file, on a port of its own (made while the first one still holds its port)."""
    return EmulatorServer(state_path=path, **options)


def assert_served_on(server: EmulatorServer, made: dict, base: str) -> None:
    client = server.client()
    inv = client.v1.invoices.retrieve(made["invoice"])
    assert inv.hosted_invoice_url == f"{base}/i/{inv.id}"
    assert inv.invoice_pdf == f"{base}/i/{inv.id}/pdf"
    assert client.v1.checkout.sessions.retrieve(made["checkout"]).url == f"{base}/c/pay/{made['checkout']}"
    # Expanded, listed and in events alike.
    sub = client.v1.subscriptions.list({"customer": made["customer"], "expand": ["data.latest_invoice"]}).data[0]
    assert sub.latest_invoice.hosted_invoice_url == inv.hosted_invoice_url
    assert [i.hosted_invoice_url for i in client.v1.invoices.list({"customer": made["customer"]})] == [
        inv.hosted_invoice_url
    ]
    events = client.v1.events.list({"types": ["invoice.paid", "invoice.finalized"]}).data
    assert events and {e.data.object.hosted_invoice_url for e in events} == {inv.hosted_invoice_url}
    completed = client.v1.events.list({"type": "checkout.session.completed"}).data
    assert completed and all(e.data.object.url is None for e in completed)  # Stripe's: a used session has none


def test_a_restarted_emulator_serves_its_pages_on_its_new_address(tmp_path):
    path = str(tmp_path / "state.json")
    with EmulatorServer(state_path=path) as first:
        made = a_customers_life(first)
        assert_served_on(first, made, first.url)
        second = reopened(path)
    assert second.url != first.url
    with second:
        assert_served_on(second, made, second.url)
        inv = second.client().v1.invoices.retrieve(made["invoice"])
        status, ctype, page = fetch(inv.hosted_invoice_url)
        assert status == 200 and "text/html" in ctype
        assert f'href="{second.url}/i/{inv.id}/pdf"'.encode() in page  # the page's own PDF link too
        status, ctype, pdf = fetch(inv.invoice_pdf)
        assert status == 200 and ctype == "application/pdf" and pdf.startswith(b"%PDF")
        assert fetch(f"{second.url}/c/pay/{made['checkout']}")[0] == 200
        status, _, portal = fetch(f"{second.url}/p/session/{made['portal']}")
        links = set(re.findall(rb'href="([^"]*/i/in_[^"]*)"', portal))
        assert links == {f"{second.url}/i/{inv.id}".encode(), f"{second.url}/i/{inv.id}/pdf".encode()}
        # A new portal session, and a webhook of a new invoice, are on the new address too.
        portal_url = second.client().v1.billing_portal.sessions.create({"customer": made["customer"]}).url
        assert portal_url.startswith(f"{second.url}/p/session/bps_")
        with WebhookReceiver() as hook:
            second.add_webhook(hook.url, hook.secret)
            second.advance(days=32)
            second.flush()
            created = [e for e in hook.events() if e["type"] == "invoice.created"]
        assert created and all(
            e["data"]["object"]["hosted_invoice_url"].startswith(f"{second.url}/i/in_") for e in created
        )


def test_an_idempotent_answer_is_replayed_on_the_new_address(tmp_path):
    path = str(tmp_path / "state.json")
    params = {
        "mode": "subscription",
        "line_items": [{"price": "price_pro_monthly", "quantity": 1}],
        "success_url": "http://127.0.0.1:9/ok",
        "customer_email": "replay@example.com",
    }
    with EmulatorServer(state_path=path) as first:
        made = first.client().v1.checkout.sessions.create(params, {"idempotency_key": "same-request"})
        assert made.url == f"{first.url}/c/pay/{made.id}"
        second = reopened(path)
    with second:
        again = second.client().v1.checkout.sessions.create(params, {"idempotency_key": "same-request"})
        assert again.id == made.id
        assert again.url == f"{second.url}/c/pay/{made.id}"


def test_a_public_url_given_is_followed_and_dropped_again(tmp_path):
    path = str(tmp_path / "state.json")
    public = "https://billing.example.test/stripe-emulator"
    with EmulatorServer(state_path=path, public_url=public) as first:
        made = a_customers_life(first)
        assert_served_on(first, made, public)
        second = reopened(path)
    with second:
        assert_served_on(second, made, second.url)


def as_an_older_emulator_saved_it(path: str, base: str) -> None:
    """Rewrite the state file as an emulator that stored absolute addresses wrote it (on `base`)."""
    with open(path, encoding="utf-8") as fh:
        state = json.load(fh)
    text = json.dumps(state)
    old = re.sub(r'"(/(?:i/in_\w+(?:/pdf)?|c/pay/cs_\w+|p/session/bps_\w+))"', lambda m: f'"{base}{m.group(1)}"', text)
    assert old != text
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(old)


@pytest.mark.parametrize("old_base", ["http://127.0.0.1:12111", "https://tunnel.example.test/emu"])
def test_a_state_file_with_absolute_addresses_still_loads_and_follows(tmp_path, old_base):
    path = str(tmp_path / "state.json")
    with EmulatorServer(state_path=path) as first:
        made = a_customers_life(first)
    as_an_older_emulator_saved_it(path, old_base)
    with EmulatorServer(state_path=path) as second:
        assert_served_on(second, made, second.url)
        inv = second.client().v1.invoices.retrieve(made["invoice"])
        assert fetch(inv.hosted_invoice_url)[0] == 200
        status, _, portal = fetch(f"{second.url}/p/session/{made['portal']}")
        assert old_base.encode() not in portal and f"{second.url}/i/{inv.id}".encode() in portal
        second.client().v1.customers.update(made["customer"], {"name": "Saved Again"})  # saves the state
    with open(path, encoding="utf-8") as fh:
        assert old_base not in fh.read()  # kept as paths from now on
