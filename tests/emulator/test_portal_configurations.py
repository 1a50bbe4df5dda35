"""Customer Portal configurations: the API (create, update, list, retrieve) and the hosted portal honouring them."""

from __future__ import annotations

import pytest
import stripe
from emulator_helpers import subscribe
from library_shapes import shape_problems
from test_pages import get, post

RESTRICTED = {
    "business_profile": {"headline": "Manage your plan"},
    "features": {
        "customer_update": {"enabled": True, "allowed_updates": ["email"]},
        "invoice_history": {"enabled": False},
        "payment_method_update": {"enabled": False},
        "subscription_cancel": {"enabled": True, "mode": "immediately", "proration_behavior": "none"},
        "subscription_update": {
            "enabled": True,
            "default_allowed_updates": ["price"],
            "proration_behavior": "always_invoice",
            "products": [{"product": "prod_pro", "prices": ["price_pro_monthly"]}],
        },
    },
}


def _portal(client, customer, configuration=None, **extra):
    params = {"customer": customer, "return_url": "http://127.0.0.1:9/account", **extra}
    if configuration:
        params["configuration"] = configuration
    return client.v1.billing_portal.sessions.create(params)


def test_default_configuration_offers_the_paid_prices_only(emulator, client):
    default = client.v1.billing_portal.configurations.retrieve("bpc_emulator_default")
    assert default.is_default and default.active
    offered = {p.product: list(p.prices) for p in default.features.subscription_update.products}
    assert offered == {
        "prod_starter": ["price_starter_monthly", "price_starter_yearly"],
        "prod_pro": ["price_pro_monthly", "price_pro_yearly"],
    }
    assert default.features.subscription_cancel.mode == "at_period_end"
    sub = subscribe(emulator, client)
    _, _, html = get(_portal(client, sub.customer).url + "?section=update")
    assert 'data-price="price_pro_yearly"' in html.decode()
    assert 'data-price="price_free_monthly"' not in html.decode()


def test_default_configuration_charges_an_upgrade_at_once(emulator, client):
    """The default configuration is `flask stripe portal-config`'s: an upgrade in the portal is invoiced and paid
    now (`always_invoice`), not left for the next invoice, which a customer cancelling at the period end never gets."""
    default = client.v1.billing_portal.configurations.retrieve("bpc_emulator_default")
    assert default.features.subscription_update.proration_behavior == "always_invoice"
    sub = subscribe(emulator, client, "price_starter_monthly")
    emulator.advance(days=10)
    ps = _portal(client, sub.customer)
    assert post(ps.url + "/update", {"subscription": sub.id, "price": "price_pro_monthly"})[0] == 303
    invoices = client.v1.invoices.list({"customer": sub.customer}).data
    assert len(invoices) == 2
    upgrade = invoices[0]
    assert upgrade.status == "paid" and upgrade.amount_paid > 0
    assert upgrade.billing_reason == "subscription_update"


def test_create_update_list_retrieve(client, raw):
    cfg = client.v1.billing_portal.configurations.create(RESTRICTED)
    assert cfg.id.startswith("bpc_") and not cfg.is_default and cfg.active
    assert cfg.features.customer_update.allowed_updates == ["email"]
    assert cfg.features.subscription_cancel.mode == "immediately"
    assert cfg.features.subscription_update.products[0].prices == ["price_pro_monthly"]
    assert cfg.business_profile.headline == "Manage your plan"
    _, wire, _ = raw("GET", f"/v1/billing_portal/configurations/{cfg.id}")
    assert shape_problems(stripe.billing_portal.Configuration, wire) == []

    updated = client.v1.billing_portal.configurations.update(
        cfg.id,
        {
            "features": {
                "invoice_history": {"enabled": True},
                "customer_update": {"allowed_updates": ["email", "name", "address"]},
            },
            "metadata": {"team": "billing"},
        },
    )
    assert updated.features.invoice_history.enabled is True
    assert updated.features.customer_update.allowed_updates == ["email", "name", "address"]
    assert updated.features.subscription_cancel.mode == "immediately"  # untouched settings stay
    assert updated.metadata["team"] == "billing"
    assert client.v1.billing_portal.configurations.retrieve(cfg.id).features.invoice_history.enabled
    listed = client.v1.billing_portal.configurations.list({"is_default": False})
    assert [c.id for c in listed.data] == [cfg.id]
    assert len(client.v1.billing_portal.configurations.list().data) == 2


