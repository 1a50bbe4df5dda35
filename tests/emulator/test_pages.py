"""Hosted pages: Checkout in a real browser, the portal and invoices over HTTP."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request

import pytest
from emulator_helpers import new_checkout, subscribe

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_NO_REDIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with _OPENER.open(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def post(url: str, data: dict) -> tuple[int, str]:
    """POST a form without following the redirect: (status, Location)."""
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(), method="POST")
    try:
        with _NO_REDIRECT.open(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Location", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "")


# ---------------------------------------------------------------------- Playwright
def test_pay_checkout_in_chromium(emulator, client, receiver, page):
    success = emulator.url + "/_emulator/health?session_id={CHECKOUT_SESSION_ID}"
    cs = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer_email": "jenny@example.com",
            "success_url": success,
            "cancel_url": emulator.url + "/_emulator/health?canceled=1",
            "line_items": [{"price": "price_pro_monthly", "quantity": 1}],
        }
    )
    page.goto(cs.url)
    assert page.get_by_text("Subscribe to Pro").is_visible()
    assert "$49.99" in page.locator("#amount").inner_text()
    assert "per month" in page.locator("#amount").inner_text()
    assert page.locator("#back-link").get_attribute("href").endswith("canceled=1")
    page.fill("#card_number", "4242 4242 4242 4242")
    page.fill("#card_name", "Jenny Rosen")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/_emulator/health\?session_id=cs_test_"))
    assert page.url.endswith("session_id=" + cs.id)
    done = client.v1.checkout.sessions.retrieve(cs.id)
    assert done.status == "complete" and done.payment_status == "paid"
    receiver.wait_for("checkout.session.completed")


def test_declined_card_shows_message_in_chromium(emulator, client, page):
    cs = new_checkout(
        client, "price_starter_yearly", success_url=emulator.url + "/_emulator/health?session_id={CHECKOUT_SESSION_ID}"
    )
    page.goto(cs.url)
    assert "$199.99" in page.locator("#amount").inner_text()
    page.fill("#card_number", "4000 0000 0000 0002")
    page.click("#submit")
    error = page.locator("#card-error")
    error.wait_for()
    assert "Your card was declined." in error.inner_text()
    assert client.v1.checkout.sessions.retrieve(cs.id).status == "open"
    # The customer can try again on the same page.
    page.fill("#card_number", "4242424242424242")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/_emulator/health\?session_id=cs_test_"))
    assert client.v1.checkout.sessions.retrieve(cs.id).status == "complete"


# ---------------------------------------------------------------------- plain HTTP
def test_checkout_form_post_redirects_with_303(emulator, client):
    cs = new_checkout(client)
    status, location = post(
        cs.url,
        {"email": "a@example.com", "card_number": "4242424242424242", "card_expiry": "12 / 34", "card_cvc": "123"},
    )
    assert status == 303 and location == f"http://127.0.0.1:9/success?session_id={cs.id}"
    status, _, body = get(cs.url)
    assert b"Already paid" in body


def test_portal_plan_switch_waits_for_confirm(emulator, client, receiver):
    """Select opens a confirmation (the new price, what is due today) that changes nothing; Confirm applies the
    switch; Cancel leads back to the portal; a price not offered, or the current one, is refused."""
    sub = subscribe(emulator, client, "price_starter_monthly")
    ps = client.v1.billing_portal.sessions.create({"customer": sub.customer})
    _, _, plans = get(ps.url + "?section=update")
    select = re.search(
        r'<form method="(\w+)" action="([^"]+)">(?:(?!</form>).)*data-price="price_pro_monthly"', plans.decode(), re.S
    )
    assert select and select.group(1) == "get" and "/update" not in select.group(2)  # Select does not post the change

    emulator.flush()
    receiver.clear()
    query = urllib.parse.urlencode({"section": "confirm", "sub": sub.id, "price": "price_pro_monthly"})
    status, _, html = get(ps.url + "?" + query)
    text = html.decode()
    assert status == 200 and "Confirm your new plan" in text and 'id="confirm-update"' in text
    assert re.search(r'id="confirm-plan">Pro Plan<', text) and "$49.99 per month" in text
    assert re.search(r'id="confirm-due">\$\d+\.\d\d<', text)  # the prorated difference, charged today or not
    assert 'href="?section=home"' in text  # Cancel goes back to the portal
    emulator.flush()
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_starter_monthly"
    assert receiver.types() == []  # the preview sends no event
    assert len(client.v1.invoices.list({"customer": sub.customer}).data) == 1

    for price in ("price_starter_monthly", "price_nope"):
        bad = urllib.parse.urlencode({"section": "confirm", "sub": sub.id, "price": price})
        assert get(ps.url + "?" + bad)[0] == 400

    status, _ = post(ps.url + "/update", {"subscription": sub.id, "price": "price_pro_monthly"})  # Confirm
    assert status == 303
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_pro_monthly"
    emulator.flush()
    assert "customer.subscription.updated" in receiver.types()


def test_portal_update_confirm_flow_opens_on_the_confirmation(emulator, client):
    """``flow_data.type=subscription_update_confirm`` opens on the confirmation of its price; Confirm applies it and
    follows the flow's redirect."""
    sub = subscribe(emulator, client, "price_starter_monthly")
    item = sub["items"].data[0]
    ps = client.v1.billing_portal.sessions.create(
        {
            "customer": sub.customer,
            "flow_data": {
                "type": "subscription_update_confirm",
                "subscription_update_confirm": {
                    "subscription": sub.id,
                    "items": [{"id": item.id, "price": "price_pro_monthly"}],
                },
                "after_completion": {"type": "redirect", "redirect": {"return_url": "http://127.0.0.1:9/billing"}},
            },
        }
    )
    status, _, html = get(ps.url)
    assert status == 200 and re.search(r'id="confirm-plan">Pro Plan<', html.decode())
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_starter_monthly"
    status, location = post(ps.url + "/update", {"subscription": sub.id, "price": "price_pro_monthly"})
    assert (status, location) == (303, "http://127.0.0.1:9/billing")
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_pro_monthly"


