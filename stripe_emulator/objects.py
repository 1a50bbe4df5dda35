"""Builders producing Stripe-shaped dicts for API version 2026-10-28.endive.

Shapes are copied from Stripe's example objects (see
/work/shared/fixtures/stripe-docs) and completed with every field that
stripe-python 16.1.0 declares on the class, null where Stripe sends null, so
code written against the emulator also works against Stripe. Keep the field
order close to Stripe's; it makes diffs against real payloads readable.
"""

from __future__ import annotations

import copy
import re
from typing import Any

API_VERSION = "2026-10-28.endive"
ACCOUNT_NAME = "Smart Strategies Builder (emulator)"


def unsupported_version(requested: str) -> str:
    """Why the emulator refuses another API version: it renders one version's shapes only."""
    return (
        f"The Stripe emulator speaks API version {API_VERSION} only and cannot render {requested}. "
        f"Use {API_VERSION} (or leave the version out)."
    )


INTERVAL_NAMES = {"day": "day", "week": "week", "month": "month", "year": "year"}


def list_object(data: list, url: str, has_more: bool = False) -> dict:
    """A list as a list endpoint answers it (``GET /v1/customers``...): no ``total_count``.

    A list embedded in an object (``subscription.items``, ``invoice.lines``, ``invoice.payments``, an expanded
    ``line_items``) also carries ``total_count`` in Stripe's answers and webhooks: :func:`count_sublists`
    adds it on the way out, so it always matches the data however the stored list changed."""
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def count_sublists(node: Any, root: bool = True) -> Any:
    """Set ``total_count`` on every list object below ``node`` (not on ``node`` itself: a list endpoint's answer
    has none), in place; answers ``node``. The emulator embeds whole lists, so the count is ``len(data)``."""
    if isinstance(node, dict):
        if node.get("object") == "list" and isinstance(node.get("data"), list) and not root:
            url = node.pop("url", None)
            node["total_count"] = len(node["data"])
            node["url"] = url  # Stripe's order: object, data, has_more, total_count, url
        for value in node.values():
            count_sublists(value, root=False)
    elif isinstance(node, list):
        for item in node:
            count_sublists(item, root=False)
    return node


#: The fields holding an address of the emulator's own hosted pages, by the kind of object they are on. They are kept
#: as paths (``/i/in_…``) and made absolute on the emulator's current public URL whenever served (API answers,
#: webhooks, pages: :func:`public_urls`), so every address follows a restart on another port or ``--public-url``.
OWN_URL_FIELDS = {
    "invoice": ("hosted_invoice_url", "invoice_pdf"),
    "checkout.session": ("url",),
    "billing_portal.session": ("url",),
}
_OWN_URL_KEYS = frozenset(key for keys in OWN_URL_FIELDS.values() for key in keys)
#: A hosted page's path: an invoice (and its PDF), a Checkout page, a portal session.
_OWN_PATH = r"/(?:i/in_\w+(?:/pdf)?|c/pay/cs_\w+|p/session/bps_\w+)"
_STORED_PATH = re.compile(_OWN_PATH)
#: The same as an older emulator stored it: absolute, on the public URL of its day (which may have a path).
_ABSOLUTE_OWN_URL = re.compile(r"https?://[^/?#\s]+(?:/[^?#\s]*?)?(" + _OWN_PATH + ")")


def public_urls(node: Any, base: str) -> Any:
    """Every stored hosted-page path below ``node`` (see OWN_URL_FIELDS, previous attributes included) as an address on
    ``base``, the emulator's public URL, in place; answers ``node``. A list's ``url`` (``/v1/…``) stays a path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if type(value) is str:
                if key in _OWN_URL_KEYS and _STORED_PATH.fullmatch(value):
                    node[key] = base + value
            elif isinstance(value, (dict, list)):
                public_urls(value, base)
    elif isinstance(node, list):
        for item in node:
            public_urls(item, base)
    return node


def stored_paths(obj: dict, kind: str | None = None) -> None:
    """An object of ``kind`` (its own ``object`` by default) saved by an older emulator, which stored its hosted pages'
    addresses absolute: each as its path (in place). An event's object and previous attributes are seen to too."""
    kind = kind or obj.get("object")
    if kind == "event":
        data = obj.get("data") or {}
        inner = data.get("object")
        if isinstance(inner, dict):
            stored_paths(inner)
            if isinstance(data.get("previous_attributes"), dict):
                stored_paths(data["previous_attributes"], inner.get("object"))
        return
    for key in OWN_URL_FIELDS.get(kind or "", ()):
        value = obj.get(key)
        if type(value) is str:
            match = _ABSOLUTE_OWN_URL.fullmatch(value)
            if match:
                obj[key] = match.group(1)


