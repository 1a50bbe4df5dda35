"""Every request and response body of the JSON API, once, as pydantic models.

spectree (app/api/spec.py) validates request bodies with them, checks answers against them and writes the OpenAPI
document from them. A string field refuses bad input with the API's own error codes and sentences, first field
first: `missing_field` (absent, null, empty or only spaces), `invalid_field` (not a string, a NUL character, too
long). Plan and cycle names are listed in the document but checked by the catalog, whose refusals name the plan.
"""

from datetime import datetime
from typing import Annotated, Any, Literal, Self, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    RootModel,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from app.models import BILLING_CYCLES, STATUSES
from app.services.backtesting import MAX_WINDOW
from app.services.catalog import PLAN_CATALOG
from app.services.strategies import NAME_MAX, RULES_PATTERN, TEXT_MAX

#: The catalog's plans, cheapest first; the paid ones are those Checkout and plan changes accept.
PLAN_NAMES = tuple(spec.name for spec in sorted(PLAN_CATALOG, key=lambda spec: spec.sort_order))
PAID_PLAN_NAMES = tuple(
    spec.name for spec in sorted(PLAN_CATALOG, key=lambda spec: spec.sort_order) if spec.price_monthly > 0
)

NON_BLANK = {"minLength": 1, "pattern": "\\S", "description": "Not empty, not only spaces."}


def _check_string(max_length: int, required: bool, strip: bool):
    def check(value: Any, info: ValidationInfo) -> str | None:
        name = {"name": info.field_name}
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise PydanticCustomError("missing_field", "'{name}' is required.", name)
            return None
        if not isinstance(value, str):
            raise PydanticCustomError("invalid_field", "'{name}' must be a string.", name)
        if "\x00" in value:  # PostgreSQL text cannot hold it: refuse here, not as a 500 from the query
            raise PydanticCustomError("invalid_field", "'{name}' must not contain NUL characters.", name)
        if any("\ud800" <= char <= "\udfff" for char in value):  # a lone surrogate (`"\ud800"`): no UTF-8 exists
            raise PydanticCustomError(
                "invalid_field", "'{name}' must be valid Unicode (a lone surrogate is not).", name
            )
        if len(value) > max_length:
            raise PydanticCustomError(
                "invalid_field", "'{name}' must be at most {max_length} characters.", {**name, "max_length": max_length}
            )
        return value.strip() if strip else value

    return check


def checked(max_length: int, *, required: bool = True, strip: bool = True) -> BeforeValidator:
    """The checks of a request body's string field, answering today's codes and sentences.

    Stripped unless `strip=False` (a password is compared exactly as the sign-up form stored it). An optional
    field that is absent, null or blank reads as None.
    """
    return BeforeValidator(_check_string(max_length, required, strip))


def documented(max_length: int, **schema: Any) -> WithJsonSchema:
    """What the document says of a string field (`schema`: what it adds, e.g. an enum or a pattern)."""
    return WithJsonSchema({"type": "string", "maxLength": max_length, **schema})


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # an absent optional string is None to the view, not a value a client sends


#: An optional string field: absent reads as None, and the document shows no default.
ABSENT_IS_NONE = Field(default=None, json_schema_extra=_no_default)


def _check_flag(value: Any, info: ValidationInfo) -> bool:
    if not isinstance(value, bool):  # "true", 1 or null must not fall through to applying (and charging) it
        raise PydanticCustomError("invalid_field", "'{name}' must be true or false.", {"name": info.field_name})
    return value


#: A timestamp as `datetime.isoformat()` writes it (`+00:00`, not pydantic's `Z`).
IsoDateTime = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
NullableIsoDateTime = Annotated[
    datetime | None,
    PlainSerializer(lambda value: value and value.isoformat()),
    WithJsonSchema({"type": ["string", "null"], "format": "date-time"}),
]


class Answer(BaseModel):
    """A response body: `respond()` hands spectree the model itself, which pydantic validated as it was built.

    spectree takes an instance of the model the operation lists for the status as valid and writes it with
    pydantic's own JSON serializer (`model_dump_json`). A JSON-ready dict instead was dumped by the view, validated
    into the model again and searched for models nested in it, then written by Flask's JSON provider: work done
    twice for an answer valid by construction (spectree's part alone took twice the CPU, 0.4 ms against 0.2 for the
    bench's list of five strategies). An answer of another model than the status's is still validated against the
    status's model, and refused (`spec.refuse_bad_answer`)."""

    model_config = ConfigDict(from_attributes=True)

    def respond(self, status: int = 200) -> tuple[Self, int]:
        """The view's return value: spectree checks it is the model of `status` and writes it as JSON."""
        return self, status


# --- errors --------------------------------------------------------------------------------------------------


class Error(BaseModel):
    """Every error of the API: a stable code for programs and a sentence for people."""

    error: str = Field(examples=["invalid_request", "billing_unavailable"])
    message: str


class UpgradeRequired(BaseModel):
    """403: the plan does not include the feature, or the action would pass a limit."""

    error: Literal["upgrade_required"]
    message: str
    feature: str = Field(examples=["api_access", "strategies_max"])
    required_plan: str | None = Field(description="The cheapest plan that allows it.")


# --- auth ----------------------------------------------------------------------------------------------------


