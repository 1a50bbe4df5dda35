"""What the app adds to a request, as ratios against bare Flask measured in the same run, in one process.

Both apps are called through their WSGI callables (Werkzeug's test client, no server, no network), in turn, in
rounds, so that both sides of every ratio share the machine's noise: bare Flask `GET /hello`
(bench/bare_flask.py), the app's `GET /bench/hello` (a bare route behind all of the app's middleware) and the
anonymous `GET /pricing`; then the API's gated `GET /api/v1/strategies` (a Pro user's token, entitlements cached
in Redis) against its ungated twin `/bench/api/strategies-ungated` (bench/baselines.py); and that Pro user's logged-in
`/account` and `/billing` (paid through the bundled Stripe emulator's Checkout, logged in through the form; the
Stripe summary then cached in Redis, as a running app keeps it) against bare Flask. The app runs as in
production (JSON logs, rate limiter on Redis, security headers, HTTPS) on the PostgreSQL and Redis of
`scripts/test-services.sh start DIR` (TEST_DATABASE_URL, TEST_REDIS_URL; the schema is rebuilt and seeded); logs
are rendered in full and written to /dev/null. Rates are per second of this process's CPU time (the best round of
each), so that other processes on a loaded machine move them less than wall-clock time would.
`--profile` adds a cProfile of the app's hello route: the functions that cost the most, cumulative;
`--profile-pages` one of each logged-in page, `--profile-api` one of the gated and the ungated API route, in CPU
time (PROFILE_SORT and PROFILE_LINES change the listing;
PROFILE_CALLERS, a regular expression, lists who calls the functions it matches, PROFILE_CALLEES what they call).

    .venv/bin/python bench/request_overhead.py [--requests 2000] [--rounds 3] [--profile] [--profile-pages]
        [--profile-api]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import stripe  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app import create_app  # noqa: E402
from app.extensions import db  # noqa: E402
from app.logging import configure_root_logger  # noqa: E402
from app.models import Strategy, User, UserSubscription  # noqa: E402
from app.services.accounts import create_user  # noqa: E402
from app.services.catalog import plan_by_name, seed_plans_from_config  # noqa: E402
from app.services.sync import sync_customer  # noqa: E402
from bench import history  # noqa: E402
from bench.bare_flask import app as bare_app  # noqa: E402
from bench.baselines import ungated_api_blueprint  # noqa: E402
from stripe_emulator.testing import EmulatorServer  # noqa: E402

PRO_EMAIL, PRO_PASSWORD = "bench-pro@example.com", "bench-password-1"
#: The logged-in pages measured (the Pro user's, logged in through the form), against bare Flask's hello.
PAGES = ("/account", "/billing")
#: The API's gated route and its ungated twin (bench/baselines.py), with the Pro user's token.
API_ROUTES = ("/api/v1/strategies", "/bench/api/strategies-ungated")


def production_app(database_url: str, redis_url: str, stripe_api_base: str | None = None):
    """The app as production configures it, with the bench's bare route `/bench/hello` (on `stripe_api_base`, the
    emulator's URL, when given)."""
    config = {
        "ENVIRONMENT": "production",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        **{
            f"STRIPE_PRICE_{plan}": f"price_{plan.lower()}"
            for plan in ("FREE_MONTHLY", "STARTER_MONTHLY", "STARTER_YEARLY", "PRO_MONTHLY", "PRO_YEARLY")
        },
        "SECRET_KEY": "b" * 64,
        "JWT_SECRET_KEY": "j" * 64,
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "STRIPE_SECRET_KEY": "sk_test_" + "x" * 24,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_" + "x" * 24,
        "STRIPE_WEBHOOK_SECRET": "whsec_" + "x" * 24,
        "APP_BASE_URL": "https://bench.example.com",
        "ALLOWED_ORIGINS": '["https://bench.example.com"]',
        # As in make bench: the per-user API limit (300/min) is checked on every call but never reached.
        "RATELIMIT_API": "100000000 per minute",
        **({"STRIPE_API_BASE": stripe_api_base, "STRIPE_SECRET_KEY": "sk_test_emulator"} if stripe_api_base else {}),
    }
    # Nothing kept from an earlier run on these services: Stripe summaries of the previous run's user 1, its reads
    # of Stripe spent (RATELIMIT_BILLING), its rate limits.
    redis.Redis.from_url(redis_url).flushdb()
    app = create_app(config)

    @app.get("/bench/hello")
    def hello() -> str:
        """The cheapest page the app can serve."""
        return "hello"

    app.register_blueprint(ungated_api_blueprint(), url_prefix="/bench/api")
    with app.app_context():
        db.session.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        db.session.commit()
        upgrade()
        seed_plans_from_config()
        add_pro_user()
    logging.getLogger().handlers.clear()  # the migrations' logging.fileConfig added a console handler
    configure_root_logger(json=True, stream=open(os.devnull, "w"))  # rendered in full, written nowhere
    return app


def add_pro_user() -> None:
    """The user of the gated API route: on Pro (a live subscription row, as billing writes it), 5 strategies."""
    user = create_user(PRO_EMAIL, PRO_PASSWORD)
    db.session.add(
        UserSubscription(
            user_id=user.id,
            plan_id=plan_by_name("pro").id,
            billing_cycle="monthly",
            status="active",
            stripe_subscription_id="sub_bench_pro",
            stripe_price_id="price_pro_monthly",
        )
    )
    for n in range(5):
        db.session.add(Strategy(user_id=user.id, name=f"Strategy {n + 1}", rules="fast=20 slow=50"))
    db.session.commit()