#: The sign of a negative amount on pages and PDFs: U+2212, before the currency (``−$49.99``).
MINUS = "\u2212"


def money(amount: int, currency: str = "usd") -> str:
    """Cents as a person reads them: ``$19.99``, ``−$49.99``, ``EUR 5.00``."""
    sign = MINUS if amount < 0 else ""
    symbol = "$" if currency == "usd" else currency.upper() + " "
    return f"{sign}{symbol}{abs(amount) / 100:,.2f}"


# ---------------------------------------------------------------- account
ACCOUNT_ID = "acct_emulator000000"


def account(created: int) -> dict:
    """The account the API key belongs to (``GET /v1/account``): a US standard account, fully enabled."""
    return {
        "id": ACCOUNT_ID,
        "object": "account",
        "business_profile": {
            "annual_revenue": None,
            "estimated_worker_count": None,
            "mcc": None,
            "minority_owned_business_designation": None,
            "monthly_estimated_revenue": None,
            "name": ACCOUNT_NAME,
            "product_description": None,
            "specified_commercial_transactions_act_url": None,
            "support_address": None,
            "support_email": None,
            "support_phone": None,
            "support_url": None,
            "url": None,
        },
        "business_type": None,
        "capabilities": None,
        "charges_enabled": True,
        "company": None,
        "controller": None,
        "country": "US",
        "created": created,
        "default_currency": "usd",
        "details_submitted": True,
        "email": None,
        "external_accounts": None,
        "future_requirements": None,
        "groups": None,
        "individual": None,
        "metadata": {},
        "payouts_enabled": True,
        "requirements": None,
        "settings": None,
        "tos_acceptance": None,
        "type": "standard",
    }


# ---------------------------------------------------------------- catalog
def product(
    pid: str,
    name: str,
    created: int,
    *,
    description: str | None = None,
    metadata: dict | None = None,
    active: bool = True,
) -> dict:
    return {
        "id": pid,
        "object": "product",
        "active": active,
        "created": created,
        "default_price": None,
        "description": description,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": dict(metadata or {}),
        "name": name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "tax_details": None,
        "type": "service",
        "unit_label": None,
        "updated": created,
        "url": None,
    }