Email: TypeAlias = Annotated[str, checked(320), documented(320, format="email")]
Password: TypeAlias = Annotated[str, checked(128, strip=False), documented(128, **NON_BLANK)]


class TokenRequest(BaseModel):
    email: Email
    password: Password


class TokenPair(Answer):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(json_schema_extra={"minimum": 1}, description="Seconds the access token is valid.")


class Me(Answer):
    id: int
    email: str = Field(json_schema_extra={"format": "email"}, description="The login email.")
    billing_email: str | None = Field(
        default=None,
        description="Read-only: the email on the Stripe customer (set in the Customer Portal), as Stripe holds it; "
        "never a login. Change the login email on the account page.",
    )


# --- billing -------------------------------------------------------------------------------------------------

PlanName: TypeAlias = Annotated[
    str, checked(32), documented(32, enum=list(PAID_PLAN_NAMES), description="A paid plan (`free` is refused).")
]
BillingCycle: TypeAlias = Annotated[str, checked(16), documented(16, enum=list(BILLING_CYCLES))]


class CheckoutRequest(BaseModel):
    plan_name: PlanName
    billing_cycle: BillingCycle


class CheckoutSession(Answer):
    checkout_url: str = Field(json_schema_extra={"format": "uri"}, description="Send the person here to pay.")
    session_id: str = Field(json_schema_extra={"pattern": "^cs_"})


class PortalSession(Answer):
    portal_url: str = Field(json_schema_extra={"format": "uri"})


class PlanChangeRequest(BaseModel):
    plan_name: PlanName
    billing_cycle: BillingCycle
    preview: Annotated[bool, BeforeValidator(_check_flag)] = Field(False, description="Only price the change.")


class PlanChange(Answer):
    """`kind` says what the change is, `effective_at` when it happens. A change to a higher tier at the same or a
    longer cycle takes effect now (prorations invoiced at once); a lower tier, the other cycle of the same plan, or
    a shorter cycle (even to a higher tier) at the end of the paid period."""

    plan: Literal[PAID_PLAN_NAMES]  # type: ignore[valid-type]
    billing_cycle: Literal[BILLING_CYCLES]  # type: ignore[valid-type]
    kind: Literal["upgrade", "downgrade", "cycle_change"] = Field(
        description="`upgrade` / `downgrade`: to a higher / lower plan; `cycle_change`: the same plan, the other "
        "billing cycle."
    )
    applied: bool
    amount_due_now: int = Field(description="Cents, charged now (0 for a change at period end).")
    currency: str = Field(examples=["usd"])
    effective_at: NullableIsoDateTime = Field(description="When the change happens (the period end); null: now.")


class Subscription(Answer):
    """The user's plan; Free users get `plan: "free"` and nulls. Plan, status and features are one reading of the
    user's subscription, never two that could straddle a change."""

    plan: Literal[PLAN_NAMES]  # type: ignore[valid-type]
    billing_cycle: Literal[BILLING_CYCLES] | None  # type: ignore[valid-type]
    status: Literal[STATUSES] | None  # type: ignore[valid-type]
    current_period_end: NullableIsoDateTime
    cancel_at_period_end: bool
    features: dict[str, bool | int | None] = Field(
        description="What the user may use now: `true`, a limit, or `null` for unlimited. The features of `plan` "
        "while `status` grants access (`trialing`, `active`, `past_due`); the Free plan's while it does not "
        "(`incomplete`, `unpaid`, `paused`)."
    )


# --- strategies ----------------------------------------------------------------------------------------------


StrategyName: TypeAlias = Annotated[str, checked(NAME_MAX), documented(NAME_MAX, **NON_BLANK)]
StrategyDescription: TypeAlias = Annotated[
    str | None, checked(TEXT_MAX, required=False), documented(TEXT_MAX), ABSENT_IS_NONE
]
StrategyRules: TypeAlias = Annotated[
    str | None,
    checked(TEXT_MAX, required=False),
    documented(
        TEXT_MAX,
        pattern=RULES_PATTERN,
        format="strategy-rules",
        description="The crossover's two moving-average windows in trading days: `fast=<days> slow=<days>`, either "
        "order, any case, `=` or `:`, separated by spaces, new lines, commas or semicolons, with "
        f"1 ≤ fast < slow ≤ {MAX_WINDOW} (the one condition the pattern cannot say). Empty or left out: "
        "`fast=20 slow=50`. Anything else is refused with 400 `invalid_rules`, never replaced by a default.",
        examples=["fast=20 slow=50", "slow: 200, fast: 50"],
    ),
    ABSENT_IS_NONE,
]


class StrategyInput(BaseModel):
    name: StrategyName
    description: StrategyDescription
    rules: StrategyRules


class Strategy(Answer):
    id: int
    name: str
    description: str
    rules: str
    created_at: IsoDateTime


class StrategyList(Answer):
    strategies: list[Strategy]


# --- webhooks and the document itself --------------------------------------------------------------------------


class StripeEvent(BaseModel):
    """A Stripe Event, verified against the raw body; never re-serialised."""

    id: str = Field(pattern="^evt_")
    type: str
    data: dict[str, Any]


class WebhookReceipt(BaseModel):
    status: Literal["processed", "ignored", "duplicate"]
    event_id: str


class OpenApiDocument(RootModel[dict[str, Any]]):
    """This OpenAPI 3.1 document."""
