"""Configuration: one pydantic-settings model, `Settings`, read from environment variables (and a `.env` file).

Every variable is declared once, with its type, its default and what production asks of it. `load_settings()`
validates the environment and returns the model; `Settings.flask_config()` turns it into the plain dict of
`app.config`. Development and testing work with nothing set (SQLite under `instance/`, in-process cache, generated
secrets kept under `instance/`); production refuses to start and lists every problem at once.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from flask import current_app
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: A `<…>` left from the example file or the guide, anywhere in a value.
PLACEHOLDER = re.compile(r"<[^<>]*>")
#: `<name@host>` is an e-mail address in angle brackets ("Billing <billing@example.com>"), not a placeholder.
ANGLE_ADDRESS = re.compile(r"<[^\s<>@:/]+@[^\s<>@:/]+>")

#: Who may scrape /metrics without the token: loopback and the private ranges a scraper lives in.
DEFAULT_METRICS_NETWORKS = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]

#: A pooled PostgreSQL connection idle longer than this is pinged before use; one used more recently is not.
PING_AFTER_IDLE_SECONDS = 2.0

#: A development/testing default computed from the instance folder and the variable's name.
LocalDefault = Callable[[Path, str], str]
#: A rule production adds to a variable: (name, value) → the problem line, or None when the value is fine.
ProductionRule = Callable[[str, Any], str | None]

#: The `flask` commands that make what production then requires (`Var.made_by`): `flask stripe create-catalog`
#: prints the STRIPE_PRICE_* to set, `flask stripe webhook-endpoint` the STRIPE_WEBHOOK_SECRET. They run in a
#: production shell without those (unset, or still the guide's placeholder): refusing them for lacking what they
#: print left an operator following .env.example no way to get it but the Dashboard.
BOOTSTRAP_COMMANDS = frozenset(
    {("stripe", "create-catalog"), ("stripe", "webhook-endpoint"), ("stripe", "portal-config")}
)

#: Set while `load_settings` validates for a bootstrap command: production then waives the `made_by` variables.
_BOOTSTRAPPING: ContextVar[bool] = ContextVar("bootstrapping", default=False)


class ConfigurationError(SystemExit):
    """The configuration cannot run the app.

    A `SystemExit` on purpose: `flask <command>` and a gunicorn import both stop with a non-zero status and the
    message, instead of a traceback. Status 4 is gunicorn's APP_LOAD_ERROR, which halts the arbiter rather than
    respawning workers that would fail the same way forever.
    """

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(4)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"Refusing to start: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"Refusing to start: the configuration has {len(self.problems)} problem(s):\n{lines}"


# --- what a variable is, beyond its type ------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    """Metadata on a `Settings` field (`Annotated[type, Var(...)]`).

    guide: listed by the deployment guide and .env.example (`flask doctor` checks each is set);
    required: production refuses to start without it; local: its value in development and testing when unset;
    production: a further rule production applies to a set value; expected: what a value must be, for the
    problem line when the type alone says it badly; unset: what the problem line of a required variable left unset
    adds; made_by: the command that prints its value (`BOOTSTRAP_COMMANDS` run without it).
    """

    guide: bool = True
    required: bool = False
    local: str | LocalDefault | None = None
    production: ProductionRule | None = None
    expected: str | None = None
    unset: str | None = None
    made_by: str | None = None


def variable(field: FieldInfo) -> Var | None:
    """The `Var` metadata of a field, if it has one."""
    return next((m for m in field.metadata if isinstance(m, Var)), None)


def problem(*lines: str) -> PydanticCustomError:
    """A validation error carrying finished problem lines (each names its variable)."""
    return PydanticCustomError("configuration", "{line}", {"line": "; ".join(lines), "lines": list(lines)})


# --- parsing helpers ---------------------------------------------------------------------------------------------


def placeholders_in(value: Any) -> list[str]:
    """Every `<…>` placeholder left in `value` (a string or a list of strings), in order."""
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in placeholders_in(item)]
    if not isinstance(value, str):
        return []
    return [found for found in PLACEHOLDER.findall(value) if not ANGLE_ADDRESS.fullmatch(found)]


def placeholder_lines(name: str, value: Any) -> list[str]:
    """One problem line per placeholder in `value`; a value that is one placeholder says so in one line."""
    found = placeholders_in(value)
    if found == [str(value).strip()]:
        return [f"{name} is still the placeholder {found[0]}"]
    return [f"{name} still contains the placeholder {p}" for p in found]


def json_origins(value: Any, info: ValidationInfo) -> Any:
    """ALLOWED_ORIGINS is a JSON list of strings, e.g. ["https://app.example.com"]."""
    if not isinstance(value, str):
        return value
    try:
        origins = json.loads(value)
    except ValueError:
        origins = None
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise problem(
            f'{info.field_name} must be a JSON list of origins, e.g. ["https://app.example.com"], not {value!r}'
        )
    return origins


def networks(value: Any, info: ValidationInfo) -> Any:
    """A comma- or space-separated list of networks (CIDR or single addresses), normalized."""
    if not isinstance(value, str):
        return value
    found, bad = [], []
    for item in filter(None, re.split(r"[,\s]+", value)):
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            bad.append(f"{info.field_name} has {item!r}, which is not a network like 10.0.0.0/8")
    if bad:
        raise problem(*bad)
    return found


def database_url(value: str | None, info: ValidationInfo) -> str | None:
    """A URL SQLAlchemy can read, so a typo is a problem line at start-up rather than a traceback later."""
    if value is not None:
        try:
            make_url(normalize_database_url(value))
        except (ArgumentError, ValueError):  # their message would repeat the URL, password included
            raise problem(
                f"{info.field_name} is not a database URL like postgresql://user:password@host:5432/dbname"
            ) from None
    return value


def lower(value: Any) -> Any:
    """ENVIRONMENT=Production means production."""
    return value.lower() if isinstance(value, str) else value


def upper(value: Any) -> Any:
    """LOG_LEVEL=info means INFO, as the logging module spells it."""
    return value.upper() if isinstance(value, str) else value


def normalize_database_url(url: str) -> str:
    """Drive `postgresql://…` (as the guide writes it) and `postgres://…` with psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_postgresql(url: str) -> bool:
    """True for any PostgreSQL URL SQLAlchemy accepts."""
    return url.split(":", 1)[0].split("+", 1)[0] in {"postgresql", "postgres"}


