"""The Flask app: Stripe's REST API (``/v1``), wired to the store and billing engine.

Hosted pages live in ``pages.py`` and the test control API in ``control.py``;
this module owns the request plumbing every API call shares: authentication,
bracket-notation decoding, the state lock, Idempotency-Key replay, Stripe
error JSON, ``expand[]`` and list pagination.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from typing import Callable, Optional
from urllib.parse import parse_qsl

from flask import Flask, Response, current_app, request

from . import billing, objects
from .billing import Billing, Config, Ctx
from .errors import StripeError, invalid, missing_param, no_such
from .expand import expand
from .forms import FormError, decode
from .params import Params, merge_metadata
from .store import Store, new_id
from .webhooks import Dispatcher


class Emulator:
    """Everything one emulator instance owns: state, webhook dispatcher, engine, config."""

    def __init__(self, state_path: Optional[str] = None, config: Optional[Config] = None,
                 retry_schedule: Optional[list] = None, max_attempts: int = 5):
        self.config = config or Config()
        self.store = Store(state_path)
        self.dispatcher = Dispatcher(retry_schedule=retry_schedule or [0.5, 1.0, 2.0, 4.0],
                                     max_attempts=max_attempts)
        self.billing = Billing(self.store, self.dispatcher, self.config)

    def reset(self) -> None:
        with self.store.lock:
            self.dispatcher.clear()
            self.store.reset()

    def close(self) -> None:
        self.dispatcher.stop()


def emu() -> Emulator:
    return current_app.extensions["stripe_emulator"]


def base_url() -> str:
    return (emu().config.public_url or request.host_url).rstrip("/")


# ====================================================================== plumbing
def json_response(body, status: int = 200, headers: Optional[dict] = None) -> Response:
    text = body if isinstance(body, str) else json.dumps(body, indent=2)
    resp = Response(text, status=status, mimetype="application/json")
    resp.headers["Stripe-Version"] = objects.API_VERSION
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def error_response(err: StripeError, request_id: str) -> Response:
    body = err.body()
    body["error"]["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
    return json_response(body, err.status, {"Request-Id": request_id})


def _check_auth() -> Optional[StripeError]:
    header = request.headers.get("Authorization", "")
    key = None
    if header.startswith("Bearer "):
        key = header[7:].strip()
    elif request.authorization and request.authorization.type == "basic":
        key = request.authorization.username
    if not key:
        return StripeError("You did not provide an API key. You need to provide your API key in the "
                           "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                           status=401, code=None)
    if not key.startswith("sk_test_") or len(key) <= len("sk_test_"):
        shown = key[:8] + "*" * max(len(key) - 12, 0) + key[-4:] if len(key) > 12 else key
        return StripeError(f"Invalid API Key provided: {shown}", status=401, code="api_key_invalid")
    return None


def _decoded_params() -> dict:
    if request.method in ("GET", "DELETE"):
        pairs = parse_qsl(request.query_string.decode("utf-8"), keep_blank_values=True)
        if request.method == "DELETE" and request.content_length:
            pairs += parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
    else:
        pairs = parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
    return decode(pairs)


Handler = Callable[..., object]


def api(app: Flask, rule: str, methods: list[str]) -> Callable[[Handler], Handler]:
    """Register an API route. The handler gets (p: Params, ctx: Ctx, **url args)
    and returns a Stripe object (dict); the wrapper does everything else."""

    def decorator(fn: Handler) -> Handler:
        def view(**kwargs):
            request_id = new_id("req", 14)
            e = emu()
            auth_error = _check_auth()
            if auth_error:
                return error_response(auth_error, request_id)
            try:
                data = _decoded_params()
            except FormError as exc:
                return error_response(invalid(exc.param, str(exc)), request_id)
            idem_key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
            with e.store.lock:
                record_key = fingerprint = None
                if idem_key:
                    record_key = hashlib.sha256(
                        (request.headers.get("Authorization", "") + "\0" + idem_key).encode()).hexdigest()
                    fingerprint = hashlib.sha256(
                        (request.method + " " + request.path + "\0" + request.get_data(as_text=True)).encode()
                    ).hexdigest()
                    seen = e.store.internal("idempotency").get(record_key)
                    if seen:
                        if seen["fingerprint"] != fingerprint:
                            return error_response(StripeError(
                                "Keys for idempotent requests can only be used with the same parameters they "
                                f"were first used with. Try using a key other than '{idem_key}' if you meant "
                                "to execute a different request.", type="idempotency_error",
                                code="idempotency_key_in_use"), request_id)
                        return json_response(seen["body"], seen["status"], {
                            "Request-Id": seen["request_id"], "Idempotent-Replayed": "true",
                            "Idempotency-Key": idem_key})
                ctx = Ctx(base_url=base_url(), request_id=request_id, idempotency_key=idem_key)
                p = Params(data)
                if request.method == "GET":
                    p.ignore("limit", "starting_after", "ending_before")  # read by paginate()
                try:
                    result = fn(p, ctx, **kwargs)
                    expand_paths = p.list("expand") or []
                    body = render(result, expand_paths)
                    status, text = 200, json.dumps(body, indent=2)
                except StripeError as err:
                    if err.status != 402 or not record_key:
                        if request.method != "GET":
                            e.store.save()
                        return error_response(err, request_id)
                    # Card errors happened after the request started executing: Stripe replays them.
                    status = err.status
                    body = err.body()
                    text = json.dumps(body, indent=2)
                if record_key:
                    e.store.internal("idempotency")[record_key] = {
                        "fingerprint": fingerprint, "status": status, "body": text,
                        "request_id": request_id, "created": e.store.now()}
                if request.method != "GET":
                    e.store.save()
            headers = {"Request-Id": request_id}
            if idem_key:
                headers["Idempotency-Key"] = idem_key
            return json_response(text, status, headers)

        view.__name__ = "api_" + fn.__name__
        app.add_url_rule(rule, view.__name__, view, methods=methods)
        return fn

    return decorator


def render(result, expand_paths: list) -> dict:
    """Apply ``expand[]`` (``data.x`` paths apply to each element of a list)."""
    store = emu().store
    if isinstance(result, dict) and result.get("object") == "list" and expand_paths:
        out = dict(result)
        inner = []
        for path in expand_paths:
            if not path.startswith("data."):
                raise StripeError(f"This property cannot be expanded ({path}). You may want to try "
                                  f"expanding 'data.{path}' instead.", param="expand")
            inner.append(path[len("data."):])
        out["data"] = [expand(store, o, inner, INCLUDABLES) for o in result["data"]]
        return out
    if isinstance(result, dict) and expand_paths:
        return expand(store, result, expand_paths, INCLUDABLES)
    return copy.deepcopy(result)


def _line_items(store: Store, cs: dict) -> dict:
    items = store.internal("line_items").get(cs["id"], [])
    return objects.list_object(copy.deepcopy(items), f"/v1/checkout/sessions/{cs['id']}/line_items",
                               total_count=len(items))


def _customer_subscriptions(store: Store, cust: dict) -> dict:
    subs = [s for s in reversed(list(store.coll("subscriptions").values()))
            if s["customer"] == cust["id"] and s["status"] != "canceled"]
    return objects.list_object(copy.deepcopy(subs), f"/v1/customers/{cust['id']}/subscriptions",
                               total_count=len(subs))


INCLUDABLES = {
    ("checkout.session", "line_items"): _line_items,
    ("customer", "subscriptions"): _customer_subscriptions,
}


def paginate(items: list, p: Params, url: str, total: bool = False) -> dict:
    """Stripe list semantics over ``items`` ordered newest first."""
    limit = p.int("limit", minimum=1, maximum=100) or 10
    after = p.str("starting_after")
    before = p.str("ending_before")
    ids = [o["id"] for o in items]
    if after:
        if after not in ids:
            raise no_such("object", after, param="starting_after", status=400)
        start = ids.index(after) + 1
        page = items[start:start + limit]
        has_more = start + limit < len(items)
    elif before:
        if before not in ids:
            raise no_such("object", before, param="ending_before", status=400)
        end = ids.index(before)
        page = items[max(0, end - limit):end]
        has_more = end - limit > 0
    else:
        page = items[:limit]
        has_more = len(items) > limit
    return objects.list_object(page, url, has_more, len(items) if total else None)


def newest_first(coll: dict) -> list:
    """Stored collections keep insertion order, which is creation order."""
    return list(reversed(list(coll.values())))


def get_or_404(coll: str, kind: str, obj_id: str, param: str = "id", status: int = 404) -> dict:
    obj = emu().store.get(coll, obj_id)
    if obj is None:
        raise no_such(kind, obj_id, param=param, status=status)
    return obj


def created_filter(p: Params, items: list) -> list:
    created = p.raw("created")
    if created is None:
        return items
    if isinstance(created, str):
        return [o for o in items if o["created"] == int(created)]
    ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
    for op, value in created.items():
        if op not in ops:
            raise invalid(f"created[{op}]", f"Received unknown parameter: created[{op}]")
        items = [o for o in items if ops[op](o["created"], int(value))]
    return items


# ====================================================================== the app
def create_app(emulator: Optional[Emulator] = None, **kwargs) -> Flask:
    """Build the Flask app serving the API, the hosted pages and the control API."""
    from . import control, pages

    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["stripe_emulator"] = emulator or Emulator(**kwargs)
    register_api(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(control.bp)

    @app.errorhandler(404)
    def not_found(_exc):
        if request.path.startswith("/v1/"):
            return error_response(StripeError(
                f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/.", status=404),
                new_id("req", 14))
        return pages.not_found_page()

    @app.errorhandler(405)
    def not_allowed(_exc):
        return error_response(StripeError(
            f"Unrecognized request URL ({request.method}: {request.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.", status=404),
                new_id("req", 14))

    return app


def register_api(app: Flask) -> None:  # noqa: C901 - a flat list of routes reads best
    store = lambda: emu().store  # noqa: E731
    eng = lambda: emu().billing  # noqa: E731

    # ------------------------------------------------------------------ products
    @api(app, "/v1/products", ["POST"])
    def create_product(p: Params, ctx: Ctx):
        name = p.str("name", required=True)
        pid = p.str("id") or new_id("prod", 14)
        if store().get("products", pid):
            raise StripeError(f"Product already exists.", code="resource_already_exists", param="id")
        prod = objects.product(pid, name, store().now(), description=p.str("description"),
                               metadata=p.metadata() or {}, active=p.bool("active") is not False)
        for key in ("statement_descriptor", "unit_label", "url", "tax_code"):
            if p.has(key):
                prod[key] = p.str(key)
        store().put("products", prod)
        dpd = p.dict("default_price_data")
        if dpd:
            price = _build_price(dpd, pid)
            dpd.done()
            store().put("prices", price)
            prod["default_price"] = price["id"]
        p.done()
        eng().emit(ctx, "product.created", prod)
        return prod

    @api(app, "/v1/products", ["GET"])
    def list_products(p: Params, ctx: Ctx):
        items = newest_first(store().coll("products"))
        active = p.bool("active")
        if active is not None:
            items = [o for o in items if o["active"] == active]
        ids = p.list("ids")
        if ids:
            items = [o for o in items if o["id"] in ids]
        items = created_filter(p, items)
        p.ignore("shippable", "url")
        p.done()
        return paginate(items, p, "/v1/products")

    @api(app, "/v1/products/<pid>", ["GET"])
    def retrieve_product(p: Params, ctx: Ctx, pid: str):
        p.done()
        return get_or_404("products", "product", pid)

    @api(app, "/v1/products/<pid>", ["POST"])
    def update_product(p: Params, ctx: Ctx, pid: str):
        prod = get_or_404("products", "product", pid)
        before = copy.deepcopy(prod)
        if p.has("name"):
            prod["name"] = p.str("name", required=True)
        for key in ("description", "statement_descriptor", "unit_label", "url", "tax_code"):
            if p.has(key):
                prod[key] = p.str(key)
        if p.has("active"):
            prod["active"] = p.bool("active")
        if p.has("default_price"):
            dp = p.str("default_price")
            if dp and not store().get("prices", dp):
                raise no_such("price", dp, param="default_price", status=400)
            prod["default_price"] = dp
        prod["metadata"] = merge_metadata(prod["metadata"], p.metadata())
        p.done()
        if before != prod:
            prod["updated"] = store().now()
        eng().emit_update(ctx, "product.updated", before, prod)
        return prod

    # ------------------------------------------------------------------ prices
    def _build_price(p: Params, product_id: Optional[str] = None) -> dict:
        currency = (p.str("currency", required=True) or "").lower()
        if len(currency) != 3:
            raise invalid(p._name("currency"), f"Invalid currency: {currency}")
        if product_id is None:
            product_id = p.str("product")
            pdata = p.dict("product_data")
            if product_id:
                get_or_404("products", "product", product_id, param="product", status=400)
            elif pdata:
                prod = objects.product(new_id("prod", 14), pdata.str("name", required=True), store().now(),
                                       metadata=pdata.metadata() or {})
                pdata.done()
                store().put("products", prod)
                product_id = prod["id"]
            else:
                raise missing_param("product")
        unit_amount = p.int("unit_amount", minimum=0)
        if unit_amount is None:
            decimal = p.str("unit_amount_decimal")
            if decimal is None:
                raise missing_param(p._name("unit_amount"))
            unit_amount = int(float(decimal))
        rec = p.dict("recurring")
        interval = interval_count = None
        if rec:
            interval = rec.str("interval", required=True, choices=["day", "week", "month", "year"])
            interval_count = rec.int("interval_count", minimum=1) or 1
            rec.ignore("usage_type", "meter", "trial_period_days")
            rec.done()
        lookup_key = p.str("lookup_key")
        if lookup_key:
            clash = [x for x in store().coll("prices").values() if x["lookup_key"] == lookup_key]
            if clash:
                if p.bool("transfer_lookup_key"):
                    for x in clash:
                        x["lookup_key"] = None
                else:
                    raise invalid(p._name("lookup_key"), f"A price ({clash[0]['id']}) already uses that lookup key.")
        price = objects.price(new_id("price", 24), product_id, unit_amount, store().now(),
                              currency=currency, interval=interval, interval_count=interval_count or 1,
                              lookup_key=lookup_key, nickname=p.str("nickname"), metadata=p.metadata() or {},
                              active=p.bool("active") is not False)
        p.ignore("tax_behavior", "transfer_lookup_key")
        return price

    @api(app, "/v1/prices", ["POST"])
    def create_price(p: Params, ctx: Ctx):
        price = _build_price(p)
        p.done()
        store().put("prices", price)
        eng().emit(ctx, "price.created", price)
        return price

    @api(app, "/v1/prices", ["GET"])
    def list_prices(p: Params, ctx: Ctx):
        items = newest_first(store().coll("prices"))
        active = p.bool("active")
        if active is not None:
            items = [o for o in items if o["active"] == active]
        product = p.str("product")
        if product:
            items = [o for o in items if o["product"] == product]
        ptype = p.str("type", choices=["one_time", "recurring"])
        if ptype:
            items = [o for o in items if o["type"] == ptype]
        currency = p.str("currency")
        if currency:
            items = [o for o in items if o["currency"] == currency.lower()]
        keys = p.list("lookup_keys")
        if keys is not None:
            if len(keys) > 10:
                raise invalid("lookup_keys", "Invalid lookup_keys: must contain at most 10 keys")
            items = [o for o in items if o["lookup_key"] in keys]
        rec = p.dict("recurring")
        if rec:
            interval = rec.str("interval", choices=["day", "week", "month", "year"])
            if interval:
                items = [o for o in items if (o["recurring"] or {}).get("interval") == interval]
            rec.ignore("usage_type", "meter")
            rec.done()
        items = created_filter(p, items)
        p.done()
        return paginate(items, p, "/v1/prices")

    @api(app, "/v1/prices/<pid>", ["GET"])
    def retrieve_price(p: Params, ctx: Ctx, pid: str):
        p.done()
        return get_or_404("prices", "price", pid)

    @api(app, "/v1/prices/<pid>", ["POST"])
    def update_price(p: Params, ctx: Ctx, pid: str):
        price = get_or_404("prices", "price", pid)
        before = copy.deepcopy(price)
        if p.has("active"):
            price["active"] = p.bool("active")
        if p.has("nickname"):
            price["nickname"] = p.str("nickname")
        if p.has("lookup_key"):
            key = p.str("lookup_key")
            clash = [x for x in store().coll("prices").values() if key and x["lookup_key"] == key and x is not price]
            if clash and not p.bool("transfer_lookup_key"):
                raise invalid("lookup_key", f"A price ({clash[0]['id']}) already uses that lookup key.")
            for x in clash:
                x["lookup_key"] = None
            price["lookup_key"] = key
        price["metadata"] = merge_metadata(price["metadata"], p.metadata())
        p.ignore("tax_behavior", "transfer_lookup_key")
        p.done()
        eng().emit_update(ctx, "price.updated", before, price)
        return price

    # ------------------------------------------------------------------ customers
    @api(app, "/v1/customers", ["POST"])
    def create_customer(p: Params, ctx: Ctx):
        email = p.str("email")
        if email is not None and "@" not in email:
            raise invalid("email", "Invalid email address: " + email)
        cust = eng().create_customer(ctx, email=email, name=p.str("name"), description=p.str("description"),
                                     phone=p.str("phone"), metadata=p.metadata() or {})
        pm = p.str("payment_method")
        if pm:
            raise invalid("payment_method", "The emulator attaches cards through Checkout and the portal only.")
        inv = p.dict("invoice_settings")
        if inv:
            dpm = inv.str("default_payment_method")
            if dpm:
                raise no_such("PaymentMethod", dpm, param="invoice_settings[default_payment_method]", status=400)
            inv.ignore("custom_fields", "footer", "rendering_options")
            inv.done()
        p.ignore("address", "shipping", "preferred_locales", "tax_exempt", "test_clock", "balance",
                 "invoice_prefix", "tax", "tax_id_data", "source", "coupon", "promotion_code")
        p.done()
        return cust

    @api(app, "/v1/customers", ["GET"])
    def list_customers(p: Params, ctx: Ctx):
        items = newest_first(store().coll("customers"))
        email = p.str("email")
        if email is not None:
            items = [o for o in items if o["email"] == email]
        items = created_filter(p, items)
        p.ignore("test_clock")
        p.done()
        return paginate(items, p, "/v1/customers")

    @api(app, "/v1/customers/search", ["GET"])
    def search_customers(p: Params, ctx: Ctx):
        query = p.str("query", required=True)
        items = newest_first(store().coll("customers"))
        for clause in query.split(" AND "):
            field, _, value = clause.strip().partition(":")
            value = value.strip().strip("'\"")
            if field == "email":
                items = [o for o in items if o["email"] == value]
            elif field == "name":
                items = [o for o in items if o["name"] == value]
            elif field.startswith("metadata["):
                key = field[len("metadata["):-1].strip("'\"")
                items = [o for o in items if o["metadata"].get(key) == value]
            else:
                raise invalid("query", f"Field '{field}' is not supported by the emulator's search.")
        limit = p.int("limit", minimum=1, maximum=100) or 10
        p.ignore("page")
        p.done()
        return {"object": "search_result", "data": items[:limit], "has_more": len(items) > limit,
                "next_page": None, "url": "/v1/customers/search"}

    @api(app, "/v1/customers/<cid>", ["GET"])
    def retrieve_customer(p: Params, ctx: Ctx, cid: str):
        p.done()
        return get_or_404("customers", "customer", cid)

    @api(app, "/v1/customers/<cid>", ["POST"])
    def update_customer(p: Params, ctx: Ctx, cid: str):
        cust = get_or_404("customers", "customer", cid)
        before = copy.deepcopy(cust)
        for key in ("email", "name", "description", "phone"):
            if p.has(key):
                cust[key] = p.str(key)
        if cust["email"] and "@" not in cust["email"]:
            raise invalid("email", "Invalid email address: " + cust["email"])
        cust["metadata"] = merge_metadata(cust["metadata"], p.metadata())
        inv = p.dict("invoice_settings")
        if inv:
            if inv.has("default_payment_method"):
                dpm = inv.str("default_payment_method")
                if dpm:
                    pm = store().get("payment_methods", dpm)
                    if pm is None or pm["customer"] != cid:
                        raise no_such("PaymentMethod", dpm, param="invoice_settings[default_payment_method]",
                                      status=400)
                cust["invoice_settings"]["default_payment_method"] = dpm
            inv.ignore("custom_fields", "footer", "rendering_options")
            inv.done()
        p.ignore("address", "shipping", "preferred_locales", "tax_exempt", "balance", "invoice_prefix",
                 "tax", "source", "coupon", "promotion_code", "next_invoice_sequence")
        p.done()
        eng().emit_update(ctx, "customer.updated", before, cust)
        return cust

    @api(app, "/v1/customers/<cid>", ["DELETE"])
    def delete_customer(p: Params, ctx: Ctx, cid: str):
        cust = get_or_404("customers", "customer", cid)
        p.done()
        for sub in store().coll("subscriptions").values():
            if sub["customer"] == cid and sub["status"] not in ("canceled", "incomplete_expired"):
                eng().cancel_now(ctx, sub)
        del store().coll("customers")[cid]
        eng().emit(ctx, "customer.deleted", cust)
        return {"id": cid, "object": "customer", "deleted": True}

    @api(app, "/v1/customers/<cid>/payment_methods", ["GET"])
    def list_customer_pms(p: Params, ctx: Ctx, cid: str):
        get_or_404("customers", "customer", cid)
        p.str("type")
        p.ignore("allow_redisplay")
        items = [o for o in newest_first(store().coll("payment_methods")) if o["customer"] == cid]
        p.done()
        return paginate(items, p, f"/v1/customers/{cid}/payment_methods")

    # ------------------------------------------------------------------ payment methods
    @api(app, "/v1/payment_methods", ["GET"])
    def list_pms(p: Params, ctx: Ctx):
        cid = p.str("customer")
        ptype = p.str("type")
        items = newest_first(store().coll("payment_methods"))
        if cid:
            get_or_404("customers", "customer", cid, param="customer", status=400)
            items = [o for o in items if o["customer"] == cid]
        else:
            items = []  # Stripe lists only a customer's (or Treasury) payment methods
        if ptype:
            items = [o for o in items if o["type"] == ptype]
        p.done()
        return paginate(items, p, "/v1/payment_methods")

    @api(app, "/v1/payment_methods/<pmid>", ["GET"])
    def retrieve_pm(p: Params, ctx: Ctx, pmid: str):
        p.done()
        return get_or_404("payment_methods", "payment_method", pmid)

    @api(app, "/v1/payment_methods/<pmid>/detach", ["POST"])
    def detach_pm(p: Params, ctx: Ctx, pmid: str):
        pm = get_or_404("payment_methods", "payment_method", pmid)
        p.done()
        if pm["customer"] is None:
            raise StripeError("The payment method you provided is not attached to a customer so detachment "
                              "is impossible.", code="payment_method_unexpected_state")
        cust = store().get("customers", pm["customer"])
        if cust and cust["invoice_settings"]["default_payment_method"] == pmid:
            eng().set_default_payment_method(ctx, cust, None)
        pm["customer"] = None
        eng().emit(ctx, "payment_method.detached", pm)
        return pm

    # ------------------------------------------------------------------ checkout
    @api(app, "/v1/checkout/sessions", ["POST"])
    def create_checkout_session(p: Params, ctx: Ctx):
        s = store()
        mode = p.str("mode", required=True, choices=["payment", "setup", "subscription"])
        if mode != "subscription":
            raise invalid("mode", "The emulator supports Checkout Sessions in subscription mode only.")
        ui_mode = p.str("ui_mode", choices=["hosted_page", "embedded_page", "elements", "hosted", "embedded", "custom"])
        if ui_mode not in (None, "hosted_page", "hosted"):
            raise invalid("ui_mode", "The emulator supports ui_mode=hosted_page only.")
        customer = p.str("customer")
        email = p.str("customer_email")
        if customer and email:
            raise invalid("customer_email", "You may only specify one of these parameters: customer, customer_email.")
        if customer:
            get_or_404("customers", "customer", customer, param="customer", status=400)
        lines = p.list_of_dicts("line_items", required=True)
        if not lines:
            raise missing_param("line_items")
        stored_lines, amount, currency = [], 0, None
        for i, li in enumerate(lines):
            price_id = li.str("price")
            if price_id is None:
                if li.has("price_data"):
                    raise invalid(f"line_items[{i}][price_data]", "The emulator supports line_items[][price] only.")
                raise missing_param(f"line_items[{i}][price]")
            price = s.get("prices", price_id)
            if price is None:
                raise no_such("price", price_id, param=f"line_items[{i}][price]", status=400)
            if not price["active"]:
                raise invalid(f"line_items[{i}][price]", f"The price specified is inactive. This field only accepts active prices.")
            if price["type"] != "recurring":
                raise invalid(f"line_items[{i}][price]", "You must specify at least one recurring price in "
                              "`subscription` mode when using prices.")
            qty = li.int("quantity", minimum=1)
            if qty is None:
                raise missing_param(f"line_items[{i}][quantity]")
            li.ignore("adjustable_quantity", "tax_rates", "dynamic_tax_rates")
            li.done()
            if currency and price["currency"] != currency:
                raise invalid(f"line_items[{i}][price]", "All prices must use the same currency.")
            currency = price["currency"]
            amount += price["unit_amount"] * qty
            prod = s.get("products", price["product"])
            stored_lines.append(objects.checkout_line_item(new_id("li", 24), price, prod["name"], qty))
        success_url = p.str("success_url")
        cancel_url = p.str("cancel_url")
        for key, url in (("success_url", success_url), ("cancel_url", cancel_url)):
            if url is not None and not (url.startswith("http://") or url.startswith("https://")):
                raise invalid(key, f"Not a valid URL")
        now = s.now()
        expires_at = p.int("expires_at")
        if expires_at is None:
            expires_at = now + 86400
        elif not (now + 1800 <= expires_at <= now + 86400):
            raise invalid("expires_at", "The `expires_at` timestamp must be between 30 minutes and 24 hours "
                          "from Checkout Session creation.")
        sub_data = p.dict("subscription_data")
        stored_sub = {}
        if sub_data:
            stored_sub["metadata"] = sub_data.metadata() or {}
            stored_sub["description"] = sub_data.str("description")
            for key in ("trial_period_days", "trial_end", "billing_cycle_anchor"):
                if sub_data.has(key):
                    raise invalid(f"subscription_data[{key}]", f"subscription_data[{key}] is not supported by the emulator.")
            sub_data.ignore("default_tax_rates", "application_fee_percent", "on_behalf_of",
                            "transfer_data", "proration_behavior", "invoice_settings", "billing_mode",
                            "trial_settings")
            sub_data.done()
        cs_id = "cs_test_" + secrets.token_urlsafe(45).replace("-", "a").replace("_", "b")[:58]
        cs = objects.checkout_session(
            cs_id, now, url=f"{ctx.base_url}/c/pay/{cs_id}", success_url=success_url, cancel_url=cancel_url,
            customer_id=customer, customer_email=email, client_reference_id=p.str("client_reference_id"),
            metadata=p.metadata() or {}, amount=amount, currency=currency or "usd",
            allow_promotion_codes=p.bool("allow_promotion_codes"), expires_at=expires_at, locale=p.str("locale"))
        for key in ("billing_address_collection", "customer_creation", "payment_method_collection",
                    "submit_type"):
            if p.has(key):
                cs[key] = p.str(key)
        p.ignore("automatic_tax", "consent_collection", "custom_fields", "custom_text", "customer_update",
                 "discounts", "invoice_creation", "payment_method_types", "payment_method_options",
                 "phone_number_collection", "tax_id_collection", "saved_payment_method_options",
                 "payment_method_configuration", "shipping_address_collection", "after_expiration",
                 "adaptive_pricing", "branding_settings", "origin_context", "wallet_options",
                 "name_collection", "optional_items", "permissions", "currency")
        p.done()
        s.put("checkout_sessions", cs)
        s.internal("line_items")[cs_id] = stored_lines
        s.internal("sub_data")[cs_id] = stored_sub
        return cs

    @api(app, "/v1/checkout/sessions", ["GET"])
    def list_checkout_sessions(p: Params, ctx: Ctx):
        items = newest_first(store().coll("checkout_sessions"))
        for key in ("customer", "subscription", "status", "payment_intent", "payment_link"):
            value = p.str(key)
            if value:
                items = [o for o in items if o.get(key) == value]
        items = created_filter(p, items)
        p.ignore("customer_details")
        p.done()
        return paginate(items, p, "/v1/checkout/sessions")

    @api(app, "/v1/checkout/sessions/<cs_id>", ["GET"])
    def retrieve_checkout_session(p: Params, ctx: Ctx, cs_id: str):
        p.done()
        return get_or_404("checkout_sessions", "checkout.session", cs_id)

    @api(app, "/v1/checkout/sessions/<cs_id>/line_items", ["GET"])
    def list_checkout_line_items(p: Params, ctx: Ctx, cs_id: str):
        cs = get_or_404("checkout_sessions", "checkout.session", cs_id)
        items = store().internal("line_items").get(cs["id"], [])
        p.done()
        return paginate(list(items), p, f"/v1/checkout/sessions/{cs_id}/line_items")

    @api(app, "/v1/checkout/sessions/<cs_id>/expire", ["POST"])
    def expire_checkout_session(p: Params, ctx: Ctx, cs_id: str):
        cs = get_or_404("checkout_sessions", "checkout.session", cs_id)
        p.done()
        if cs["status"] != "open":
            raise StripeError(f"Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout "
                              f"Session has a status of \"{cs['status']}\".", code="checkout_session_expired"
                              if cs["status"] == "expired" else None, param="session")
        return eng().expire_checkout(ctx, cs)

    # ------------------------------------------------------------------ subscriptions
    @api(app, "/v1/subscriptions", ["GET"])
    def list_subscriptions(p: Params, ctx: Ctx):
        items = newest_first(store().coll("subscriptions"))
        cid = p.str("customer")
        if cid:
            items = [o for o in items if o["customer"] == cid]
        status = p.str("status", choices=["active", "all", "canceled", "ended", "incomplete",
                                          "incomplete_expired", "past_due", "paused", "trialing", "unpaid"])
        if status is None:
            items = [o for o in items if o["status"] not in ("canceled", "incomplete_expired")]
        elif status == "ended":
            items = [o for o in items if o["status"] in ("canceled", "incomplete_expired")]
        elif status != "all":
            items = [o for o in items if o["status"] == status]
        price = p.str("price")
        if price:
            items = [o for o in items if any(i["price"]["id"] == price for i in o["items"]["data"])]
        items = created_filter(p, items)
        p.ignore("collection_method", "current_period_end", "current_period_start", "test_clock", "automatic_tax")
        p.done()
        return paginate(items, p, "/v1/subscriptions")

    @api(app, "/v1/subscriptions/<sub_id>", ["GET"])
    def retrieve_subscription(p: Params, ctx: Ctx, sub_id: str):
        p.done()
        return get_or_404("subscriptions", "subscription", sub_id)

    @api(app, "/v1/subscriptions/<sub_id>", ["POST"])
    def update_subscription(p: Params, ctx: Ctx, sub_id: str):
        s, e = store(), eng()
        sub = get_or_404("subscriptions", "subscription", sub_id)
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise StripeError("A canceled subscription can only update its cancellation_details and metadata.",
                              param=None)
        proration = p.str("proration_behavior", choices=["create_prorations", "always_invoice", "none"]) \
            or "create_prorations"
        anchor = p.str("billing_cycle_anchor", choices=["now", "unchanged"])
        payment_behavior = p.str("payment_behavior", choices=["allow_incomplete", "default_incomplete",
                                                              "error_if_incomplete", "pending_if_incomplete"])
        p.ignore("proration_date", "off_session")
        items = p.list_of_dicts("items")
        changes = []
        if items:
            for i, it in enumerate(items):
                item_id = it.str("id")
                item = None
                if item_id:
                    item = next((x for x in sub["items"]["data"] if x["id"] == item_id), None)
                    if item is None:
                        raise no_such("subscription_item", item_id, param=f"items[{i}][id]", status=400)
                deleted = bool(it.bool("deleted"))
                price_id = it.str("price")
                if price_id:
                    price = s.get("prices", price_id)
                    if price is None:
                        raise no_such("price", price_id, param=f"items[{i}][price]", status=400)
                    if price["type"] != "recurring":
                        raise invalid(f"items[{i}][price]", "The price specified is set to `type=one_time` but "
                                      "this field only accepts prices with `type=recurring`.")
                    if not price["active"]:
                        raise invalid(f"items[{i}][price]", "The price specified is inactive. This field only "
                                      "accepts active prices.")
                elif item is not None:
                    price = item["price"]
                elif not deleted:
                    raise missing_param(f"items[{i}][price]")
                qty = it.int("quantity", minimum=0)
                if qty is None:
                    qty = item["quantity"] if item is not None else 1
                it.ignore("metadata", "tax_rates", "discounts", "billing_thresholds", "price_data")
                it.done()
                if price["currency"] != sub["currency"]:
                    raise invalid(f"items[{i}][price]", "The price's currency must match the subscription's currency.")
                changes.append((item, price, qty, deleted))
        cape = p.bool("cancel_at_period_end")
        cancel_at = p.raw("cancel_at")
        details = p.dict("cancellation_details")
        comment = feedback = None
        if details:
            comment = details.str("comment", empty_ok=True)
            feedback = details.str("feedback", choices=["customer_service", "low_quality", "missing_features",
                                                        "other", "switched_service", "too_complex",
                                                        "too_expensive", "unused"])
            details.done()
        metadata = p.metadata()
        dpm = p.str("default_payment_method") if p.has("default_payment_method") else None
        if dpm:
            pm = s.get("payment_methods", dpm)
            if pm is None or pm["customer"] != sub["customer"]:
                raise no_such("PaymentMethod", dpm, param="default_payment_method", status=400)
        if p.has("description"):
            description = p.str("description")
        p.ignore("pause_collection", "collection_method", "days_until_due", "default_tax_rates", "discounts",
                 "payment_settings", "trial_end", "trial_from_plan", "promotion_code", "invoice_settings",
                 "automatic_tax", "billing_thresholds", "on_behalf_of", "transfer_data",
                 "pending_invoice_item_interval", "application_fee_percent", "default_source")
        p.done()
        if sub["schedule"] and (cape is not None or cancel_at is not None):
            # Stripe: a schedule owns the subscription's end; release the schedule (or update it) instead.
            raise StripeError(f"The subscription is managed by the subscription schedule `{sub['schedule']}`, and "
                              "updating any cancelation behavior directly is not allowed. Please update the "
                              "schedule instead.")

        if changes and payment_behavior == "error_if_incomplete":
            # Stripe refuses the whole update when the immediate payment fails; check before changing anything.
            preview = e.preview(ctx, sub, changes, proration)
            if preview["billing_reason"] == "subscription_update" and \
                    e.would_decline(sub["default_payment_method"] or s.get("customers", sub["customer"])
                                    ["invoice_settings"]["default_payment_method"], preview["amount_due"]):
                raise StripeError("Your card was declined.", status=402, type="card_error", code="card_declined",
                                  decline_code="generic_decline")
            # preview() restored a copy of the state: re-read the objects we hold.
            sub = s.get("subscriptions", sub_id)
            changes = [(next((i for i in sub["items"]["data"] if item and i["id"] == item["id"]), None),
                        price, qty, deleted) for item, price, qty, deleted in changes]
        # Plain field changes first, as one customer.subscription.updated.
        before = copy.deepcopy(sub)
        if metadata is not None:
            sub["metadata"] = merge_metadata(sub["metadata"], metadata)
        if dpm is not None:
            sub["default_payment_method"] = dpm
        if p.has("description"):
            sub["description"] = description
        if p.has("default_payment_method") and dpm is None:
            sub["default_payment_method"] = None
        if before != sub:
            e.emit_update(ctx, "customer.subscription.updated", before, sub)
        if changes:
            e.change_items(ctx, sub, changes, proration, anchor)
        if cancel_at not in (None, ""):
            try:
                when = int(cancel_at)
            except (TypeError, ValueError):
                if cancel_at in ("min_period_end", "max_period_end"):
                    when = e.period(sub)[1]
                else:
                    raise invalid("cancel_at", f"Invalid integer: {cancel_at}")
            if when <= s.now():
                raise invalid("cancel_at", "cancel_at must be in the future.")
            before = copy.deepcopy(sub)
            sub["cancel_at"] = when
            sub["cancel_at_period_end"] = when == e.period(sub)[1]
            sub["canceled_at"] = s.now()
            sub["cancellation_details"]["reason"] = "cancellation_requested"
            e.emit_update(ctx, "customer.subscription.updated", before, sub)
        elif cancel_at == "" and sub["cancel_at"]:
            e.set_cancel_at_period_end(ctx, sub, False)
        if cape is not None or comment is not None or feedback is not None:
            flag = sub["cancel_at_period_end"] if cape is None else cape
            e.set_cancel_at_period_end(ctx, sub, flag, comment=comment, feedback=feedback)
        return sub

    @api(app, "/v1/subscriptions/<sub_id>", ["DELETE"])
    def cancel_subscription(p: Params, ctx: Ctx, sub_id: str):
        sub = get_or_404("subscriptions", "subscription", sub_id)
        details = p.dict("cancellation_details")
        comment = feedback = None
        if details:
            comment = details.str("comment", empty_ok=True)
            feedback = details.str("feedback")
            details.done()
        p.bool("invoice_now")
        p.bool("prorate")
        p.done()
        if sub["status"] == "canceled":
            raise StripeError(f"No such subscription: '{sub_id}'", status=404, code="resource_missing",
                              param="id")
        return eng().cancel_now(ctx, sub, comment=comment, feedback=feedback)

    @api(app, "/v1/subscription_items", ["GET"])
    def list_subscription_items(p: Params, ctx: Ctx):
        sub_id = p.str("subscription", required=True)
        sub = get_or_404("subscriptions", "subscription", sub_id, param="subscription", status=400)
        p.done()
        return paginate(list(sub["items"]["data"]), p, f"/v1/subscription_items?subscription={sub_id}")

    # ------------------------------------------------------------------ invoices
    @api(app, "/v1/invoices", ["GET"])
    def list_invoices(p: Params, ctx: Ctx):
        items = newest_first(store().coll("invoices"))
        cid = p.str("customer")
        if cid:
            items = [o for o in items if o["customer"] == cid]
        sub_id = p.str("subscription")
        if sub_id:
            items = [o for o in items
                     if ((o["parent"] or {}).get("subscription_details") or {}).get("subscription") == sub_id]
        status = p.str("status", choices=["draft", "open", "paid", "uncollectible", "void"])
        if status:
            items = [o for o in items if o["status"] == status]
        items = created_filter(p, items)
        p.ignore("collection_method", "due_date", "customer_account")
        p.done()
        return paginate(items, p, "/v1/invoices")

    @api(app, "/v1/invoices/<in_id>", ["GET"])
    def retrieve_invoice(p: Params, ctx: Ctx, in_id: str):
        p.done()
        return get_or_404("invoices", "invoice", in_id)

    @api(app, "/v1/invoices/<in_id>/lines", ["GET"])
    def list_invoice_lines(p: Params, ctx: Ctx, in_id: str):
        inv = get_or_404("invoices", "invoice", in_id)
        p.done()
        return paginate(list(inv["lines"]["data"]), p, f"/v1/invoices/{in_id}/lines")

    @api(app, "/v1/invoices/<in_id>/pay", ["POST"])
    def pay_invoice(p: Params, ctx: Ctx, in_id: str):
        inv = get_or_404("invoices", "invoice", in_id)
        p.ignore("off_session", "payment_method", "forgive", "paid_out_of_band", "source", "mandate")
        p.done()
        if inv["status"] != "open":
            raise StripeError("Invoice is already paid" if inv["status"] == "paid"
                              else f"You can only pay an open invoice (this one is {inv['status']}).",
                              code="invoice_not_editable" if inv["status"] != "paid" else None)
        store().internal("retries").pop(in_id, None)
        if not eng().retry_invoice(ctx, inv):
            store().save()
            raise StripeError("Your card was declined.", status=402, type="card_error", code="card_declined",
                              decline_code="generic_decline")
        return inv

    @api(app, "/v1/invoices/create_preview", ["POST"])
    def create_invoice_preview(p: Params, ctx: Ctx):
        s = store()
        cid = p.str("customer")
        sub_id = p.str("subscription")
        if not sub_id:
            raise invalid("subscription", "The emulator previews invoices of existing subscriptions only.")
        sub = get_or_404("subscriptions", "subscription", sub_id, param="subscription", status=400)
        if cid and sub["customer"] != cid:
            raise invalid("subscription", f"The subscription {sub_id} does not belong to customer {cid}.")
        details = p.dict("subscription_details")
        changes, proration = [], "create_prorations"
        if details:
            proration = details.str("proration_behavior", choices=["create_prorations", "always_invoice",
                                                                   "none"]) or proration
            for i, it in enumerate(details.list_of_dicts("items") or []):
                item = next((x for x in sub["items"]["data"] if x["id"] == it.str("id")), None)
                if it.has("id") and item is None:
                    raise no_such("subscription_item", it.str("id"),
                                  param=f"subscription_details[items][{i}][id]", status=400)
                price_id = it.str("price")
                price = s.get("prices", price_id) if price_id else (item or {}).get("price")
                if price is None:
                    raise no_such("price", price_id or "", param=f"subscription_details[items][{i}][price]",
                                  status=400)
                qty = it.int("quantity", minimum=0)
                it.ignore("metadata", "tax_rates", "discounts", "price_data", "billing_thresholds")
                it.done()
                changes.append((item, price, qty if qty is not None else (item or {}).get("quantity", 1),
                                bool(it.bool("deleted"))))
            details.ignore("proration_date", "billing_cycle_anchor", "cancel_at_period_end", "cancel_now",
                           "default_tax_rates", "resume_at", "start_date", "trial_end", "cancel_at")
            details.done()
        p.ignore("automatic_tax", "currency", "customer_details", "discounts", "invoice_items", "issuer",
                 "on_behalf_of", "preview_mode", "schedule", "schedule_details")
        p.done()
        return eng().preview(ctx, sub, changes, proration)

    # ------------------------------------------------------------------ subscription schedules
    def _phase_end(price: dict, start: int, iterations: int) -> int:
        rec = price["recurring"]
        return billing.add_interval(start, rec["interval"], rec["interval_count"], iterations)

    @api(app, "/v1/subscription_schedules", ["POST"])
    def create_subscription_schedule(p: Params, ctx: Ctx):
        s = store()
        sub_id = p.str("from_subscription")
        if not sub_id:
            raise invalid("from_subscription", "The emulator creates schedules from_subscription only.")
        sub = get_or_404("subscriptions", "subscription", sub_id, param="from_subscription", status=400)
        if sub["schedule"]:
            raise invalid("from_subscription", f"You cannot migrate a subscription that is already attached to "
                          f"a schedule: `{sub['schedule']}`.")
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise invalid("from_subscription", "You cannot migrate a canceled subscription.")
        p.ignore("metadata")
        p.done()
        start, end = eng().period(sub)
        phase = objects.schedule_phase([(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]],
                                       start, end, sub["currency"])
        sched = objects.subscription_schedule(new_id("sub_sched", 24), s.now(), sub, [phase])
        s.put("subscription_schedules", sched)
        before = copy.deepcopy(sub)
        sub["schedule"] = sched["id"]
        eng().emit(ctx, "subscription_schedule.created", sched)
        eng().emit_update(ctx, "customer.subscription.updated", before, sub)
        return sched

    @api(app, "/v1/subscription_schedules", ["GET"])
    def list_subscription_schedules(p: Params, ctx: Ctx):
        items = newest_first(store().coll("subscription_schedules"))
        cid = p.str("customer")
        if cid:
            items = [o for o in items if o["customer"] == cid]
        p.ignore("scheduled", "released_at", "completed_at", "canceled_at", "created")
        p.done()
        return paginate(items, p, "/v1/subscription_schedules")

    @api(app, "/v1/subscription_schedules/<sched_id>", ["GET"])
    def retrieve_subscription_schedule(p: Params, ctx: Ctx, sched_id: str):
        p.done()
        return get_or_404("subscription_schedules", "subscription_schedule", sched_id)

    @api(app, "/v1/subscription_schedules/<sched_id>", ["POST"])
    def update_subscription_schedule(p: Params, ctx: Ctx, sched_id: str):
        s = store()
        sched = get_or_404("subscription_schedules", "subscription_schedule", sched_id)
        if sched["status"] not in ("active", "not_started"):
            raise StripeError(f"You cannot update a subscription schedule that is {sched['status']}.")
        before = copy.deepcopy(sched)
        end_behavior = p.str("end_behavior", choices=["release", "cancel", "none", "renew"])
        if end_behavior and end_behavior != "release":
            raise invalid("end_behavior", "The emulator supports end_behavior=release only.")
        phases_in = p.list_of_dicts("phases")
        current_start = (sched["current_phase"] or sched["phases"][0])["start_date"]
        if phases_in is not None:
            phases = []
            prev_end = None
            for i, ph in enumerate(phases_in):
                name = f"phases[{i}]"
                items = ph.list_of_dicts("items", required=True)
                specs = []
                for j, it in enumerate(items):
                    price_id = it.str("price", required=True)
                    price = s.get("prices", price_id)
                    if price is None:
                        raise no_such("price", price_id, param=f"{name}[items][{j}][price]", status=400)
                    specs.append((price_id, it.int("quantity", minimum=1) or 1))
                    it.ignore("metadata", "tax_rates", "discounts", "billing_thresholds")
                    it.done()
                raw_start = ph.raw("start_date")
                if raw_start == "now":
                    start = s.now()
                elif raw_start not in (None, ""):
                    start = ph.int("start_date")
                elif prev_end is not None:
                    start = prev_end
                else:
                    start = current_start
                # Past phases may be left out: the first phase given is the current one, its start unchanged.
                if i == 0 and start != current_start and sched["status"] == "active":
                    raise invalid(f"{name}[start_date]", "You can not modify the start date of the current phase.")
                if ph.has("end_date"):
                    end = ph.int("end_date", required=True)
                else:
                    end = _phase_end(s.get("prices", specs[0][0]), start, ph.int("iterations", minimum=1) or 1)
                if end <= start:
                    raise invalid(f"{name}[end_date]", "The end date must be after the start date.")
                prorate = ph.str("proration_behavior", choices=["create_prorations", "always_invoice", "none"])
                ph.ignore("metadata", "default_tax_rates", "billing_cycle_anchor", "collection_method",
                          "default_payment_method", "description", "invoice_settings", "trial_end",
                          "automatic_tax", "discounts", "add_invoice_items", "currency")
                ph.done()
                phases.append(objects.schedule_phase(specs, start, end, proration_behavior=prorate or "create_prorations"))
                prev_end = end
            if not phases:
                raise missing_param("phases")
            sched["phases"] = phases
            sched["current_phase"] = {"start_date": phases[0]["start_date"], "end_date": phases[0]["end_date"]}
        sched["metadata"] = merge_metadata(sched["metadata"], p.metadata())
        p.ignore("default_settings", "proration_behavior")
        p.done()
        eng().emit_update(ctx, "subscription_schedule.updated", before, sched)
        return sched

    @api(app, "/v1/subscription_schedules/<sched_id>/release", ["POST"])
    def release_subscription_schedule(p: Params, ctx: Ctx, sched_id: str):
        s = store()
        sched = get_or_404("subscription_schedules", "subscription_schedule", sched_id)
        p.ignore("preserve_cancel_date")
        p.done()
        if sched["status"] not in ("active", "not_started"):
            raise StripeError(f"You cannot release a subscription schedule that is currently in the "
                              f"`{sched['status']}` status.")
        sub = s.get("subscriptions", sched["subscription"])
        sched.update({"status": "released", "released_at": s.now(), "released_subscription": sub["id"],
                      "current_phase": None})
        before = copy.deepcopy(sub)
        sub["schedule"] = None
        eng().emit(ctx, "subscription_schedule.released", sched)
        eng().emit_update(ctx, "customer.subscription.updated", before, sub)
        return sched

    # ------------------------------------------------------------------ billing portal
    @api(app, "/v1/billing_portal/sessions", ["POST"])
    def create_portal_session(p: Params, ctx: Ctx):
        s = store()
        cid = p.str("customer", required=True)
        get_or_404("customers", "customer", cid, param="customer", status=400)
        return_url = p.str("return_url")
        if return_url is not None and not return_url.startswith(("http://", "https://")):
            raise invalid("return_url", "Not a valid URL")
        flow = None
        fd = p.dict("flow_data")
        if fd:
            ftype = fd.str("type", required=True, choices=["payment_method_update", "subscription_cancel",
                                                           "subscription_update", "subscription_update_confirm"])
            flow = {
                "after_completion": {"hosted_confirmation": None, "redirect": None, "type": "portal_homepage"},
                "subscription_cancel": None,
                "subscription_update": None,
                "subscription_update_confirm": None,
                "type": ftype,
            }
            ac = fd.dict("after_completion")
            if ac:
                ac_type = ac.str("type", required=True, choices=["hosted_confirmation", "portal_homepage", "redirect"])
                flow["after_completion"]["type"] = ac_type
                red = ac.dict("redirect")
                if ac_type == "redirect":
                    if not red:
                        raise missing_param("flow_data[after_completion][redirect]")
                    flow["after_completion"]["redirect"] = {"return_url": red.str("return_url", required=True)}
                    red.done()
                hc = ac.dict("hosted_confirmation")
                if ac_type == "hosted_confirmation":
                    flow["after_completion"]["hosted_confirmation"] = {
                        "custom_message": hc.str("custom_message") if hc else None}
                    if hc:
                        hc.done()
                ac.done()
            if ftype != "payment_method_update":
                section = fd.dict(ftype, required=True)
                sub_id = section.str("subscription", required=True)
                sub = s.get("subscriptions", sub_id)
                if sub is None or sub["customer"] != cid:
                    raise no_such("subscription", sub_id, param=f"flow_data[{ftype}][subscription]", status=400)
                if sub["status"] == "canceled":
                    raise invalid(f"flow_data[{ftype}][subscription]", "The subscription is canceled.")
                detail: dict = {"subscription": sub_id}
                if ftype == "subscription_cancel":
                    detail["retention"] = None
                    section.ignore("retention")
                if ftype == "subscription_update_confirm":
                    its = section.list_of_dicts("items", required=True)
                    detail["items"] = [{"id": it.str("id", required=True), "price": it.str("price"),
                                        "quantity": it.int("quantity")} for it in its]
                    detail["discounts"] = None
                    section.ignore("discounts")
                section.done()
                flow[ftype] = detail
            fd.done()
        configuration = p.str("configuration") or "bpc_emulator_default"
        bps_id = new_id("bps", 24)
        sess = objects.portal_session(bps_id, s.now(), customer_id=cid, return_url=return_url,
                                      url=f"{ctx.base_url}/p/session/{bps_id}", flow=flow,
                                      locale=p.str("locale"), configuration=configuration)
        p.ignore("on_behalf_of")
        p.done()
        s.put("portal_sessions", sess)
        return sess

    @api(app, "/v1/billing_portal/configurations", ["GET"])
    def list_portal_configurations(p: Params, ctx: Ctx):
        """One default, active configuration (the Dashboard's settings are not emulated)."""
        p.ignore("active", "is_default")
        p.done()
        return paginate([objects.portal_configuration(store().now())], p, "/v1/billing_portal/configurations")

    @api(app, "/v1/billing_portal/configurations/<bpc_id>", ["GET"])
    def retrieve_portal_configuration(p: Params, ctx: Ctx, bpc_id: str):
        p.done()
        if bpc_id != "bpc_emulator_default":
            raise no_such("billing_portal.configuration", bpc_id)
        return objects.portal_configuration(store().now())

    # ------------------------------------------------------------------ events
    @api(app, "/v1/events", ["GET"])
    def list_events(p: Params, ctx: Ctx):
        items = newest_first(store().coll("events"))
        etype = p.str("type")
        if etype:
            if etype.endswith("*"):
                items = [o for o in items if o["type"].startswith(etype[:-1])]
            else:
                items = [o for o in items if o["type"] == etype]
        types = p.list("types")
        if types:
            items = [o for o in items if o["type"] in types]
        items = created_filter(p, items)
        p.ignore("delivery_success")
        p.done()
        return paginate(items, p, "/v1/events")

    @api(app, "/v1/events/<evt_id>", ["GET"])
    def retrieve_event(p: Params, ctx: Ctx, evt_id: str):
        p.done()
        return get_or_404("events", "event", evt_id)

    # ------------------------------------------------------------------ webhook endpoints
    def _enabled_events(p: Params) -> list:
        events = p.list("enabled_events", required=True)
        if not events:
            raise missing_param("enabled_events")
        for i, ev in enumerate(events):
            if not isinstance(ev, str) or not ev:
                raise invalid(f"enabled_events[{i}]", f"Invalid enabled_events[{i}]")
        return events

    def _public_endpoint(we: dict) -> dict:
        out = copy.deepcopy(we)
        out["secret"] = None  # only returned at creation
        return out

    @api(app, "/v1/webhook_endpoints", ["POST"])
    def create_webhook_endpoint(p: Params, ctx: Ctx):
        url = p.str("url", required=True)
        if not url.startswith(("http://", "https://")):
            raise invalid("url", "Invalid URL: URL must be publicly accessible and use http:// or https://")
        events = _enabled_events(p)
        secret = "whsec_" + secrets.token_hex(24)
        we = objects.webhook_endpoint(new_id("we", 24), store().now(), url=url, enabled_events=events,
                                      secret=secret, description=p.str("description"),
                                      metadata=p.metadata() or {}, api_version=p.str("api_version"))
        p.ignore("connect")
        p.done()
        store().internal("secrets")[we["id"]] = secret
        store().put("webhook_endpoints", _public_endpoint(we))
        return we

    @api(app, "/v1/webhook_endpoints", ["GET"])
    def list_webhook_endpoints(p: Params, ctx: Ctx):
        p.done()
        return paginate(newest_first(store().coll("webhook_endpoints")), p, "/v1/webhook_endpoints")

    @api(app, "/v1/webhook_endpoints/<we_id>", ["GET"])
    def retrieve_webhook_endpoint(p: Params, ctx: Ctx, we_id: str):
        p.done()
        return get_or_404("webhook_endpoints", "webhook_endpoint", we_id)

    @api(app, "/v1/webhook_endpoints/<we_id>", ["POST"])
    def update_webhook_endpoint(p: Params, ctx: Ctx, we_id: str):
        we = get_or_404("webhook_endpoints", "webhook_endpoint", we_id)
        if p.has("url"):
            we["url"] = p.str("url", required=True)
        if p.has("enabled_events"):
            we["enabled_events"] = _enabled_events(p)
        if p.has("disabled"):
            we["status"] = "disabled" if p.bool("disabled") else "enabled"
        if p.has("description"):
            we["description"] = p.str("description")
        we["metadata"] = merge_metadata(we["metadata"], p.metadata())
        p.done()
        return we

    @api(app, "/v1/webhook_endpoints/<we_id>", ["DELETE"])
    def delete_webhook_endpoint(p: Params, ctx: Ctx, we_id: str):
        get_or_404("webhook_endpoints", "webhook_endpoint", we_id)
        p.done()
        del store().coll("webhook_endpoints")[we_id]
        store().internal("secrets").pop(we_id, None)
        return {"id": we_id, "object": "webhook_endpoint", "deleted": True}


__all__ = ["Emulator", "create_app", "billing"]
