"""Configuration: embedded defaults, production validation, and the real `flask`/gunicorn start paths."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from app import create_app
from app.config import GUIDE_VARIABLES, ConfigurationError
from app.extensions import limiter

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch):
    for name in GUIDE_VARIABLES + ("STRIPE_API_BASE",):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def production_env(**overrides):
    env = {
        "ENVIRONMENT": "production",
        "STRIPE_SECRET_KEY": "sk_live_" + "x" * 24,
        "STRIPE_PUBLISHABLE_KEY": "pk_live_" + "x" * 24,
        "STRIPE_WEBHOOK_SECRET": "whsec_" + "y" * 32,
        "STRIPE_PRICE_FREE_MONTHLY": "price_free",
        "STRIPE_PRICE_STARTER_MONTHLY": "price_sm",
        "STRIPE_PRICE_STARTER_YEARLY": "price_sy",
        "STRIPE_PRICE_PRO_MONTHLY": "price_pm",
        "STRIPE_PRICE_PRO_YEARLY": "price_py",
        "SECRET_KEY": "s" * 40,
        "ALLOWED_ORIGINS": '["https://app.example.com"]',
        "DATABASE_URL": "postgresql://ssb:pw@db.internal:5432/ssb",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "JWT_SECRET_KEY": "j" * 40,
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "APP_BASE_URL": "https://billing.example.com",
    }
    env.update(overrides)
    return env


def test_development_needs_nothing(clean_env):
    app = create_app()
    assert app.config["ENVIRONMENT"] == "development"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{ROOT / 'instance' / 'app.db'}"
    assert app.config["CACHE_TYPE"] == "SimpleCache"
    assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert app.config["API_PREFIX"] == "/api/v1"
    assert app.config["JWT_ALGORITHM"] == "HS256"
    assert app.config["ACCESS_TOKEN_EXPIRE_MINUTES"] == 15
    assert app.config["REFRESH_TOKEN_EXPIRE_DAYS"] == 7
    assert app.config["DEBUG"] is False
    assert app.config["STRIPE_PRICE_STARTER_MONTHLY"] == "price_starter_monthly"
    # Generated once and kept: a restart keeps sessions valid.
    assert len(app.config["SECRET_KEY"]) >= 32
    assert create_app().config["SECRET_KEY"] == app.config["SECRET_KEY"]
    Fernet(app.config["ENCRYPTION_KEY"].encode())


def test_production_lists_every_problem_at_once(clean_env):
    with pytest.raises(ConfigurationError) as excinfo:
        create_app(
            {
                "ENVIRONMENT": "production",
                "SECRET_KEY": "<your-secret-key>",
                "DEBUG": "true",
                "ENCRYPTION_KEY": "not-a-key",
                "DATABASE_URL": "sqlite:///prod.db",
            }
        )
    message = str(excinfo.value)
    assert excinfo.value.code != 0
    assert "SECRET_KEY is still the placeholder <your-secret-key>" in message
    for name in (
        "STRIPE_SECRET_KEY",
        "STRIPE_PUBLISHABLE_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_PRICE_FREE_MONTHLY",
        "STRIPE_PRICE_STARTER_MONTHLY",
        "STRIPE_PRICE_STARTER_YEARLY",
        "STRIPE_PRICE_PRO_MONTHLY",
        "STRIPE_PRICE_PRO_YEARLY",
        "ALLOWED_ORIGINS",
        "REDIS_URL",
        "JWT_SECRET_KEY",
    ):
        assert f"{name} is not set" in message
    assert "DEBUG=true is not allowed in production" in message
    assert "ENCRYPTION_KEY is not a valid Fernet key" in message
    assert "DATABASE_URL must be a PostgreSQL URL" in message
    assert "APP_BASE_URL is not set (the app's own public https:// address, such as https://api." in message


def test_production_with_a_complete_environment_starts(clean_env):
    app = create_app(production_env())
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://ssb:pw@db.internal:5432/ssb"
    assert app.config["CACHE_TYPE"] == "RedisCache"
    assert app.config["ALLOWED_ORIGINS"] == ["https://app.example.com"]
    with app.app_context():
        from app.extensions import db

        assert db.engine.dialect.driver == "psycopg"


def test_production_test_key_is_allowed_with_a_warning(clean_env, capsys):
    create_app(production_env(STRIPE_SECRET_KEY="sk_test_" + "x" * 24))
    assert "TEST key" in capsys.readouterr().err


def test_placeholders_from_the_example_file_are_refused(clean_env):
    example = (ROOT / "deploy" / ".env.example").read_text()
    env = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))
    for name in GUIDE_VARIABLES + ("APP_BASE_URL",):
        assert name in env, f"deploy/.env.example lacks {name}"
    with pytest.raises(ConfigurationError) as excinfo:
        create_app({**env, "ENVIRONMENT": "production", "DEBUG": "false"})
    assert "STRIPE_SECRET_KEY is still the placeholder" in str(excinfo.value)


def test_bad_numbers_and_lists_are_named(clean_env):
    with pytest.raises(ConfigurationError) as excinfo:
        create_app({"ACCESS_TOKEN_EXPIRE_MINUTES": "soon", "ALLOWED_ORIGINS": "https://a.example"})
    assert "ACCESS_TOKEN_EXPIRE_MINUTES must be a whole number" in str(excinfo.value)
    assert "ALLOWED_ORIGINS must be a JSON list" in str(excinfo.value)


def _run(args, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in GUIDE_VARIABLES}
    full_env.update(env)
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)


def test_flask_command_refuses_to_start_in_production_naming_every_problem():
    result = _run([str(ROOT / ".venv/bin/flask"), "routes"], ENVIRONMENT="production", SECRET_KEY="<your-secret-key>")
    assert result.returncode != 0
    assert "SECRET_KEY is still the placeholder" in result.stderr
    assert "STRIPE_SECRET_KEY is not set" in result.stderr
    assert "DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_import_refuses_to_start_in_production():
    result = _run([sys.executable, "-c", "import wsgi"], ENVIRONMENT="production")
    assert result.returncode != 0
    assert "ENCRYPTION_KEY is not set" in result.stderr


GUIDE_DATABASE_URL = "postgresql://<user>:<password>@<host>:<port>/<database>"


def test_every_placeholder_inside_a_value_is_a_line_of_the_refusal(clean_env):
    """The guide's own DATABASE_URL and REDIS_URL, copied as they are: one line per placeholder, no traceback."""
    with pytest.raises(ConfigurationError) as excinfo:
        create_app(
            production_env(
                DATABASE_URL=GUIDE_DATABASE_URL,
                REDIS_URL="redis://<host>:<port>/0",
                SENTRY_DSN="https://<key>@<org>.ingest.sentry.io/<project>",
            )
        )
    problems = excinfo.value.problems
    for placeholder in ("<user>", "<password>", "<host>", "<port>", "<database>"):
        assert f"DATABASE_URL still contains the placeholder {placeholder}" in problems
    assert "REDIS_URL still contains the placeholder <port>" in problems
    assert "SENTRY_DSN still contains the placeholder <project>" in problems
    assert len(problems) == 10, problems
    assert str(excinfo.value).startswith("Refusing to start: the configuration has 10 problem(s):\n  - ")