def pay_in_emulator(app, emulator_url: str) -> None:
    """The Pro user pays for Pro through the emulator's Checkout, as in make bench: their subscription row is
    the emulator's (synced as the app copies it from Stripe), so that their billing page finds a card and an
    invoice in Stripe (then in the app's cache, as a running app keeps them)."""
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == PRO_EMAIL))
        customer = history.Customer(user.id, PRO_EMAIL)
        client = stripe.StripeClient("sk_test_emulator", base_addresses={"api": emulator_url}, max_network_retries=2)
        history.subscribe_customer(client, emulator_url, customer, "price_pro_monthly")
        user.stripe_customer_id = customer.customer_id
        db.session.execute(
            db.update(UserSubscription)
            .where(UserSubscription.user_id == user.id)
            .values(stripe_subscription_id=customer.subscription_id)
        )
        db.session.commit()
        sync_customer(customer.customer_id)


def logged_in_client(app, base_url: str, environ_base: dict | None = None):
    """A test client of the Pro user, logged in through the log-in form (its CSRF token and Referer included); its
    requests carry `environ_base` (a browser's address and user agent, which session protection compares with the
    log-in's on every page)."""
    client = app.test_client()
    client.environ_base.update(environ_base or {})
    page = client.get("/login", base_url=base_url).get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    form = {"csrf_token": token, "email": PRO_EMAIL, "password": PRO_PASSWORD, "next": ""}
    response = client.post("/login", base_url=base_url, data=form, headers={"Referer": base_url + "/login"})
    assert response.status_code in (302, 303), response.status_code
    return client


def rate(client, path: str, requests: int, base_url: str, headers: dict | None = None) -> float:
    """Requests per CPU second of `requests` sequential GETs (each must answer 200)."""
    started = time.process_time()
    for _ in range(requests):
        response = client.get(path, base_url=base_url, headers=headers)
        assert response.status_code == 200, (path, response.status_code)
    return requests / (time.process_time() - started)


def access_token(client, base_url: str) -> dict[str, str]:
    """The Pro user's bearer header, from the real token endpoint."""
    response = client.post("/api/v1/auth/token", json={"email": PRO_EMAIL, "password": PRO_PASSWORD}, base_url=base_url)
    assert response.status_code == 200, response.get_json()
    return {"Authorization": "Bearer " + response.get_json()["access_token"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-pages", action="store_true", help="cProfile (CPU time) /account and /billing")
    parser.add_argument("--profile-api", action="store_true", help="cProfile (CPU time) the gated and ungated API")
    parser.add_argument("--api-only", action="store_true", help="only bare Flask and the gated and ungated API")
    options = parser.parse_args()
    with EmulatorServer() as emulator:
        app = production_app(os.environ["TEST_DATABASE_URL"], os.environ["TEST_REDIS_URL"], emulator.url)
        pay_in_emulator(app, emulator.url)
        bare, ours = bare_app.test_client(), app.test_client()
        https = "https://bench.example.com"
        token = access_token(ours, https)
        member = logged_in_client(app, https)
        for path in PAGES:  # the catalogue, the cached entitlements and Stripe summary, as a running app has them
            rate(member, path, 5, https)
        pages = () if options.api_only else PAGES
        best: dict[str, float] = {"bare": 0.0, "gated": 0.0, "ungated": 0.0}
        best.update((name, 0.0) for name in ([] if options.api_only else ["hello", "pricing", *pages]))
        api = options.requests // 4
        for _ in range(options.rounds):  # interleaved: the best of each, from the same stretch of time
            best["bare"] = max(best["bare"], rate(bare, "/hello", options.requests, https))
            if not options.api_only:
                best["hello"] = max(best["hello"], rate(ours, "/bench/hello", options.requests, https))
                best["pricing"] = max(best["pricing"], rate(ours, "/pricing", options.requests // 4, https))
            best["gated"] = max(best["gated"], rate(ours, "/api/v1/strategies", api, https, token))
            best["ungated"] = max(best["ungated"], rate(ours, "/bench/api/strategies-ungated", api, https, token))
            for path in pages:
                best[path] = max(best[path], rate(member, path, options.requests // 4, https))
        report: dict[str, object] = {name: round(value) for name, value in best.items()}
        if not options.api_only:
            report.update(
                hello_ratio=round(best["hello"] / best["bare"], 3),
                pricing_ratio=round(best["pricing"] / best["bare"], 3),
            )
        report.update(
            gated_ratio=round(best["gated"] / best["ungated"], 3),
            # CPU milliseconds per API request (the best round's): what an API call costs the server
            gated_cpu_ms=round(1000 / best["gated"], 2),
            ungated_cpu_ms=round(1000 / best["ungated"], 2),
            **{f"{path.strip('/')}_ratio": round(best[path] / best["bare"], 3) for path in pages},
            load=[round(x, 1) for x in os.getloadavg()],
        )
        print(json.dumps(report))
        profiled = [(ours, "/bench/hello", None)] if options.profile else []
        profiled += [(member, path, None) for path in PAGES] if options.profile_pages else []
        profiled += [(ours, path, token) for path in API_ROUTES] if options.profile_api else []
        for client, path, headers in profiled:
            profiler = cProfile.Profile(time.process_time)
            requests = options.requests // (1 if path == "/bench/hello" else 4)
            profiler.runcall(rate, client, path, requests, https, headers)
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text).sort_stats(os.environ.get("PROFILE_SORT", "cumulative"))
            stats.print_stats(int(os.environ.get("PROFILE_LINES", "30")))
            if os.environ.get("PROFILE_CALLERS"):  # who calls the functions matching this regular expression
                stats.print_callers(os.environ["PROFILE_CALLERS"])
            if os.environ.get("PROFILE_CALLEES"):  # what the functions matching this regular expression call
                stats.print_callees(os.environ["PROFILE_CALLEES"])
            print("=====", path, "(CPU time)")
            print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
