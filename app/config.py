"""Configuration: one class hierarchy read from environment variables (and a `.env` file).

`load_config(environ)` picks the class named by `ENVIRONMENT` and returns a plain dict for `app.config`.
Development and testing work with nothing set (SQLite under `instance/`, in-process cache, generated
secrets kept under `instance/`); production refuses to start and lists every problem at once.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from cryptography.fernet import Fernet

#: The variables of the deployment guide, in its order.
GUIDE_VARIABLES = (
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_PRICE_FREE_MONTHLY",
    "STRIPE_PRICE_STARTER_MONTHLY",
    "STRIPE_PRICE_STARTER_YEARLY",
    "STRIPE_PRICE_PRO_MONTHLY",
    "STRIPE_PRICE_PRO_YEARLY",
    "ENVIRONMENT",
    "DEBUG",
    "SECRET_KEY",
    "API_PREFIX",
    "ALLOWED_ORIGINS",
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET_KEY",
    "JWT_ALGORITHM",
    "ACCESS_TOKEN_EXPIRE_MINUTES",
    "REFRESH_TOKEN_EXPIRE_DAYS",
    "ENCRYPTION_KEY",
)

#: Variables production cannot do without (the others have safe defaults).
PRODUCTION_REQUIRED = (
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_PRICE_FREE_MONTHLY",
    "STRIPE_PRICE_STARTER_MONTHLY",
    "STRIPE_PRICE_STARTER_YEARLY",
    "STRIPE_PRICE_PRO_MONTHLY",
    "STRIPE_PRICE_PRO_YEARLY",
    "SECRET_KEY",
    "ALLOWED_ORIGINS",
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET_KEY",
    "ENCRYPTION_KEY",
    "APP_BASE_URL",
)

#: Price ids the development seed stores; the bundled Stripe emulator has the very same ids.
DEVELOPMENT_PRICE_IDS = {
    "STRIPE_PRICE_FREE_MONTHLY": "price_free_monthly",
    "STRIPE_PRICE_STARTER_MONTHLY": "price_starter_monthly",
    "STRIPE_PRICE_STARTER_YEARLY": "price_starter_yearly",
    "STRIPE_PRICE_PRO_MONTHLY": "price_pro_monthly",
    "STRIPE_PRICE_PRO_YEARLY": "price_pro_yearly",
}

PLACEHOLDER = re.compile(r"^<[^<>]*>$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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


def parse_bool(name: str, raw: str | None, default: bool, problems: list[str]) -> bool:
    """Read a boolean variable; an unreadable value is a problem, not a silent default."""
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    problems.append(f"{name} must be true or false, not {raw!r}")
    return default


def parse_int(name: str, raw: str | None, default: int, problems: list[str], minimum: int = 1) -> int:
    """Read an integer variable of at least `minimum` (positive by default)."""
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name} must be a whole number, not {raw!r}")
        return default
    if value < minimum:
        problems.append(f"{name} must be positive, not {raw!r}" if minimum == 1
                        else f"{name} must be at least {minimum}, not {raw!r}")
        return default
    return value


#: Who may scrape /metrics without the token: loopback and the private ranges a scraper lives in.
DEFAULT_METRICS_NETWORKS = "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7"


def parse_networks(name: str, raw: str, problems: list[str]) -> list[str]:
    """A comma- or space-separated list of networks (CIDR or single addresses), normalized."""
    networks = []
    for item in re.split(r"[,\s]+", raw.strip()):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            problems.append(f"{name} has {item!r}, which is not a network like 10.0.0.0/8")
    return networks


def operations_settings(env: Mapping[str, str], production: bool, problems: list[str]) -> dict[str, Any]:
    """Logging, metrics, proxy, cookies and Sentry: the settings of running the app (see issue 7)."""
    def get(name: str, default: str) -> str:
        value = env.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    trust_proxy = parse_bool("TRUST_PROXY", env.get("TRUST_PROXY"), production, problems)
    settings: dict[str, Any] = {
        "LOG_LEVEL": get("LOG_LEVEL", "INFO").upper(),
        "METRICS_ALLOWED_NETWORKS": parse_networks(
            "METRICS_ALLOWED_NETWORKS", get("METRICS_ALLOWED_NETWORKS", DEFAULT_METRICS_NETWORKS), problems),
        "METRICS_TOKEN": env.get("METRICS_TOKEN") or None,
        "SENTRY_DSN": env.get("SENTRY_DSN") or None,
        "SENTRY_TRACES_SAMPLE_RATE": 0.0,
        "TRUST_PROXY": trust_proxy,
        # Secure cookies only where the site is served over HTTPS; a browser drops them on http://127.0.0.1.
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_SECURE": production,
        "FORCE_HTTPS": production,
    }
    if settings["LOG_LEVEL"] not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        problems.append(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {settings['LOG_LEVEL']!r}")
        settings["LOG_LEVEL"] = "INFO"
    # How many proxies in front of the app set each X-Forwarded-* header (ProxyFix); 0 ignores the header.
    for header, default in (("FOR", 1), ("PROTO", 1), ("HOST", 1), ("PORT", 0), ("PREFIX", 0)):
        name = f"PROXY_FIX_X_{header}"
        settings[name] = parse_int(name, env.get(name), default, problems, minimum=0)
    raw_rate = env.get("SENTRY_TRACES_SAMPLE_RATE")
    if raw_rate:
        try:
            settings["SENTRY_TRACES_SAMPLE_RATE"] = float(raw_rate)
            if not 0 <= settings["SENTRY_TRACES_SAMPLE_RATE"] <= 1:
                raise ValueError
        except ValueError:
            problems.append(f"SENTRY_TRACES_SAMPLE_RATE must be a number from 0 to 1, not {raw_rate!r}")
            settings["SENTRY_TRACES_SAMPLE_RATE"] = 0.0
    token = settings["METRICS_TOKEN"]
    if production and token is not None and len(token) < 24:
        problems.append("METRICS_TOKEN must be at least 24 characters (e.g. `python -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))'`)")
    return settings


def normalize_database_url(url: str) -> str:
    """Drive `postgresql://…` (as the guide writes it) and `postgres://…` with psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
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