def test_the_guides_database_url_refuses_to_start_without_a_traceback():
    result = _run([str(ROOT / ".venv/bin/flask"), "routes"], **production_env(DATABASE_URL=GUIDE_DATABASE_URL))
    assert result.returncode == 4, result.stderr
    assert "DATABASE_URL still contains the placeholder <port>" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_database_url_is_a_problem_line_in_development(clean_env):
    with pytest.raises(ConfigurationError) as excinfo:
        create_app({"DATABASE_URL": GUIDE_DATABASE_URL})
    assert excinfo.value.problems == [
        "DATABASE_URL is not a database URL like postgresql://user:password@host:5432/dbname"
    ]


def test_an_address_in_angle_brackets_is_not_a_placeholder(clean_env):
    app = create_app(production_env(MAIL_DEFAULT_SENDER="Billing <billing@example.com>"))
    assert app.config["MAIL_DEFAULT_SENDER"] == "Billing <billing@example.com>"
    with pytest.raises(ConfigurationError) as excinfo:
        create_app(production_env(MAIL_DEFAULT_SENDER="Billing <your-sender-address>"))
    assert excinfo.value.problems == ["MAIL_DEFAULT_SENDER still contains the placeholder <your-sender-address>"]


@pytest.mark.parametrize("environment", ["development", "testing", "production"])
@pytest.mark.parametrize("algorithm", ["none", "RS256", "hs256"])
def test_jwt_algorithm_must_be_an_hmac_one_in_every_environment(clean_env, environment, algorithm):
    """Tokens are signed with JWT_SECRET_KEY: anything but HS256/384/512 would start and then answer 500."""
    with pytest.raises(ConfigurationError) as excinfo:
        create_app(production_env(ENVIRONMENT=environment, JWT_ALGORITHM=algorithm))
    assert excinfo.value.problems == [f"JWT_ALGORITHM must be HS256, HS384 or HS512, not {algorithm!r}"]


