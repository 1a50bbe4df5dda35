"""Smart Strategies Builder billing: the application factory."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from app import (
    cli,
    errors,
    sqlite_locking,  # noqa: F401  (SELECT … FOR UPDATE on the fresh-clone SQLite)
    templating,
    worker,
)
from app.account import bp as account_bp
from app.admin import bp as admin_bp
from app.alerts import bp as alerts_bp
from app.api import bp as api_bp
from app.billing import bp as billing_bp
from app.config import load_settings, runs_bootstrap_command
from app.extensions import (
    cache,
    cors,
    csrf,
    db,
    describe_on_read,
    jwt,
    limiter,
    login_manager,
    mail,
    migrate,
    ping_after_idle,
)
from app.health import bp as health_bp
from app.health.metrics_dir import warn_if_metrics_split
from app.logging import configure_logging
from app.metrics import bp as metrics_bp
from app.models import User  # noqa: F401  (every table is registered before Flask-Migrate looks)
from app.pricing import bp as pricing_bp
from app.security import load_session_user, register_hardening
from app.services import stripe_gateway
from app.services.billing_summary import forget_changed_outlook
from app.services.entitlements import forget_changed_entitlements
from app.services.mail import deliver_queued
from app.services.metrics import count_subscription_change
from app.services.signals import subscription_changed
from app.strategies import bp as strategies_bp
from app.webhooks import bp as webhooks_bp


class SiteJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with a body nested too deeply to parse refused as JSON that cannot be read.

    Python's parser recurses once per level and raises RecursionError, not ValueError, at about a thousand
    levels: `request.get_json()` (the API's bodies) then answered `[[[…]]]` with a 500 instead of the 400 of
    any other unreadable body. As a ValueError it is what werkzeug and the API's checks already refuse.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class SiteFlask(Flask):
    """Flask that looks at each hook and view once to tell whether it is a coroutine function.

    Flask asks `inspect.iscoroutinefunction` again for every before/after/teardown hook and the view of every
    request (over a dozen per request here); the answer never changes for a given function.
    """

    json_provider_class = SiteJSONProvider

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synced: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """`Flask.ensure_sync`, remembered per function."""
        try:
            return self._synced[func]
        except KeyError:
            synced = self._synced[func] = super().ensure_sync(func)
            return synced
        except TypeError:  # an unhashable callable
            return super().ensure_sync(func)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. `config` overrides the environment (string values) and app.config (the rest).

    Raises `ConfigurationError` (a SystemExit) listing every problem when the configuration cannot run.
    """
    root = Path(__file__).resolve().parent.parent
    if config is None:  # a real start (gunicorn, scripts): read `.env` like the `flask` command does
        load_dotenv(root / ".env")
    app = SiteFlask(__name__, instance_path=str(root / "instance"))
    overrides = {k: v for k, v in (config or {}).items() if isinstance(v, str)}
    # A real start of `flask stripe create-catalog` (or another bootstrap command) runs without what it prints.
    settings = load_settings(overrides, Path(app.instance_path), config is None and runs_bootstrap_command(sys.argv))
    app.extensions["settings"] = settings
    values = settings.flask_config()
    app.config.update(values)
    # Strings were read like environment variables above; anything else (or a key the settings do not
    # feed) goes straight into app.config, e.g. {"WTF_CSRF_ENABLED": False}.
    app.config.update({k: v for k, v in (config or {}).items() if not isinstance(v, str) or k not in values})

    configure_logging(app)
    if config is None:  # a real start: under gunicorn without PROMETHEUS_MULTIPROC_DIR, one warning line
        warn_if_metrics_split()
    register_hardening(app)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    register_template_helpers(app)
    register_signal_receivers()
    return app


def register_signal_receivers() -> None:
    """What follows a billing commit, in this order: the caches the next request reads, then mail (SMTP may be
    slow), then the counters. Connecting twice (every app of a test run) keeps one connection each."""
    subscription_changed.connect(forget_changed_entitlements)
    subscription_changed.connect(forget_changed_outlook)
    subscription_changed.connect(deliver_queued)
    subscription_changed.connect(count_subscription_change)


def register_extensions(app: Flask) -> None:
    """Bind the unbound extensions of `app/extensions.py`."""
    db.init_app(app)
    with app.app_context():
        describe_on_read(db.engine)
        if app.config.get("DATABASE_PING_AFTER_IDLE_SECONDS") is not None:
            ping_after_idle(db.engine, app.config["DATABASE_PING_AFTER_IDLE_SECONDS"])
    migrate.init_app(app, db, directory=str(Path(app.root_path).parent / "migrations"))
    cache.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    jwt.init_app(app)
    stripe_gateway.init_app(app)
    mail.init_app(app)
    # CORS only for the JSON API, only for the configured origins.
    cors.init_app(
        app,
        prefix=app.config["API_PREFIX"],
        origins=app.config["ALLOWED_ORIGINS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        supports_credentials=False,
    )
    login_manager.login_view = "account.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"
    login_manager.user_loader(load_session_user)


def register_blueprints(app: Flask) -> None:
    """Every URL prefix of the app, in one place."""
    app.register_blueprint(pricing_bp)
    app.register_blueprint(account_bp)
    app.register_blueprint(admin_bp, url_prefix="/admin")
    app.register_blueprint(billing_bp, url_prefix="/billing")
    app.register_blueprint(health_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(strategies_bp, url_prefix="/strategies")
    app.register_blueprint(alerts_bp, url_prefix="/alerts")
    app.register_blueprint(api_bp, url_prefix=app.config["API_PREFIX"])
    app.register_blueprint(webhooks_bp, url_prefix=app.config["API_PREFIX"] + "/billing/webhooks")


def register_errorhandlers(app: Flask) -> None:
    """HTML error pages for people, JSON for the API, a rollback on 500."""
    errors.register(app)


def register_commands(app: Flask) -> None:
    """`flask seed-plans`, `flask users …`, `flask stripe …`, `flask doctor`, `flask queue …`."""
    cli.register(app)
    worker.register(app)


def register_template_helpers(app: Flask) -> None:
    """Filters the templates use for money and dates."""
    templating.register(app)