def development_secrets(instance_path: Path) -> dict[str, str]:
    """Secrets for development, generated once and kept in `instance/dev-secrets.json`.

    Generated, not hard-coded, so no secret is ever in the repository; kept, so sessions survive restarts.
    """
    path = instance_path / "dev-secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    wanted = {
        "SECRET_KEY": lambda: secrets.token_urlsafe(48),
        "JWT_SECRET_KEY": lambda: secrets.token_urlsafe(48),
        "ENCRYPTION_KEY": lambda: Fernet.generate_key().decode(),
        "STRIPE_WEBHOOK_SECRET": lambda: "whsec_dev" + secrets.token_hex(24),
    }
    missing = {k: make() for k, make in wanted.items() if k not in stored}
    if missing:
        stored.update(missing)
        instance_path.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=2))
        path.chmod(0o600)
    return stored


class Config:
    """Settings shared by every environment; subclasses change defaults and validation."""

    ENVIRONMENT = "development"
    DEBUG_DEFAULT = False
    #: Generated secrets are allowed (development, testing) or a start-up error (production).
    GENERATE_SECRETS = True
    TESTING = False

    @classmethod
    def load(cls, environ: Mapping[str, str], instance_path: Path) -> tuple[dict[str, Any], list[str]]:
        """Build the `app.config` dict from `environ`; return it with the list of problems found."""
        env = {k: v for k, v in environ.items() if v is not None}
        problems: list[str] = []

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name)
            return default if value is None or value == "" else value

        generated = development_secrets(instance_path) if cls.GENERATE_SECRETS else {}

        settings: dict[str, Any] = {
            "ENVIRONMENT": cls.ENVIRONMENT,
            "TESTING": cls.TESTING,
            "DEBUG": parse_bool("DEBUG", env.get("DEBUG"), cls.DEBUG_DEFAULT, problems),
            "API_PREFIX": "/" + (get("API_PREFIX", "/api/v1") or "").strip("/"),
            "JWT_ALGORITHM": get("JWT_ALGORITHM", "HS256"),
            "ACCESS_TOKEN_EXPIRE_MINUTES": parse_int(
                "ACCESS_TOKEN_EXPIRE_MINUTES", env.get("ACCESS_TOKEN_EXPIRE_MINUTES"), 15, problems
            ),
            "REFRESH_TOKEN_EXPIRE_DAYS": parse_int(
                "REFRESH_TOKEN_EXPIRE_DAYS", env.get("REFRESH_TOKEN_EXPIRE_DAYS"), 7, problems
            ),
            "STRIPE_API_BASE": get("STRIPE_API_BASE"),
            "STRIPE_API_VERSION": "2026-10-28.endive",
            "REDIS_URL": get("REDIS_URL"),
            "RATELIMIT_LOGIN": get("RATELIMIT_LOGIN", "10 per minute;50 per hour"),
            "RATELIMIT_BILLING": get("RATELIMIT_BILLING", "10 per minute"),
            "RATELIMIT_API": get("RATELIMIT_API", "300 per minute"),
            # Mail: SMTP when MAIL_SERVER is set; otherwise mails are written to instance/mail/ and logged.
            "MAIL_SERVER": get("MAIL_SERVER"),
            # Links that leave the app (Stripe's success/cancel/return URLs, mails) are built on it in production,
            # never on the request's Host header, which the client chooses.
            "APP_BASE_URL": get("APP_BASE_URL", "http://127.0.0.1:5000" if cls.GENERATE_SECRETS else None),
            "MAIL_PORT": parse_int("MAIL_PORT", env.get("MAIL_PORT"), 587, problems),
            "MAIL_USERNAME": get("MAIL_USERNAME"),
            "MAIL_PASSWORD": get("MAIL_PASSWORD"),
            "MAIL_USE_TLS": parse_bool("MAIL_USE_TLS", env.get("MAIL_USE_TLS"), False, problems),
            "MAIL_USE_SSL": parse_bool("MAIL_USE_SSL", env.get("MAIL_USE_SSL"), False, problems),
            # Flask-Mail would silently drop mail when TESTING; the tests want it on a real SMTP sink.
            "MAIL_SUPPRESS_SEND": parse_bool("MAIL_SUPPRESS_SEND", env.get("MAIL_SUPPRESS_SEND"), False, problems),
            "MAIL_DEFAULT_SENDER": get("MAIL_DEFAULT_SENDER", "Smart Strategies Builder <billing@localhost>"),
            # Seconds a user's entitlements stay cached (`entitlements:<user-id>`); billing changes invalidate them.
            "ENTITLEMENTS_CACHE_TTL": parse_int(
                "ENTITLEMENTS_CACHE_TTL", env.get("ENTITLEMENTS_CACHE_TTL"), 3600, problems
            ),
        }
        for name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY"):
            settings[name] = get(name)
        for name in ("SECRET_KEY", "JWT_SECRET_KEY", "ENCRYPTION_KEY", "STRIPE_WEBHOOK_SECRET"):
            settings[name] = get(name, generated.get(name))
        for name, dev_id in DEVELOPMENT_PRICE_IDS.items():
            settings[name] = get(name, dev_id if cls.GENERATE_SECRETS else None)

        raw_origins = get("ALLOWED_ORIGINS", "[]")
        try:
            origins = json.loads(raw_origins)
            if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
                raise ValueError
        except ValueError:
            if not PLACEHOLDER.match(raw_origins.strip()):
                problems.append(
                    f'ALLOWED_ORIGINS must be a JSON list of origins, e.g. ["https://app.example.com"], not {raw_origins!r}'
                )
            origins = []
        settings["ALLOWED_ORIGINS"] = origins

        database_url = get("DATABASE_URL")
        if database_url is None and cls.GENERATE_SECRETS:
            instance_path.mkdir(parents=True, exist_ok=True)
            database_url = f"sqlite:///{instance_path / 'app.db'}"
        settings["DATABASE_URL"] = database_url
        settings["SQLALCHEMY_DATABASE_URI"] = normalize_database_url(database_url or "")
        settings["SQLALCHEMY_ENGINE_OPTIONS"] = (
            {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}
            if database_url and is_postgresql(database_url)
            else {}
        )

        redis_url = settings["REDIS_URL"]
        if redis_url:
            settings.update(
                CACHE_TYPE="RedisCache",
                CACHE_REDIS_URL=redis_url,
                CACHE_KEY_PREFIX="",
                # Fail fast when Redis is down: callers fall back instead of hanging a worker.
                CACHE_OPTIONS={"socket_timeout": 1, "socket_connect_timeout": 1},
                RATELIMIT_STORAGE_URI=redis_url,
                RATELIMIT_STORAGE_OPTIONS={"socket_timeout": 1, "socket_connect_timeout": 1},
            )
        else:
            settings.update(CACHE_TYPE="SimpleCache", RATELIMIT_STORAGE_URI="memory://")
        # Redis down: limits keep working per process from memory instead of failing requests.
        settings.update(RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True, RATELIMIT_SWALLOW_ERRORS=True)
        settings["CACHE_DEFAULT_TIMEOUT"] = 300

        settings.update(
            JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings["ACCESS_TOKEN_EXPIRE_MINUTES"]),
            JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings["REFRESH_TOKEN_EXPIRE_DAYS"]),
            JWT_TOKEN_LOCATION=["headers"],
            JWT_ERROR_MESSAGE_KEY="message",
            SQLALCHEMY_TRACK_MODIFICATIONS=False,
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Lax",
            REMEMBER_COOKIE_HTTPONLY=True,
            REMEMBER_COOKIE_SAMESITE="Lax",
            MAX_CONTENT_LENGTH=1024 * 1024,
            WTF_CSRF_TIME_LIMIT=None,
        )
        settings.update(operations_settings(env, cls.ENVIRONMENT == "production", problems))
        cls.validate(env, settings, problems)
        return settings, problems

    @classmethod
    def validate(cls, env: Mapping[str, str], settings: dict[str, Any], problems: list[str]) -> None:
        """Development and testing accept anything that parsed."""


