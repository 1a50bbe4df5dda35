"""Lookup keys as Stripe keeps them: unique among all prices, archived ones included; `transfer_lookup_key` moves
one; an archived price is listed by its key and can be reactivated."""

from __future__ import annotations

import pytest
import stripe


def test_an_archived_price_keeps_its_lookup_key_and_stripe_refuses_it_to_another(client):
    client.v1.prices.update("price_pro_yearly", params={"active": False})
    params = {
        "product": "prod_pro",
        "currency": "usd",
        "unit_amount": 47999,
        "recurring": {"interval": "year"},
        "lookup_key": "pro_yearly",
    }
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.prices.create(params=params)
    assert "A price (price_pro_yearly) already uses that lookup key." in str(refused.value.user_message)
    assert refused.value.param == "lookup_key"
    moved = client.v1.prices.create(params={**params, "transfer_lookup_key": True})
    assert moved.lookup_key == "pro_yearly"
    assert client.v1.prices.retrieve("price_pro_yearly").lookup_key is None


def test_an_archived_price_is_listed_by_its_key_and_reactivated(client):
    client.v1.prices.update("price_pro_yearly", params={"active": False})
    assert client.v1.prices.list(params={"lookup_keys": ["pro_yearly"], "active": True}).data == []
    [archived] = client.v1.prices.list(params={"lookup_keys": ["pro_yearly"]}).data
    assert (archived.id, archived.active) == ("price_pro_yearly", False)
    assert client.v1.prices.update("price_pro_yearly", params={"active": True}).active is True