@pytest.mark.parametrize(
    "params, param",
    [
        ({"features": {"subscription_cancel": {"mode": "sometime"}}}, "features[subscription_cancel][mode]"),
        (
            {"features": {"customer_update": {"allowed_updates": ["email", "shoe_size"]}}},
            "features[customer_update][allowed_updates][1]",
        ),
        (
            {
                "features": {
                    "subscription_update": {"products": [{"product": "prod_pro", "prices": ["price_starter_monthly"]}]}
                }
            },
            "features[subscription_update][products][0][prices][0]",
        ),
        (
            {
                "features": {
                    "subscription_update": {"products": [{"product": "prod_nope", "prices": ["price_pro_monthly"]}]}
                }
            },
            "features[subscription_update][products][0][product]",
        ),
        ({"features": {"invoice_history": {"enabled": "maybe"}}}, "features[invoice_history][enabled]"),
        ({}, "features"),
    ],
)
def test_invalid_configurations_are_refused(client, params, param):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing_portal.configurations.create(params)
    assert exc.value.param == param


def test_portal_follows_a_restricted_configuration(emulator, client):
    cfg = client.v1.billing_portal.configurations.create(RESTRICTED)
    sub = subscribe(emulator, client, "price_pro_yearly")
    ps = _portal(client, sub.customer, cfg.id)
    assert ps.configuration == cfg.id
    _, _, home = get(ps.url)
    home = home.decode()
    assert 'id="invoices"' not in home and 'id="update-card"' not in home
    _, _, update = get(ps.url + "?section=update")
    assert 'data-price="price_pro_monthly"' in update.decode()
    assert 'data-price="price_starter_monthly"' not in update.decode()
    assert post(ps.url + "/update", {"subscription": sub.id, "price": "price_starter_monthly"})[0] == 400
    assert post(ps.url + "/payment_method", {"card_number": "4242424242424242"})[0] == 403
    _, _, cancel = get(ps.url + f"?section=cancel&sub={sub.id}")
    assert "canceled immediately" in cancel.decode() and 'id="feedback"' not in cancel.decode()
    assert post(ps.url + "/cancel", {"subscription": sub.id})[0] == 303
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"


def test_default_configuration_cancels_at_period_end_only(emulator, client):
    sub = subscribe(emulator, client)
    ps = _portal(client, sub.customer)
    _, _, cancel = get(ps.url + f"?section=cancel&sub={sub.id}")
    assert "still available until the end of your billing period" in cancel.decode()
    assert post(ps.url + "/cancel", {"subscription": sub.id, "feedback": "unused"})[0] == 303
    s = client.v1.subscriptions.retrieve(sub.id)
    assert s.status == "active" and s.cancel_at_period_end and s.cancellation_details.feedback == "unused"
    assert post(ps.url + "/cancel", {"subscription": sub.id, "feedback": "bogus"})[0] == 400


def test_billing_information_is_editable_as_configured(emulator, client, receiver):
    sub = subscribe(emulator, client)
    ps = _portal(client, sub.customer)
    _, _, form = get(ps.url + "?section=billing")
    assert 'id="billing-form"' in form.decode() and 'id="address_line1"' in form.decode()
    status, _ = post(
        ps.url + "/customer",
        {
            "name": "Jenny Rosen",
            "email": "jenny.rosen@example.com",
            "address_line1": "1 Main St",
            "address_city": "Springfield",
            "address_postal_code": "12345",
            "address_country": "US",
        },
    )
    assert status == 303
    cust = client.v1.customers.retrieve(sub.customer)
    assert (cust.name, cust.email) == ("Jenny Rosen", "jenny.rosen@example.com")
    assert cust.address.line1 == "1 Main St" and cust.address.country == "US" and cust.address.line2 is None
    emulator.flush()
    updated = [e for e in receiver.events() if e["type"] == "customer.updated"]
    assert updated[-1]["data"]["previous_attributes"]["email"] == "jenny@example.com"
    assert post(ps.url + "/customer", {"email": "not-an-email"})[1].count("error=") == 1

    email_only = client.v1.billing_portal.configurations.create(RESTRICTED)
    ps = _portal(client, sub.customer, email_only.id)
    post(ps.url + "/customer", {"name": "Ignored", "email": "j@example.com"})
    cust = client.v1.customers.retrieve(sub.customer)
    assert (cust.name, cust.email) == ("Jenny Rosen", "j@example.com")

    closed = client.v1.billing_portal.configurations.create({"features": {"customer_update": {"enabled": False}}})
    ps = _portal(client, sub.customer, closed.id)
    assert 'id="edit-billing"' not in get(ps.url)[2].decode()
    assert post(ps.url + "/customer", {"email": "x@example.com"})[0] == 403


def test_flows_need_their_feature(emulator, client):
    sub = subscribe(emulator, client)
    cfg = client.v1.billing_portal.configurations.create(RESTRICTED)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _portal(client, sub.customer, cfg.id, flow_data={"type": "payment_method_update"})
    assert exc.value.param == "flow_data[type]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _portal(client, sub.customer, "bpc_nope")
    assert exc.value.param == "configuration"