def test_another_hmac_algorithm_signs_the_api_tokens(clean_env, tmp_path):
    app = create_app({"JWT_ALGORITHM": "HS512", "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"})
    with app.app_context():
        from flask_jwt_extended import create_access_token, decode_token

        token = create_access_token(identity="1")
        assert decode_token(token)["sub"] == "1"
    import jwt as pyjwt

    assert pyjwt.get_unverified_header(token)["alg"] == "HS512"


def test_the_seed_script_refuses_to_start_like_flask():
    result = _run([sys.executable, "scripts/seed_plans.py"], **production_env(JWT_ALGORITHM="none"))
    assert result.returncode == 4, result.stderr
    assert "Refusing to start: JWT_ALGORITHM must be HS256, HS384 or HS512, not 'none'" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_settings_object_feeds_app_config(clean_env):
    """`app.config` is derived from the validated settings, which the app keeps for `flask doctor`."""
    app = create_app(production_env(ACCESS_TOKEN_EXPIRE_MINUTES=" 30 ", DEBUG="", TRUST_PROXY="no"))
    settings = app.extensions["settings"]
    assert settings.ACCESS_TOKEN_EXPIRE_MINUTES == app.config["ACCESS_TOKEN_EXPIRE_MINUTES"] == 30
    assert app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds() == 30 * 60
    assert settings.DEBUG is app.config["DEBUG"] is False  # blank counts as unset
    assert settings.TRUST_PROXY is app.config["TRUST_PROXY"] is False
    assert create_app(production_env()).config["TRUST_PROXY"] is True  # unset: trusted in production
    for name in GUIDE_VARIABLES:
        assert name in app.config


@pytest.fixture
def no_queue_env(clean_env):
    for name in ("TASK_QUEUE_URL", "WEBHOOK_APPLY"):
        clean_env.delenv(name, raising=False)
    return clean_env


def test_webhooks_are_applied_on_the_queue_once_there_is_one(no_queue_env):
    """Unset WEBHOOK_APPLY: `queue` with a task queue, `request` without (a fresh clone); an explicit value stays."""
    queue = "redis://queue.internal:6379/1"
    assert create_app().config["WEBHOOK_APPLY"] == "request"
    assert create_app({"TASK_QUEUE_URL": queue}).config["WEBHOOK_APPLY"] == "queue"
    assert create_app(production_env(TASK_QUEUE_URL=queue)).config["WEBHOOK_APPLY"] == "queue"
    assert create_app(production_env()).config["WEBHOOK_APPLY"] == "request"
    assert create_app({"TASK_QUEUE_URL": queue, "WEBHOOK_APPLY": "Request"}).config["WEBHOOK_APPLY"] == "request"
    assert create_app({"TASK_QUEUE_URL": queue, "WEBHOOK_APPLY": " "}).config["WEBHOOK_APPLY"] == "queue"