def price(
    pid: str,
    product_id: str,
    unit_amount: int,
    created: int,
    *,
    currency: str = "usd",
    interval: str | None = None,
    interval_count: int = 1,
    lookup_key: str | None = None,
    nickname: str | None = None,
    metadata: dict | None = None,
    active: bool = True,
) -> dict:
    recurring = None
    if interval:
        recurring = {
            "interval": interval,
            "interval_count": interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
    return {
        "id": pid,
        "object": "price",
        "active": active,
        "billing_scheme": "per_unit",
        "created": created,
        "currency": currency,
        "currency_options": None,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": dict(metadata or {}),
        "nickname": nickname,
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": "unspecified",
        "tiers": None,
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if interval else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def plan_from_price(p: dict) -> dict:
    """The legacy ``plan`` object Stripe still embeds in subscription items."""
    rec = p.get("recurring") or {}
    return {
        "id": p["id"],
        "object": "plan",
        "active": p["active"],
        "amount": p["unit_amount"],
        "amount_decimal": p["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": p["created"],
        "currency": p["currency"],
        "interval": rec.get("interval"),
        "interval_count": rec.get("interval_count", 1),
        "livemode": False,
        "metadata": dict(p["metadata"]),
        "meter": None,
        "nickname": p["nickname"],
        "product": p["product"],
        "tiers": None,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


# ---------------------------------------------------------------- customers
def customer(
    cid: str,
    created: int,
    *,
    email: str | None = None,
    name: str | None = None,
    description: str | None = None,
    phone: str | None = None,
    metadata: dict | None = None,
    invoice_prefix: str = "",
) -> dict:
    return {
        "id": cid,
        "object": "customer",
        "address": None,
        "balance": 0,
        "business_name": None,
        "cash_balance": None,
        "created": created,
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": description,
        "discount": None,
        "email": email,
        "individual_name": None,
        "invoice_credit_balance": None,
        "invoice_prefix": invoice_prefix,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": dict(metadata or {}),
        "name": name,
        "next_invoice_sequence": 1,
        "phone": phone,
        "preferred_locales": [],
        "shipping": None,
        "sources": None,
        "subscriptions": None,
        "tax": None,
        "tax_exempt": "none",
        "tax_ids": None,
        "test_clock": None,
    }


PAYMENT_METHOD_TYPES_NULL = (
    "acss_debit affirm afterpay_clearpay alipay alma amazon_pay au_becs_debit bacs_debit bancontact "
    "billie bizum blik boleto card_present cashapp crypto custom customer_balance eps fpx giropay grabpay "
    "ideal interac_present kakao_pay klarna konbini kr_card link mb_way mobilepay multibanco naver_pay "
    "nz_bank_account oxxo p24 pay_by_bank payco paynow paypal paypay payto pix promptpay revolut_pay "
    "samsung_pay satispay scalapay sepa_debit sequra sofort sunbit swish twint upi us_bank_account "
    "wechat_pay zip"
).split()


def payment_method(
    pmid: str,
    created: int,
    *,
    brand: str,
    last4: str,
    exp_month: int,
    exp_year: int,
    fingerprint: str,
    name: str | None = None,
    email: str | None = None,
    customer_id: str | None = None,
    funding: str = "credit",
) -> dict:
    obj: dict[str, Any] = {
        "id": pmid,
        "object": "payment_method",
        "allow_redisplay": "always",
        "billing_details": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": email,
            "name": name,
            "phone": None,
            "tax_id": None,
        },
        "card": {
            "brand": brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": "US",
            "description": None,
            "display_brand": brand,
            "exp_month": exp_month,
            "exp_year": exp_year,
            "fingerprint": fingerprint,
            "funding": funding,
            "generated_from": None,
            "iin": None,
            "issuer": None,
            "last4": last4,
            "networks": {"available": [brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": created,
        "customer": customer_id,
        "customer_account": None,
        "livemode": False,
        "metadata": {},
        "radar_options": {"session": None},
        "type": "card",
    }
    for key in PAYMENT_METHOD_TYPES_NULL:
        obj[key] = None
    return obj


# ---------------------------------------------------------------- subscriptions
def subscription_item(
    si_id: str,
    sub_id: str,
    p: dict,
    created: int,
    period_start: int,
    period_end: int,
    quantity: int = 1,
    metadata: dict | None = None,
) -> dict:
    return {
        "id": si_id,
        "object": "subscription_item",
        "billed_until": period_end,
        "billing_thresholds": None,
        "created": created,
        "current_period_end": period_end,
        "current_period_start": period_start,
        "current_trial": None,
        "discounts": [],
        "metadata": dict(metadata or {}),
        "plan": plan_from_price(p),
        "price": dict(p),
        "quantity": quantity,
        "subscription": sub_id,
        "tax_rates": [],
    }


def subscription(
    sub_id: str,
    customer_id: str,
    created: int,
    items: list,
    *,
    metadata: dict | None = None,
    default_payment_method: str | None = None,
    currency: str = "usd",
    description: str | None = None,
) -> dict:
    return {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": created,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": {"proration_discounts": "included"}, "type": "flexible", "updated_at": created},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "feedback_option": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer_id,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": {"account": None, "type": "self"},
        },
        "items": list_object(items, f"/v1/subscription_items?subscription={sub_id}"),
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": dict(metadata or {}),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "presentment_details": None,
        "schedule": None,
        "start_date": created,
        "status": "active",
        "status_details": None,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"billing_cycle_anchor": None, "missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


# ---------------------------------------------------------------- invoices
def invoice_line(
    il_id: str,
    invoice_id: str,
    *,
    amount: int,
    currency: str,
    description: str,
    price_obj: dict,
    quantity: int,
    period_start: int,
    period_end: int,
    sub_id: str | None,
    si_id: str | None,
    proration: bool = False,
) -> dict:
    return {
        "id": il_id,
        "object": "line_item",
        "amount": amount,
        "currency": currency,
        "description": description,
        "discount_amounts": [],
        "discountable": not proration,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": sub_id,
                "subscription_item": si_id,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
            "type": "price_details",
            "unit_amount_decimal": str(price_obj["unit_amount"]),
        },
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "subscription": sub_id,
        "subtotal": amount,
        "taxes": [],
    }


# Invoice fields the emulator never varies (no taxes, discounts, shipping, credit notes or Connect).
_INVOICE_CONSTANTS: dict[str, Any] = {
    "account_country": "US",
    "account_name": ACCOUNT_NAME,
    "account_tax_ids": None,
    "amount_overpaid": 0,
    "amount_paid": 0,
    "amount_paid_off_stripe": 0,
    "amount_shipping": 0,
    "application": None,
    "attempt_count": 0,
    "attempted": False,
    "auto_advance": True,
    "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None, "status": None},
    "automatically_finalizes_at": None,
    "collection_method": "charge_automatically",
    "confirmation_secret": None,
    "custom_fields": None,
    "customer_account": None,
    "customer_shipping": None,
    "customer_tax_exempt": "none",
    "customer_tax_ids": [],
    "default_payment_method": None,
    "default_source": None,
    "default_tax_rates": [],
    "description": None,
    "discounts": [],
    "due_date": None,
    "footer": None,
    "from_invoice": None,
    "issuer": {"account": None, "type": "self"},
    "last_finalization_error": None,
    "latest_revision": None,
    "livemode": False,
    "metadata": {},
    "next_payment_attempt": None,
    "on_behalf_of": None,
    "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
    "post_payment_credit_notes_amount": 0,
    "pre_payment_credit_notes_amount": 0,
    "receipt_number": None,
    "rendering": None,
    "shipping_cost": None,
    "shipping_details": None,
    "statement_descriptor": None,
    "status": "draft",
    "status_details": None,
    "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
    "test_clock": None,
    "threshold_reason": None,
    "total_discount_amounts": [],
    "total_pretax_credit_amounts": [],
    "total_taxes": [],
}


def _invoice_parent(sub: dict | None) -> dict | None:
    """API 2026-10-28: the invoice's subscription lives under ``parent.subscription_details``."""
    if not sub:
        return None
    return {
        "quote_details": None,
        "subscription_details": {
            "metadata": dict(sub["metadata"]),
            "subscription": sub["id"],
            "subscription_proration_date": None,
        },
        "type": "subscription_details",
    }


def invoice(
    in_id: str,
    cust: dict,
    created: int,
    *,
    number: str | None,
    billing_reason: str,
    currency: str,
    lines: list,
    sub: dict | None,
    period_start: int,
    period_end: int,
    hosted_invoice_url: str,
    invoice_pdf: str,
    starting_balance: int = 0,
) -> dict:
    """A draft invoice over ``lines``; the customer's credit (negative ``starting_balance``) is applied."""
    total = sum(line["amount"] for line in lines)
    applied = total + starting_balance
    amount_due = max(applied, 0)
    fields = copy.deepcopy(_INVOICE_CONSTANTS)
    fields.update(
        {
            "amount_due": amount_due,
            "amount_remaining": amount_due,
            "billing_reason": billing_reason,
            "created": created,
            "currency": currency,
            "customer": cust["id"],
            "customer_address": cust.get("address"),
            "customer_email": cust.get("email"),
            "customer_name": cust.get("name"),
            "customer_phone": cust.get("phone"),
            "effective_at": created,
            "ending_balance": min(applied, 0),
            "hosted_invoice_url": hosted_invoice_url,
            "invoice_pdf": invoice_pdf,
            "lines": list_object(lines, f"/v1/invoices/{in_id}/lines"),
            "number": number,
            "parent": _invoice_parent(sub),
            "payments": list_object([], "/v1/invoice_payments"),
            "period_end": period_end,
            "period_start": period_start,
            "starting_balance": starting_balance,
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "total": total,
            "total_excluding_tax": total,
            "webhooks_delivered_at": created,
        }
    )
    return {"id": in_id, "object": "invoice", **dict(sorted(fields.items()))}


def invoice_payment(
    inpay_id: str, invoice_id: str, amount: int, currency: str, created: int, payment_intent: str, paid: bool
) -> dict:
    return {
        "id": inpay_id,
        "object": "invoice_payment",
        "amount_paid": amount if paid else None,
        "amount_requested": amount,
        "created": created,
        "currency": currency,
        "invoice": invoice_id,
        "is_default": True,
        "livemode": False,
        "payment": {"charge": None, "payment_intent": payment_intent, "payment_record": None, "type": "payment_intent"},
        "status": "paid" if paid else "open",
        "status_transitions": {"canceled_at": None, "paid_at": created if paid else None},
    }


# ---------------------------------------------------------------- checkout
CHECKOUT_PMO_TYPES = (
    "acss_debit affirm afterpay_clearpay alipay alma amazon_pay au_becs_debit bacs_debit bancontact billie "
    "boleto cashapp customer_balance eps fpx giropay grabpay ideal kakao_pay klarna konbini kr_card link "
    "mobilepay multibanco naver_pay oxxo p24 payco paynow paypal payto pix revolut_pay samsung_pay satispay "
    "scalapay sepa_debit sequra sofort sunbit swish twint upi us_bank_account wechat_pay"
).split()


def checkout_payment_method_options() -> dict:
    """A card-only session's ``payment_method_options``: card settings, every other method null."""
    options: dict[str, Any] = {key: None for key in CHECKOUT_PMO_TYPES}
    options["card"] = {
        "capture_method": None,
        "installments": None,
        "request_extended_authorization": None,
        "request_incremental_authorization": None,
        "request_multicapture": None,
        "request_overcapture": None,
        "request_three_d_secure": "automatic",
        "restrictions": None,
        "setup_future_usage": None,
        "statement_descriptor_suffix_kana": None,
        "statement_descriptor_suffix_kanji": None,
    }
    return dict(sorted(options.items()))


#: Every field of a new Checkout Session in the library's order; the ones `checkout_session` sets are None here.
_CHECKOUT_SESSION_FIELDS: dict[str, Any] = {
    "id": None,
    "object": "checkout.session",
    "adaptive_pricing": None,
    "after_expiration": None,
    "allow_promotion_codes": None,
    "allowed_payment_method_types": None,
    "amount_subtotal": None,
    "amount_total": None,
    "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
    "billing_address_collection": None,
    "branding_settings": None,
    "cancel_url": None,
    "client_reference_id": None,
    "client_secret": None,
    "collected_information": None,
    "consent": None,
    "consent_collection": None,
    "created": None,
    "currency": None,
    "currency_conversion": None,
    "custom_fields": [],
    "custom_text": {
        "after_submit": None,
        "shipping_address": None,
        "submit": None,
        "terms_of_service_acceptance": None,
    },
    "customer": None,
    "customer_account": None,
    "customer_creation": None,
    "customer_details": None,
    "customer_email": None,
    "discounts": [],
    "excluded_payment_method_types": None,
    "expires_at": None,
    "integration_identifier": None,
    "invoice": None,
    "invoice_creation": None,
    "livemode": False,
    "locale": None,
    "managed_payments": None,
    "metadata": None,
    "mode": "subscription",
    "name_collection": None,
    "optional_items": None,
    "origin_context": None,
    "payment_intent": None,
    "payment_link": None,
    "payment_method_collection": "always",
    "payment_method_configuration_details": None,
    "payment_method_options": None,
    "payment_method_types": ["card"],
    "payment_status": "unpaid",
    "permissions": None,
    "phone_number_collection": {"enabled": False},
    "presentment_details": None,
    "recovered_from": None,
    "redirect_on_completion": None,
    "return_url": None,
    "saved_payment_method_options": None,
    "setup_intent": None,
    "shipping_address_collection": None,
    "shipping_cost": None,
    "shipping_options": [],
    "status": "open",
    "submit_type": None,
    "subscription": None,
    "success_url": None,
    "tax_id_collection": None,
    "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0, "breakdown": None},
    "ui_mode": "hosted_page",
    "url": None,
    "wallet_options": None,
}


def checkout_session(
    cs_id: str,
    created: int,
    *,
    url: str,
    success_url: str | None,
    cancel_url: str | None,
    customer_id: str | None,
    customer_email: str | None,
    client_reference_id: str | None,
    metadata: dict,
    amount: int,
    currency: str,
    allow_promotion_codes: bool | None,
    expires_at: int,
    locale: str | None,
) -> dict:
    """A new, open Checkout Session in subscription mode (hosted page)."""
    session = copy.deepcopy(_CHECKOUT_SESSION_FIELDS)
    session.update(
        {
            "id": cs_id,
            "allow_promotion_codes": allow_promotion_codes,
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": cancel_url,
            "client_reference_id": client_reference_id,
            "created": created,
            "currency": currency,
            "customer": customer_id,
            "customer_creation": None if customer_id else "always",
            "customer_email": customer_email,
            "expires_at": expires_at,
            "locale": locale,
            "metadata": dict(metadata),
            "payment_method_options": checkout_payment_method_options(),
            "success_url": success_url,
            "url": url,
        }
    )
    return session


def checkout_line_item(li_id: str, p: dict, product_name: str, quantity: int) -> dict:
    """An item of ``checkout.session.line_items`` (Stripe's ``item`` object)."""
    amount = p["unit_amount"] * quantity
    return {
        "id": li_id,
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": p["currency"],
        "adjustable_quantity": None,
        "description": product_name,
        "discounts": [],
        "metadata": {},
        "price": dict(p),
        "quantity": quantity,
        "taxes": [],
    }


def portal_session(
    bps_id: str,
    created: int,
    *,
    customer_id: str,
    return_url: str | None,
    url: str,
    flow: dict | None,
    locale: str | None,
    configuration: str,
) -> dict:
    return {
        "id": bps_id,
        "object": "billing_portal.session",
        "after_expiration": None,
        "configuration": configuration,
        "created": created,
        "customer": customer_id,
        "customer_account": None,
        "flow": flow,
        "livemode": False,
        "locale": locale,
        "on_behalf_of": None,
        "return_url": return_url,
        "url": url,
    }


DEFAULT_PORTAL_CONFIGURATION = "bpc_emulator_default"


def portal_product(product_id: str, prices: list) -> dict:
    """An entry of ``features.subscription_update.products``: the prices of a product one may switch to."""
    return {
        "adjustable_quantity": {"enabled": False, "maximum": None, "minimum": 1},
        "prices": list(prices),
        "product": product_id,
    }


def portal_features(products: list, reasons: bool = False) -> dict:
    """Features of a portal configuration: billing details, invoices and the card on, switching among
    ``products`` (see :func:`portal_product`) and cancelling at period end, asking why when ``reasons``."""
    return {
        "customer_update": {"allowed_updates": ["address", "email", "name"], "enabled": True},
        "invoice_history": {"enabled": True},
        "payment_method_update": {"enabled": True, "payment_method_configuration": None},
        "subscription_cancel": {
            "cancellation_reason": {
                "enabled": reasons,
                "feedback_options": None,
                "options": ["too_expensive", "missing_features", "switched_service", "unused", "other"],
            },
            "enabled": True,
            "mode": "at_period_end",
            "proration_behavior": "none",
        },
        "subscription_pause": {"duration": {"interval_options": [], "type": "indefinite"}, "enabled": False},
        "subscription_update": {
            "billing_cycle_anchor": None,
            "default_allowed_updates": ["price"],
            "enabled": bool(products),
            "products": products,
            "proration_behavior": "create_prorations",
            "schedule_at_period_end": {"conditions": []},
            "trial_update_behavior": "continue_trial",
        },
    }


def portal_configuration(
    bpc_id: str,
    created: int,
    features: dict,
    *,
    is_default: bool = False,
    name: str | None = None,
    metadata: dict | None = None,
    default_return_url: str | None = None,
) -> dict:
    """A Customer Portal configuration: what customers may do in the hosted portal."""
    return {
        "id": bpc_id,
        "object": "billing_portal.configuration",
        "active": True,
        "application": None,
        "business_profile": {"headline": None, "privacy_policy_url": None, "terms_of_service_url": None},
        "created": created,
        "default_return_url": default_return_url,
        "features": features,
        "is_default": is_default,
        "livemode": False,
        "login_page": {"enabled": False, "url": None},
        "metadata": dict(metadata or {}),
        "name": name,
        "updated": created,
    }


def event(
    evt_id: str,
    created: int,
    etype: str,
    obj: dict,
    previous_attributes: dict | None,
    request_id: str | None,
    idempotency_key: str | None,
) -> dict:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": evt_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": etype,
    }


def webhook_endpoint(
    we_id: str,
    created: int,
    *,
    url: str,
    enabled_events: list,
    secret: str,
    description: str | None,
    metadata: dict,
    api_version: str | None,
) -> dict:
    return {
        "id": we_id,
        "object": "webhook_endpoint",
        "api_version": api_version,
        "application": None,
        "created": created,
        "description": description,
        "enabled_events": list(enabled_events),
        "livemode": False,
        "metadata": dict(metadata),
        "secret": secret,
        "status": "enabled",
        "url": url,
    }


def schedule_phase(
    items: list, start: int, end: int, currency: str = "usd", proration_behavior: str = "create_prorations"
) -> dict:
    """A subscription schedule phase; ``items`` are (price id, quantity) pairs."""
    return {
        "add_invoice_items": [],
        "application_fee_percent": None,
        "automatic_tax": None,
        "billing_cycle_anchor": None,
        "billing_thresholds": None,
        "collection_method": None,
        "currency": currency,
        "default_payment_method": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "end_date": end,
        "invoice_settings": None,
        "items": [
            {
                "billing_thresholds": None,
                "discounts": [],
                "metadata": {},
                "plan": price_id,
                "price": price_id,
                "quantity": qty,
                "tax_rates": [],
            }
            for price_id, qty in items
        ],
        "metadata": {},
        "on_behalf_of": None,
        "proration_behavior": proration_behavior,
        "start_date": start,
        "transfer_data": None,
        "trial": None,
        "trial_end": None,
    }


def subscription_schedule(sched_id: str, created: int, sub: dict, phases: list) -> dict:
    return {
        "id": sched_id,
        "object": "subscription_schedule",
        "application": None,
        "billing_mode": {"flexible": None, "type": "flexible", "updated_at": created},
        "canceled_at": None,
        "completed_at": None,
        "created": created,
        "current_phase": {"end_date": phases[0]["end_date"], "start_date": phases[0]["start_date"]},
        "customer": sub["customer"],
        "customer_account": None,
        "default_settings": {
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": "automatic",
            "billing_thresholds": None,
            "collection_method": "charge_automatically",
            "default_payment_method": None,
            "description": None,
            "invoice_settings": {
                "account_tax_ids": None,
                "custom_fields": None,
                "days_until_due": None,
                "description": None,
                "footer": None,
                "issuer": {"account": None, "type": "self"},
            },
            "on_behalf_of": None,
            "transfer_data": None,
        },
        "end_behavior": "release",
        "livemode": False,
        "metadata": {},
        "pause_schedules": [],
        "phases": phases,
        "released_at": None,
        "released_subscription": None,
        "status": "active",
        "subscription": sub["id"],
        "test_clock": None,
    }


def diff(before: Any, after: Any) -> dict:
    """``previous_attributes``: old values of the keys that changed.

    Nested plain objects are diffed recursively (Stripe sends
    ``{"cancellation_details": {"reason": null}}``); lists and list objects are
    sent whole, as Stripe does for ``items``.
    """
    out: dict = {}
    for key, new in after.items():
        old = before.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and old.get("object") != "list" and "id" not in old:
            out[key] = diff(old, new)
        else:
            out[key] = old
    return out