def is_fernet_key(value: str) -> bool:
    """True if `value` is a valid Fernet key (32 url-safe base64-encoded bytes)."""
    try:
        Fernet(value.encode())
    except (ValueError, TypeError):
        return False
    return True


# --- development and testing defaults ---------------------------------------------------------------------------


def development_secret(instance_path: Path, name: str, make: Callable[[], str]) -> str:
    """A development secret, generated once and kept in `instance/dev-secrets.json`.

    Generated, not hard-coded, so no secret is ever in the repository; kept, so sessions survive restarts. Several
    processes may start at once on a fresh clone (the test run's workers, `make run`'s server and emulator): the
    file is written whole under a lock (`dev-secrets.lock`) and put in place at once, readable by its owner only from
    the start, so that a process never reads half of it and all of them keep the same secret.
    """
    path = instance_path / "dev-secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if name in stored:
        return stored[name]
    instance_path.mkdir(parents=True, exist_ok=True)
    with open(instance_path / "dev-secrets.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        stored = json.loads(path.read_text()) if path.exists() else {}  # another process may have written it
        if name not in stored:
            stored[name] = make()
            partial = path.with_name(f"{path.name}.{os.getpid()}")
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
                out.write(json.dumps(stored, indent=2))
            os.replace(partial, path)
    return stored[name]


def kept_secret(make: Callable[[], str]) -> LocalDefault:
    """The local default of a secret: made by `make` on first use, then read back from the instance folder."""
    return lambda instance_path, name: development_secret(instance_path, name, make)


def sqlite_in_instance(instance_path: Path, name: str) -> str:
    """A fresh clone's database: SQLite under `instance/`."""
    instance_path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{instance_path / 'app.db'}"


# --- rules production adds ---------------------------------------------------------------------------------------


def debug_off(name: str, on: bool) -> str | None:
    """The debugger runs code sent by whoever sees an error page."""
    return f"{name}=true is not allowed in production" if on else None


def fernet_key(name: str, key: str) -> str | None:
    """A key Fernet refuses would fail at the first encryption, long after the start."""
    return (
        None
        if is_fernet_key(key)
        else (
            f"{name} is not a valid Fernet key (generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
        )
    )


def https_address(name: str, url: str) -> str | None:
    """Stripe's redirects and the mails' links are built on it: they must reach the public HTTPS site."""
    return None if url.startswith("https://") else f"{name} must be the public https:// address of the app"


def postgresql(name: str, url: str) -> str | None:
    """SQLite is the fresh clone's default; production needs PostgreSQL's row locks and concurrency."""
    return (
        None
        if is_postgresql(url)
        else (f"{name} must be a PostgreSQL URL (postgresql://user:password@host:5432/dbname)")
    )


def stripe_secret_key(name: str, key: str) -> str | None:
    """A publishable or webhook key pasted in the wrong variable is caught before the first checkout."""
    return (
        None
        if key.startswith(("sk_live_", "sk_test_", "rk_live_", "rk_test_"))
        else (f"{name} must start with sk_live_ or sk_test_")
    )


def long_token(name: str, token: str) -> str | None:
    """The /metrics bearer token is reachable from outside: it must not be guessable."""
    return (
        None
        if len(token) >= 24
        else (
            f"{name} must be at least 24 characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    )


# --- the model ---------------------------------------------------------------------------------------------------

Required = Var(required=True)


def MadeByCatalog(local: str) -> Var:  # noqa: N802 - used like the `Var(...)` it builds, in annotations
    """A plan's price id: required in production, printed by `flask stripe create-catalog`, the emulator's own id
    (`local`) in development and testing."""
    return Var(required=True, local=local, made_by="flask stripe create-catalog")


PositiveInt = Annotated[int, Field(ge=1)]
ProxyHops = Annotated[int, Field(ge=0)]
OptionalText = str | None
#: Where a verified webhook event is applied (WEBHOOK_APPLY).
WebhookApply = Literal["request", "queue"]


class Settings(BaseSettings):
    """Every environment variable the app reads, once: its type, its default, what production asks of it.

    ENVIRONMENT comes first: the rules of the other fields read it from the values validated before them.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", enable_decoding=False, env_ignore_empty=True, validate_default=True
    )

    ENVIRONMENT: Annotated[Literal["development", "testing", "production"], BeforeValidator(lower), Var()] = (
        "development"
    )
    # The deployment guide's variables, in its order.
    STRIPE_SECRET_KEY: Annotated[OptionalText, Var(required=True, production=stripe_secret_key)] = None
    STRIPE_PUBLISHABLE_KEY: Annotated[OptionalText, Required] = None
    STRIPE_WEBHOOK_SECRET: Annotated[
        OptionalText,
        Var(
            required=True,
            local=kept_secret(lambda: "whsec_dev" + secrets.token_hex(24)),
            made_by="flask stripe webhook-endpoint",
        ),
    ] = None
    # The development seed's price ids: the bundled Stripe emulator has the very same ids.
    STRIPE_PRICE_FREE_MONTHLY: Annotated[OptionalText, MadeByCatalog("price_free_monthly")] = None
    STRIPE_PRICE_STARTER_MONTHLY: Annotated[OptionalText, MadeByCatalog("price_starter_monthly")] = None
    STRIPE_PRICE_STARTER_YEARLY: Annotated[OptionalText, MadeByCatalog("price_starter_yearly")] = None
    STRIPE_PRICE_PRO_MONTHLY: Annotated[OptionalText, MadeByCatalog("price_pro_monthly")] = None
    STRIPE_PRICE_PRO_YEARLY: Annotated[OptionalText, MadeByCatalog("price_pro_yearly")] = None
    DEBUG: Annotated[bool, Var(production=debug_off)] = False
    SECRET_KEY: Annotated[OptionalText, Var(required=True, local=kept_secret(lambda: secrets.token_urlsafe(48)))] = None
    API_PREFIX: Annotated[str, AfterValidator(lambda prefix: "/" + prefix.strip("/")), Var()] = "/api/v1"
    ALLOWED_ORIGINS: Annotated[list[str] | None, BeforeValidator(json_origins), Required] = None
    DATABASE_URL: Annotated[
        OptionalText, AfterValidator(database_url), Var(required=True, local=sqlite_in_instance, production=postgresql)
    ] = None
    REDIS_URL: Annotated[OptionalText, Required] = None
    JWT_SECRET_KEY: Annotated[
        OptionalText, Var(required=True, local=kept_secret(lambda: secrets.token_urlsafe(48)))
    ] = None
    # Tokens are signed with the shared JWT_SECRET_KEY: only the HMAC algorithms can use it ("none" signs nothing).
    JWT_ALGORITHM: Annotated[Literal["HS256", "HS384", "HS512"], Var()] = "HS256"
    ACCESS_TOKEN_EXPIRE_MINUTES: Annotated[PositiveInt, Var()] = 15
    REFRESH_TOKEN_EXPIRE_DAYS: Annotated[PositiveInt, Var()] = 7
    ENCRYPTION_KEY: Annotated[
        OptionalText,
        Var(required=True, local=kept_secret(lambda: Fernet.generate_key().decode()), production=fernet_key),
    ] = None
    # Links that leave the app (Stripe's success/cancel/return URLs, mails) are built on it in production, never on
    # the request's Host header, which the client chooses.
    APP_BASE_URL: Annotated[
        OptionalText,
        Var(
            guide=False,
            required=True,
            local="http://127.0.0.1:5000",
            production=https_address,
            unset="the app's own public https:// address, such as https://api.smartstockbot.app; the guide's "
            "variables name none, and ALLOWED_ORIGINS is the frontend's",
        ),
    ] = None

    # Beyond the guide.
    STRIPE_API_BASE: OptionalText = None
    # Every rate limit (Flask-Limiter's and app/ratelimits.py's mail caps) on or off; `false`, `0`, `no` or `off`
    # turn them all off (a load test, a local debugging session). `flask doctor` fails while they are off.
    RATELIMIT_ENABLED: bool = True
    RATELIMIT_LOGIN: str = "10 per minute;50 per hour"
    RATELIMIT_BILLING: str = "10 per minute"
    RATELIMIT_API: str = "300 per minute"
    # Mail: SMTP when MAIL_SERVER is set; otherwise mails are written to instance/mail/ and logged.
    MAIL_SERVER: OptionalText = None
    MAIL_PORT: PositiveInt = 587
    MAIL_USERNAME: OptionalText = None
    MAIL_PASSWORD: OptionalText = None
    MAIL_USE_TLS: bool = False
    MAIL_USE_SSL: bool = False
    # Flask-Mail would silently drop mail when TESTING; the tests want it on a real SMTP sink.
    MAIL_SUPPRESS_SEND: bool = False
    MAIL_DEFAULT_SENDER: str = "Smart Strategies Builder <billing@localhost>"
    # Seconds an SMTP connection waits on the mail server (connecting, each reply) before the mail is left pending.
    MAIL_TIMEOUT: Annotated[float, Field(gt=0)] = 10.0
    # The task queue (RQ): mail delivery and the scheduled jobs go through Redis at this URL, run by `flask queue
    # worker` and `flask queue cron`. Unset (a fresh clone): mail is delivered in the app's process after the
    # response is sent, and the scheduled jobs are run by hand (`flask stripe sync --all`, `flask queue run …`).
    TASK_QUEUE_URL: OptionalText = None
    # Where a verified Stripe event is applied: `request` (in the delivery's request, answered once applied) or
    # `queue` (recorded and answered, then applied by a `flask queue worker` job). Unset: `queue` when TASK_QUEUE_URL
    # is set, `request` otherwise (a fresh clone has no queue). Declared after TASK_QUEUE_URL, which it reads.
    WEBHOOK_APPLY: Annotated[WebhookApply | None, BeforeValidator(lower)] = None
    # Seconds a user's entitlements stay cached (`entitlements:<user-id>`); billing changes invalidate them.
    ENTITLEMENTS_CACHE_TTL: PositiveInt = 3600

    # Running the app: logging, metrics, proxy, Sentry.
    LOG_LEVEL: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(upper)] = "INFO"
    METRICS_ALLOWED_NETWORKS: Annotated[list[str], BeforeValidator(networks)] = Field(
        default_factory=lambda: list(DEFAULT_METRICS_NETWORKS)
    )
    METRICS_TOKEN: Annotated[OptionalText, Var(guide=False, production=long_token)] = None
    SENTRY_DSN: OptionalText = None
    SENTRY_TRACES_SAMPLE_RATE: Annotated[
        float, Field(ge=0, le=1), Var(guide=False, expected="a number from 0 to 1")
    ] = 0.0
    # Unset: trusted in production (behind its load balancer), not elsewhere.
    TRUST_PROXY: bool | None = None
    # How many proxies in front of the app set each X-Forwarded-* header (ProxyFix); 0 ignores the header.
    PROXY_FIX_X_FOR: ProxyHops = 1
    PROXY_FIX_X_PROTO: ProxyHops = 1
    PROXY_FIX_X_HOST: ProxyHops = 1
    PROXY_FIX_X_PORT: ProxyHops = 0
    PROXY_FIX_X_PREFIX: ProxyHops = 0
    # Addresses whose X-Forwarded-* headers are believed (the load balancer); unset: loopback and private networks.
    TRUSTED_PROXIES: Annotated[list[str] | None, BeforeValidator(networks)] = None
    # Accounts: sign-ups per client address and per email address, failed log-ins per email address, account
    # mails per client address and per account they go to; re-reading Stripe per user; unset: the defaults of
    # app/ratelimits.py. (RATELIMIT_SIGNUP_GLOBAL and RATELIMIT_ACCOUNT_MAIL_GLOBAL, the site-wide budgets a few
    # clients could spend for everyone, are accepted and no longer read.)
    RATELIMIT_SIGNUP: OptionalText = None
    RATELIMIT_SIGNUP_EMAIL: OptionalText = None
    RATELIMIT_SIGNUP_GLOBAL: OptionalText = None
    RATELIMIT_LOGIN_EMAIL: OptionalText = None
    RATELIMIT_ACCOUNT_MAIL: OptionalText = None
    RATELIMIT_ACCOUNT_MAIL_GLOBAL: OptionalText = None
    RATELIMIT_ACCOUNT_MAIL_RECIPIENT: OptionalText = None
    RATELIMIT_STRIPE_REFRESH: OptionalText = None
    # Checkout asks for a confirmed email first; unset: on, except under ENVIRONMENT=testing.
    REQUIRE_VERIFIED_EMAIL: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def blank_is_unset(cls, data: Any) -> Any:
        """A blank variable counts as unset (its default applies); values are read without surrounding blanks."""
        if not isinstance(data, dict):
            return data
        return {
            name: value.strip() if isinstance(value, str) else value
            for name, value in data.items()
            if not (isinstance(value, str) and value.strip() == "")
        }

    @field_validator("*", mode="before")
    @classmethod
    def no_placeholder_in_production(cls, value: Any, info: ValidationInfo) -> Any:
        """In production a `<…>` left anywhere in a value is a problem line of its own, before its type is read."""
        if info.data.get("ENVIRONMENT") == "production" and isinstance(value, str):
            lines = placeholder_lines(info.field_name or "", value)
            if lines and waived(info.field_name or ""):
                return None  # the guide's placeholder of what this very command prints: unset
            if lines:
                raise problem(*lines)
        return value

    @field_validator("*", mode="after")
    @classmethod
    def production_rules(cls, value: Any, info: ValidationInfo) -> Any:
        """Production: a required variable must be set, and a set one must pass its field's production rule.

        A field validator rather than a model validator: pydantic skips model validators once any field failed,
        and production must list every problem at once.
        """
        name = info.field_name or ""
        var = variable(cls.model_fields[name])
        if var is None or info.data.get("ENVIRONMENT") != "production":
            return value
        if value is None:
            if var.required and not waived(name):
                raise problem(f"{name} is not set" + (f" ({var.unset})" if var.unset else ""))
            return value
        why = var.production(name, value) if var.production else None
        if why:
            raise problem(why)
        return value

    @field_validator("WEBHOOK_APPLY", mode="after")
    @classmethod
    def webhook_apply_needs_a_queue(cls, value: WebhookApply | None, info: ValidationInfo) -> WebhookApply | None:
        """Unset resolves by TASK_QUEUE_URL; `queue` without a queue is a problem line (nothing would apply the
        recorded events). A TASK_QUEUE_URL that failed its own validation is its own problem line: no second one."""
        if "TASK_QUEUE_URL" not in info.data:
            return value
        queue_url = info.data["TASK_QUEUE_URL"]
        if value is None:
            return "queue" if queue_url else "request"
        if value == "queue" and not queue_url:
            raise problem(
                "WEBHOOK_APPLY=queue needs TASK_QUEUE_URL (the task queue whose workers apply the events): "
                "set it, or WEBHOOK_APPLY=request"
            )
        return value

    @model_validator(mode="after")
    def trust_proxy_in_production(self) -> Settings:
        """Production runs behind a load balancer: its X-Forwarded-* headers are trusted unless TRUST_PROXY says no."""
        if self.TRUST_PROXY is None:
            self.TRUST_PROXY = self.ENVIRONMENT == "production"
        return self

    def with_local_defaults(self, instance_path: Path) -> Settings:
        """Development and testing: every unset variable with a local default gets it; production has none."""
        if self.ENVIRONMENT == "production":
            return self
        updates = {}
        for name, field in type(self).model_fields.items():
            var = variable(field)
            if var is not None and var.local is not None and getattr(self, name) is None:
                updates[name] = var.local(instance_path, name) if callable(var.local) else var.local
        return self.model_copy(update=updates)

    def flask_config(self) -> dict[str, Any]:
        """The `app.config` dict: every variable under its own name, plus what Flask and its extensions derive."""
        production = self.ENVIRONMENT == "production"
        database = self.DATABASE_URL or ""
        values = self.model_dump()
        values.update(
            TESTING=self.ENVIRONMENT == "testing",
            STRIPE_API_VERSION="2026-10-28.endive",
            ALLOWED_ORIGINS=self.ALLOWED_ORIGINS or [],
            SQLALCHEMY_DATABASE_URI=normalize_database_url(database),
            SQLALCHEMY_ENGINE_OPTIONS=(
                {"pool_size": 5, "max_overflow": 10} if database and is_postgresql(database) else {}
            ),
            # Instead of pool_pre_ping's round trip on every checkout: a connection idle longer than this is
            # pinged when taken from the pool (`app.extensions.ping_after_idle`).
            DATABASE_PING_AFTER_IDLE_SECONDS=(
                PING_AFTER_IDLE_SECONDS if database and is_postgresql(database) else None
            ),
            SQLALCHEMY_TRACK_MODIFICATIONS=False,
            JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=self.ACCESS_TOKEN_EXPIRE_MINUTES),
            JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=self.REFRESH_TOKEN_EXPIRE_DAYS),
            JWT_TOKEN_LOCATION=["headers"],
            JWT_ERROR_MESSAGE_KEY="message",
            MAX_CONTENT_LENGTH=1024 * 1024,
            WTF_CSRF_TIME_LIMIT=None,
        )
        values.update(cache_and_limits(self.REDIS_URL))
        values.update(cookies_and_https(production))
        return values


def cache_and_limits(redis_url: str | None) -> dict[str, Any]:
    """Cache and rate-limit storage: Redis when configured, else in-process memory."""
    if redis_url:
        # Fail fast when Redis is down: callers fall back instead of hanging a worker.
        timeouts = {"socket_timeout": 1, "socket_connect_timeout": 1}
        values: dict[str, Any] = dict(
            CACHE_TYPE="RedisCache",
            CACHE_REDIS_URL=redis_url,
            CACHE_KEY_PREFIX="",
            CACHE_OPTIONS=timeouts,
            RATELIMIT_STORAGE_URI=redis_url,
            RATELIMIT_STORAGE_OPTIONS=dict(timeouts),
        )
    else:
        values = dict(CACHE_TYPE="SimpleCache", RATELIMIT_STORAGE_URI="memory://")
    # Redis down: limits keep working per process from memory instead of failing requests.
    values.update(RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True, RATELIMIT_SWALLOW_ERRORS=True, CACHE_DEFAULT_TIMEOUT=300)
    return values


def cookies_and_https(production: bool) -> dict[str, Any]:
    """Secure cookies and HTTPS only where the site is served over HTTPS; a browser drops them on http://127.0.0.1."""
    return dict(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=production,
        REMEMBER_COOKIE_SECURE=production,
        # A logged-in session ends when its server-side row does (a fixed lifetime from the log-in), so re-signing
        # and re-sending the cookie on every response would extend nothing: it is sent when the session changes.
        SESSION_REFRESH_EACH_REQUEST=False,
        FORCE_HTTPS=production,
    )


#: The variables of the deployment guide (and .env.example), in its order.
GUIDE_VARIABLES = tuple(
    name for name, field in Settings.model_fields.items() if (var := variable(field)) is not None and var.guide
)


# --- validation errors → problem lines ---------------------------------------------------------------------------

#: What a value must be, by pydantic error type (for the errors pydantic's own types raise).
EXPECTED_BY_ERROR = {
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "int_type": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "float_parsing": "a number",
    "float_type": "a number",
    "string_type": "text",
    "list_type": "a list",
}


def problem_lines(error: ValidationError) -> list[str]:
    """Today's readable lines for every error pydantic collected, in the order of the fields."""
    lines: list[str] = []
    for detail in error.errors(include_url=False):
        if detail["type"] == "configuration":
            lines.extend(detail["ctx"]["lines"])
        else:
            lines.append(describe(detail))
    return lines


def describe(detail: ErrorDetails) -> str:
    """`NAME must be <what>, not '<value>'` for an error raised by a field's type or constraint."""
    name = str(detail["loc"][0]) if detail["loc"] else "the configuration"
    kind, context = detail["type"], detail.get("ctx") or {}
    field = Settings.model_fields.get(name)
    var = variable(field) if field is not None else None
    if var is not None and var.expected:
        expected = var.expected
    elif kind == "literal_error":
        expected = str(context["expected"]).replace("'", "")
    elif kind == "greater_than_equal":
        expected = "positive" if context["ge"] == 1 else f"at least {context['ge']}"
    elif kind == "less_than_equal":
        expected = f"at most {context['le']}"
    else:
        expected = EXPECTED_BY_ERROR.get(kind, detail["msg"])
    return f"{name} must be {expected}, not {detail['input']!r}"


# --- loading -----------------------------------------------------------------------------------------------------


def waived(name: str) -> bool:
    """Whether production lets variable `name` be unset now: a bootstrap command is validated and prints it."""
    field = Settings.model_fields.get(name)
    var = variable(field) if field is not None else None
    return _BOOTSTRAPPING.get() and var is not None and var.made_by is not None


def runs_bootstrap_command(argv: Sequence[str]) -> bool:
    """Whether `argv` (sys.argv) is the `flask` command running one of `BOOTSTRAP_COMMANDS`, its options anywhere
    (`flask --app wsgi stripe create-catalog`, `python -m flask stripe webhook-endpoint --url …`)."""
    program = Path(argv[0]) if argv else Path()
    if program.name != "flask" and program.parent.name != "flask":
        return False
    words = [arg for arg in argv[1:] if not arg.startswith("-")]
    return any(pair in BOOTSTRAP_COMMANDS for pair in zip(words, words[1:], strict=False))


def load_settings(overrides: Mapping[str, str], instance_path: Path, bootstrapping: bool = False) -> Settings:
    """Validate the environment (with `overrides` on top, as `create_app(config)` passes them); `bootstrapping`:
    for a `BOOTSTRAP_COMMANDS` command, which production lets run without what it prints (`Var.made_by`).

    Raises ConfigurationError listing every problem, after printing it to stderr (a gunicorn import shows it).
    """
    token = _BOOTSTRAPPING.set(bootstrapping)
    try:
        values: dict[str, Any] = dict(overrides)
        settings = Settings(**values)
    except ValidationError as error:
        refusal = ConfigurationError(problem_lines(error))
        print(refusal, file=sys.stderr)
        raise refusal from None
    finally:
        _BOOTSTRAPPING.reset(token)
    if settings.ENVIRONMENT == "production" and (settings.STRIPE_SECRET_KEY or "").startswith(("sk_test_", "rk_test_")):
        print(
            "WARNING: ENVIRONMENT=production with a Stripe TEST key (sk_test_…): no real money will move.",
            file=sys.stderr,
        )
    return settings.with_local_defaults(instance_path)


def current_settings() -> Settings:
    """The settings `create_app` validated for the running app (`flask doctor` reads them)."""
    return current_app.extensions["settings"]