def test_webhooks_on_the_queue_without_a_queue_is_a_problem_line(no_queue_env):
    with pytest.raises(ConfigurationError) as excinfo:
        create_app({"WEBHOOK_APPLY": "queue"})
    assert str(excinfo.value) == (
        "Refusing to start: WEBHOOK_APPLY=queue needs TASK_QUEUE_URL (the task queue whose workers apply the events): "
        "set it, or WEBHOOK_APPLY=request"
    )
    with pytest.raises(ConfigurationError) as excinfo:  # listed with the others
        create_app(production_env(WEBHOOK_APPLY="queue", SECRET_KEY="<your-secret-key>"))
    assert excinfo.value.problems == [
        "SECRET_KEY is still the placeholder <your-secret-key>",
        "WEBHOOK_APPLY=queue needs TASK_QUEUE_URL (the task queue whose workers apply the events): "
        "set it, or WEBHOOK_APPLY=request",
    ]
    with pytest.raises(ConfigurationError) as excinfo:
        create_app({"WEBHOOK_APPLY": "worker", "TASK_QUEUE_URL": "redis://queue.internal:6379/1"})
    assert excinfo.value.problems == ["WEBHOOK_APPLY must be request or queue, not 'worker'"]


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "off"])
def test_rate_limits_are_turned_off_from_the_environment(clean_env, value):
    """RATELIMIT_ENABLED is the switch `flask doctor` names: set in the environment, it turns every limit off."""
    clean_env.setenv("RATELIMIT_ENABLED", value)
    app = create_app()
    assert app.config["RATELIMIT_ENABLED"] is False
    assert limiter.enabled is False


def test_rate_limits_are_on_unless_the_environment_says_otherwise(clean_env):
    clean_env.delenv("RATELIMIT_ENABLED", raising=False)
    assert create_app().config["RATELIMIT_ENABLED"] is True
    clean_env.setenv("RATELIMIT_ENABLED", "true")
    assert create_app() and limiter.enabled is True


def test_an_unreadable_rate_limit_switch_is_a_problem_line(clean_env):
    clean_env.setenv("RATELIMIT_ENABLED", "maybe")
    with pytest.raises(ConfigurationError) as excinfo:
        create_app()
    assert excinfo.value.problems == ["RATELIMIT_ENABLED must be true or false, not 'maybe'"]


#: Eight processes asking a fresh instance folder for the same development secrets at once, as the test run's
#: workers and `make run`'s processes do on a fresh clone: each prints what it got.
SECRETS_AT_ONCE = """
import sys, time
from pathlib import Path
from app.config import development_secret
folder, start = Path(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
for name in ("SECRET_KEY", "JWT_SECRET_KEY", "ENCRYPTION_KEY"):
    print(name, development_secret(folder, name, lambda: __import__("secrets").token_hex(32)))
"""


def test_processes_starting_at_once_on_a_fresh_clone_share_one_set_of_development_secrets(tmp_path):
    """A fresh clone's first `make test` collected the suite in two workers at once: one read `dev-secrets.json`
    while the other was writing it (a JSONDecodeError that failed the run), or each kept a secret of its own."""
    for attempt in range(3):
        folder = tmp_path / f"instance-{attempt}"
        start = time.time() + 1.5  # all eight imported before any begins
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", SECRETS_AT_ONCE, str(folder), str(start)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        outputs = [process.communicate(timeout=60) for process in processes]
        assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
        assert len({out for out, _ in outputs}) == 1, "the processes kept different secrets"
        assert oct((folder / "dev-secrets.json").stat().st_mode & 0o777) == "0o600"