def test_portal_swap_cancel_resume_and_card(emulator, client, receiver):
    sub = subscribe(emulator, client, "price_starter_monthly")
    ps = client.v1.billing_portal.sessions.create(
        {"customer": sub.customer, "return_url": "http://127.0.0.1:9/account"}
    )
    status, _, html = get(ps.url)
    text = html.decode()
    assert status == 200 and "Starter" in text and "renews on" in text and "http://127.0.0.1:9/account" in text
    assert sub.latest_invoice in text  # invoice history links to the hosted invoice page

    status, location = post(ps.url + "/update", {"subscription": sub.id, "price": "price_pro_monthly"})
    assert status == 303
    s = client.v1.subscriptions.retrieve(sub.id)
    assert s["items"].data[0].price.id == "price_pro_monthly"

    post(ps.url + "/cancel", {"subscription": sub.id, "feedback": "too_expensive"})
    s = client.v1.subscriptions.retrieve(sub.id)
    assert s.cancel_at_period_end and s.cancellation_details.feedback == "too_expensive"
    post(ps.url + "/resume", {"subscription": sub.id})
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False

    post(ps.url + "/payment_method", {"card_number": "5555555555554444", "card_expiry": "01 / 31", "card_cvc": "123"})
    cust = client.v1.customers.retrieve(sub.customer, {"expand": ["invoice_settings.default_payment_method"]})
    assert cust.invoice_settings.default_payment_method.card.last4 == "4444"
    emulator.flush()
    types = receiver.types()
    assert "customer.subscription.updated" in types and types.count("payment_method.attached") == 2


def test_portal_flow_opens_the_section(emulator, client):
    sub = subscribe(emulator, client)
    for flow, marker in [
        ("payment_method_update", 'id="save-card"'),
        ("subscription_cancel", 'id="confirm-cancel"'),
        ("subscription_update", 'data-price="price_pro_yearly"'),
    ]:
        data = {"type": flow}
        if flow != "payment_method_update":
            data[flow] = {"subscription": sub.id}
        ps = client.v1.billing_portal.sessions.create({"customer": sub.customer, "flow_data": data})
        _, _, html = get(ps.url)
        assert marker in html.decode(), flow


def test_past_due_recovers_with_new_card_in_portal(emulator, client):
    sub = subscribe(emulator, client, card="4000000000000341")
    emulator.advance(days=32)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    ps = client.v1.billing_portal.sessions.create(
        {"customer": sub.customer, "flow_data": {"type": "payment_method_update"}}
    )
    post(ps.url + "/payment_method", {"card_number": "4242424242424242", "card_expiry": "12/34", "card_cvc": "123"})
    s = client.v1.subscriptions.retrieve(sub.id, {"expand": ["latest_invoice"]})
    assert s.status == "active" and s.latest_invoice.status == "paid"


def test_invoice_page_and_pdf(emulator, client):
    sub = subscribe(emulator, client, "price_pro_yearly")
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    status, ctype, html = get(inv.hosted_invoice_url)
    assert status == 200 and "$479.99" in html.decode() and inv.number in html.decode()
    status, ctype, pdf = get(inv.invoice_pdf)
    assert status == 200 and ctype == "application/pdf"
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF") and b"479.99" in pdf


@pytest.mark.parametrize("path", ["/c/pay/cs_test_nope", "/p/session/bps_nope", "/i/in_nope"])
def test_unknown_pages_are_404(emulator, path):
    assert get(emulator.url + path)[0] == 404
