"""`flask stripe create-catalog` when a catalog price was archived: Stripe lists it by its lookup key (which it
keeps) and refuses the key to a new price, so the command reactivates the price when it is the catalog's, and
otherwise creates the new price taking the key over (`transfer_lookup_key`)."""

from __future__ import annotations


def run_catalog(runner) -> tuple[dict[str, str], list[str]]:
    result = runner.invoke(args=["stripe", "create-catalog"])
    assert result.exit_code == 0, result.output
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith("STRIPE_PRICE_"))
    return env, result.stderr.splitlines()


def test_an_archived_catalog_price_is_reactivated_and_reported_as_existing(seeded, runner, stripe_emulator):
    client = stripe_emulator.client()
    client.v1.prices.update("price_pro_yearly", params={"active": False})
    env, lines = run_catalog(runner)
    assert env["STRIPE_PRICE_PRO_YEARLY"] == "price_pro_yearly"
    assert "✓ Exists  pro_yearly       price_pro_yearly" in lines
    price = client.v1.prices.retrieve("price_pro_yearly")
    assert (price.active, price.lookup_key) == (True, "pro_yearly")
    assert len(client.v1.prices.list(params={"lookup_keys": ["pro_yearly"]}).data) == 1
    assert run_catalog(runner)[0] == env  # and again: nothing more to do


def test_a_price_of_another_amount_holding_the_key_gives_it_to_a_new_price(seeded, runner, stripe_emulator):
    client = stripe_emulator.client()
    old = client.v1.prices.create(
        params={
            "product": "prod_pro",
            "currency": "usd",
            "unit_amount": 5999,
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
            "transfer_lookup_key": True,
        }
    )
    client.v1.prices.update(old.id, params={"active": False})
    env, lines = run_catalog(runner)
    new_id = env["STRIPE_PRICE_PRO_MONTHLY"]
    assert new_id not in (old.id, "price_pro_monthly")
    assert f"✓ Created pro_monthly      {new_id}" in lines
    new = client.v1.prices.retrieve(new_id)
    assert (new.unit_amount, new.recurring.interval, new.lookup_key, new.active) == (4999, "month", "pro_monthly", True)
    assert client.v1.prices.retrieve(old.id).lookup_key is None
    assert run_catalog(runner)[0]["STRIPE_PRICE_PRO_MONTHLY"] == new_id


def test_an_archived_price_of_an_archived_product_is_replaced_on_a_new_product(seeded, runner, stripe_emulator):
    client = stripe_emulator.client()
    client.v1.prices.update("price_starter_monthly", params={"active": False})
    client.v1.products.update("prod_starter", params={"active": False})
    env, _ = run_catalog(runner)
    for variable, old_id in (
        ("STRIPE_PRICE_STARTER_MONTHLY", "price_starter_monthly"),
        ("STRIPE_PRICE_STARTER_YEARLY", "price_starter_yearly"),
    ):
        price = client.v1.prices.retrieve(env[variable])
        assert price.id != old_id and price.active and price.product != "prod_starter"
        assert client.v1.products.retrieve(price.product).active
    assert env["STRIPE_PRICE_PRO_MONTHLY"] == "price_pro_monthly"