class DevelopmentConfig(Config):
    """A fresh clone: nothing to configure."""

    ENVIRONMENT = "development"


class TestingConfig(Config):
    """The test suite; the tests pass DATABASE_URL and REDIS_URL for the real servers."""

    ENVIRONMENT = "testing"
    TESTING = True


class ProductionConfig(Config):
    """Production: every secret from the environment, nothing generated, nothing guessed."""

    ENVIRONMENT = "production"
    GENERATE_SECRETS = False

    @classmethod
    def validate(cls, env: Mapping[str, str], settings: dict[str, Any], problems: list[str]) -> None:
        """List every missing variable, placeholder and unsafe value at once."""
        for name in PRODUCTION_REQUIRED:
            value = env.get(name, "")
            if value.strip() == "":
                problems.append(f"{name} is not set")
            elif PLACEHOLDER.match(value.strip()):
                problems.append(f"{name} is still the placeholder {value.strip()}")
        for name in GUIDE_VARIABLES:
            value = env.get(name, "").strip()
            if name not in PRODUCTION_REQUIRED and PLACEHOLDER.match(value):
                problems.append(f"{name} is still the placeholder {value}")
        if settings["DEBUG"]:
            problems.append("DEBUG=true is not allowed in production")
        key = env.get("ENCRYPTION_KEY", "").strip()
        if key and not PLACEHOLDER.match(key) and not is_fernet_key(key):
            problems.append("ENCRYPTION_KEY is not a valid Fernet key (generate one with "
                            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)")
        base = env.get("APP_BASE_URL", "").strip()
        if base and not PLACEHOLDER.match(base) and not base.startswith("https://"):
            problems.append("APP_BASE_URL must be the public https:// address of the app")
        url = env.get("DATABASE_URL", "").strip()
        if url and not PLACEHOLDER.match(url) and not is_postgresql(url):
            problems.append("DATABASE_URL must be a PostgreSQL URL (postgresql://user:password@host:5432/dbname)")
        stripe_key = env.get("STRIPE_SECRET_KEY", "").strip()
        if stripe_key and not PLACEHOLDER.match(stripe_key) and not stripe_key.startswith(("sk_live_", "sk_test_", "rk_live_", "rk_test_")):
            problems.append("STRIPE_SECRET_KEY must start with sk_live_ or sk_test_")


CONFIGS = {c.ENVIRONMENT: c for c in (DevelopmentConfig, TestingConfig, ProductionConfig)}


def load_config(environ: Mapping[str, str], instance_path: Path) -> dict[str, Any]:
    """Return the settings for `environ`; raise ConfigurationError listing every problem."""
    name = (environ.get("ENVIRONMENT") or "development").strip().lower()
    config_class = CONFIGS.get(name)
    if config_class is None:
        raise ConfigurationError([f"ENVIRONMENT must be one of {', '.join(CONFIGS)}, not {name!r}"])
    settings, problems = config_class.load(environ, instance_path)
    if problems:
        error = ConfigurationError(problems)
        print(error, file=sys.stderr)
        raise error
    if name == "production" and str(settings.get("STRIPE_SECRET_KEY", "")).startswith(("sk_test_", "rk_test_")):
        print("WARNING: ENVIRONMENT=production with a Stripe TEST key (sk_test_…): no real money will move.",
              file=sys.stderr)
    return settings


def environ_with_overrides(overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """The process environment with string overrides applied (used by `create_app(config)`)."""
    env = dict(os.environ)
    for key, value in (overrides or {}).items():
        if isinstance(value, str):
            env[key] = value
    return env
