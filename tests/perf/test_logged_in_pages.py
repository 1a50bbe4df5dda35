"""What a logged-in page costs: SQL statements per view, and time per view against bare Flask in the same process.

A Pro customer (paid through the emulator's Checkout) logs in through the log-in form, as the bench does; then
`/account` and `/billing` are viewed once each to fill what a running app keeps (the plan catalogue, the cached
entitlements and Stripe summary). The statements of one more view of each are counted on the engine (ceilings
below, each a test), and the time of a view is compared with bench/bare_flask.py's `hello` called in turn, in
rounds, in this process (printed, wall and CPU time; timing under a shared machine's load is not asserted).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import flask
import flask_login.utils
import pytest
import sqlalchemy as sa
from flask_wtf import FlaskForm
from flask_wtf.csrf import generate_csrf
from jinja2 import Template
from sqlalchemy.orm import loading
from sqlalchemy.sql.compiler import SQLCompiler
from werkzeug.routing import MapAdapter

from app.extensions import db
from app.models import AuthSession, SubscriptionPlan, User, UserSubscription
from app.services import sessions, viewer
from app.services.catalog import catalog, plan_view
from app.templating import request_csrf_token
from bench.bare_flask import app as bare_app
from tests.billing.conftest import Billing

#: Statements sent to the database by one view, each a ceiling. The log-in check reads the user, their live
#: server-side session and their subscriptions with their plans in one statement (the payment banner, the account
#: and billing pages read them from there); on the account page the same statement reads its usage counts and
#: email confirmation, and the page takes its plan's features and limits from the catalogue. (Before: 9 and 3.)
CEILINGS = {"/account": 1, "/billing": 1}
#: Rounds of the timing comparison, and views of each side per round (the best round of each side counts).
ROUNDS, VIEWS = 5, 40


@contextlib.contextmanager
def statements(app):
    """The SQL statements sent while the block runs."""
    sent: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, text, params, context, executemany):
        sent.append(" ".join(text.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def pro_client(seeded, client, auth, stripe_emulator):
    """The test client of a Pro customer who logged in through the form, each page viewed once."""
    auth.signup()
    billing = Billing(seeded, client, auth, stripe_emulator)
    assert billing.subscribe("pro", "monthly").status_code == 200
    assert auth.logout().status_code == 302
    assert auth.login().status_code == 302
    for path in CEILINGS:
        assert client.get(path).status_code == 200  # not sent to /login
    return client


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_stays_within_its_statements(app, pro_client, path):
    with statements(app) as sent:
        assert pro_client.get(path).status_code == 200
    print(path, len(sent), *(text[:300] for text in sent), sep="\n  ")
    assert len(sent) <= CEILINGS[path], sent


def per_view_ms(client, path: str, views: int) -> tuple[float, float]:
    """Wall and CPU (this process) milliseconds per view of `views` sequential GETs, each answering 200."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(views):
        assert client.get(path).status_code == 200
    return (time.perf_counter() - wall) * 1000 / views, (time.process_time() - cpu) * 1000 / views


def test_time_of_a_logged_in_view_against_bare_flask(pro_client, capsys):
    bare = bare_app.test_client()
    best = {name: (float("inf"), float("inf")) for name in ("bare", *CEILINGS)}
    for _ in range(ROUNDS):  # interleaved: each side's best round, from the same stretch of time
        best["bare"] = min(best["bare"], per_view_ms(bare, "/hello", VIEWS * 10))
        for path in CEILINGS:
            best[path] = min(best[path], per_view_ms(pro_client, path, VIEWS))
    with capsys.disabled():
        for path in CEILINGS:
            (wall, cpu), (bare_wall, bare_cpu) = best[path], best["bare"]
            print(
                f"\n{path}: {wall:.2f} ms per view ({cpu:.2f} ms CPU); bare Flask {bare_wall:.3f} ms "
                f"({bare_cpu:.3f} ms CPU): {bare_wall / wall:.3f} of bare Flask's rate ({bare_cpu / cpu:.3f} by CPU)"
            )


def test_the_request_memo_of_subscriptions_is_read_afresh_after_a_commit(app, pro_client):
    """A page rendered after a change reads the rows the change committed, not those of the log-in check."""
    with app.test_request_context("/account"):
        user_id = db.session.scalar(sa.select(User.id))
        with statements(app) as first:
            [row] = viewer.subscriptions(user_id)
            assert viewer.paid_subscription(user_id) is row and row.plan.name == "pro"
        with statements(app) as memo:
            assert viewer.live_subscription(user_id) is row
        db.session.execute(sa.update(UserSubscription).values(status="canceled"))
        db.session.commit()
        with statements(app) as after:
            assert viewer.subscriptions(user_id) == [] and viewer.effective_subscription(user_id) is None
    assert (len(first), len(memo), len(after)) == (1, 0, 1)


def test_the_account_pages_own_values_are_read_with_the_log_in_check_only_for_that_transaction(app, pro_client):
    """The usage counts the log-in check read for the account page serve that page only until a commit or a
    rollback; other pages' log-in checks read none."""
    with statements(app) as sent:
        assert pro_client.get("/account").status_code == 200
    [statement] = sent
    assert "strategies" in statement and "verified_emails" in statement
    with statements(app) as sent:
        assert pro_client.get("/billing").status_code == 200
    assert not any("verified_emails" in text for text in sent)
    with app.test_request_context("/account"):
        user_id = db.session.scalar(sa.select(User.id))
        session_id = db.session.scalar(sa.select(AuthSession.id).where(AuthSession.revoked_at.is_(None)))
        assert viewer.logged_in_user(session_id, user_id) is not None
        strategies, backtests, verified = viewer.page_values(user_id)
        assert (strategies, backtests) == (0, 0)
        db.session.commit()
        assert viewer.page_values(user_id) is None


def test_a_logged_in_view_builds_no_url_its_app_built_before(pro_client, monkeypatch):
    """The navigation, forms and links of a page the process served before cost no URL building (each one a rule
    lookup and build in Werkzeug): the templates' url_for remembers them per app."""
    built: list[str] = []
    build = MapAdapter.build

    def counted(adapter, endpoint, *args, **kwargs):
        built.append(endpoint)
        return build(adapter, endpoint, *args, **kwargs)

    monkeypatch.setattr(MapAdapter, "build", counted)
    for path in CEILINGS:
        assert pro_client.get(path).status_code == 200
    assert built == []


def test_the_log_in_check_reads_no_plan_the_catalogue_holds(app, pro_client):
    """The subscriptions come as values with the catalogue's plan: the statement joins no plan table and makes
    no ORM object of the subscription."""
    with statements(app) as sent:
        assert pro_client.get("/billing").status_code == 200
    [statement] = sent
    assert "subscription_plans" not in statement
    with app.test_request_context("/billing"):
        user_id = db.session.scalar(sa.select(User.id))
        [row] = viewer.subscriptions(user_id)
        assert isinstance(row, viewer.SubscriptionView) and row.plan in catalog()
        assert not any(isinstance(item, UserSubscription) for item in db.session.identity_map.values())


def test_a_plan_seeded_since_the_catalogue_was_read_is_found(app, pro_client):
    with app.test_request_context("/billing"):
        assert all(plan.name != "extra" for plan in catalog())  # the catalogue as this process keeps it
        plan = SubscriptionPlan(name="extra", display_name="Extra", price_monthly=Decimal("5.00"))
        db.session.add(plan)
        db.session.commit()
        assert plan_view(plan.id).display_name == "Extra"


def profiled_calls(action, counted) -> int:
    """How many Python calls `counted(code)` accepts while `action()` ran (a profile hook; built-ins not seen)."""
    count = 0

    def hook(frame, event, arg):
        nonlocal count
        if event == "call" and counted(frame.f_code):
            count += 1

    sys.setprofile(hook)
    try:
        action()
    finally:
        sys.setprofile(None)
    return count


def calls_of(function, action) -> int:
    """How many times `function` ran while `action()` ran, however it was reached (a profile hook on its code)."""
    code = function.__code__
    return profiled_calls(action, lambda called: called is code)


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_asks_flask_wtf_for_its_csrf_token_once_at_most(pro_client, path):
    """The navigation's log-out form and each of the page's forms carry the token Flask-WTF signed once for the
    session's raw token (tokens never expire: WTF_CSRF_TIME_LIMIT is None); the templates read it back instead of
    asking Flask-WTF again, within the request and on the session's next pages. (Before: once per view.)"""
    pages = []

    def view():
        pages.append(pro_client.get(path).get_data(as_text=True))

    assert calls_of(generate_csrf, view) <= 1
    assert calls_of(generate_csrf, view) == 0
    tokens = [{a or b for a, b in CSRF_FIELDS.findall(page)} for page in pages]
    assert all(len(CSRF_FIELDS.findall(page)) >= 2 for page in pages)
    assert len(tokens[0]) == 1 and tokens[0] == tokens[1]


CSRF_FIELDS = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def test_a_remembered_csrf_token_is_accepted_and_a_time_limit_signs_afresh(app, pro_client):
    """The token a later page carries again is the one Flask-WTF accepts for the session; with a time limit each
    request signs its own, as Flask-WTF does."""
    first = CSRF_FIELDS.search(pro_client.get("/account").get_data(as_text=True))
    again = CSRF_FIELDS.search(pro_client.get("/account").get_data(as_text=True))
    assert (first.group(1) or first.group(2)) == (again.group(1) or again.group(2))
    response = pro_client.post("/account/logout-everywhere", data={"csrf_token": again.group(1) or again.group(2)})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    csrf_token = request_csrf_token(app)

    def signatures() -> int:
        with app.test_request_context("/account"):
            flask.session["csrf_token"] = "the session's raw token"
            return calls_of(generate_csrf, csrf_token)

    assert [signatures(), signatures()] == [1, 0]
    app.config["WTF_CSRF_TIME_LIMIT"] = 3600
    assert [signatures(), signatures()] == [1, 1]


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_sends_no_session_cookie_it_did_not_change(app, pro_client, path):
    """The session cookie is signed and sent when the session changes (log-in, log-out), not again on every view:
    its lifetime is the server-side session's, fixed at the log-in, which a re-sent cookie would not extend."""
    response = pro_client.get(path)
    assert response.status_code == 200
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    assert not [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{cookie_name}=")]
    # …and the session still holds: the next view is the member's page, not the log-in form.
    assert pro_client.get(path).status_code == 200


def test_a_pages_own_values_cannot_stand_in_for_the_log_in_checks(app, pro_client, monkeypatch):
    """A page whose values reused a name of the log-in check (`now`, `user_id`, `session_id`) would otherwise decide
    the session check: here a `now` from long ago would let an expired session in."""
    statement, width, params = viewer._PAGES["account.show_account"]
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    monkeypatch.setitem(
        viewer._PAGES, "account.show_account", (statement, width, lambda: {**params(), "now": long_ago})
    )
    with app.app_context():
        db.session.execute(sa.update(AuthSession).values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        db.session.commit()
    response = pro_client.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_opens_no_transaction_on_the_server(app, pro_client, path):
    """The log-in check is the first statement of the request: it reads in autocommit, so that a page that only
    reads sends no BEGIN (and, there being no transaction, no ROLLBACK when its session ends): one round trip. The
    driver is back in transactions once the statement has run."""
    seen: list[tuple[str, bool]] = []
    drivers = []

    def after(conn, cursor, statement, parameters, context, executemany):
        driver = conn.connection.driver_connection
        drivers.append(driver)
        seen.append((driver.info.transaction_status.name, driver.autocommit))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        assert pro_client.get(path).status_code == 200
    finally:
        sa.event.remove(engine, "after_cursor_execute", after)
    assert seen == [("IDLE", True)]
    assert [driver.autocommit for driver in drivers] == [False]


def logged_in_ids(app) -> tuple[int, str]:
    with app.app_context():
        user_id = db.session.scalar(sa.select(User.id))
        session_id = db.session.scalar(sa.select(AuthSession.id).where(AuthSession.revoked_at.is_(None)))
    return user_id, session_id


def test_what_a_request_writes_after_the_log_in_check_is_in_a_transaction(app, pro_client):
    user_id, session_id = logged_in_ids(app)
    with app.test_request_context("/account"):
        user = viewer.logged_in_user(session_id, user_id)
        assert user is not None
        user.billing_email = "changed@example.com"
        db.session.flush()
        driver = db.session.connection().connection.driver_connection
        assert (driver.info.transaction_status.name, driver.autocommit) == ("INTRANS", False)
        db.session.rollback()
        assert db.session.scalar(sa.select(User.billing_email).where(User.id == user_id)) != "changed@example.com"


def test_a_session_with_unflushed_changes_reads_the_log_in_check_in_its_transaction(app, pro_client):
    """Autoflush before the log-in check must not write outside a transaction: the change is rolled back."""
    user_id, session_id = logged_in_ids(app)
    with app.test_request_context("/account"):
        db.session.add(SubscriptionPlan(name="pending", display_name="Pending", price_monthly=Decimal("1.00")))
        assert viewer.logged_in_user(session_id, user_id) is not None
        driver = db.session.connection().connection.driver_connection
        assert driver.info.transaction_status.name == "INTRANS"
        db.session.rollback()
        assert db.session.scalar(sa.select(SubscriptionPlan.id).where(SubscriptionPlan.name == "pending")) is None


def test_the_account_page_builds_no_blank_form_it_rendered_before(pro_client):
    """The blank email and password forms are rendered once per app: a view builds neither form again."""
    assert calls_of(FlaskForm.__init__, lambda: pro_client.get("/account")) == 0


def test_the_account_page_imports_no_macro_module_while_rendering(pro_client):
    """An `{% from … import %}` in a page has Jinja compare the templates' globals on every render before it may
    reuse the imported module; the account page is handed the usage macro instead."""
    imports = 0

    def hook(frame, event, arg):
        nonlocal imports
        if event == "call" and frame.f_code is Template._get_default_module.__code__ and frame.f_locals.get("ctx"):
            imports += 1

    sys.setprofile(hook)
    try:
        assert pro_client.get("/account").status_code == 200
    finally:
        sys.setprofile(None)
    assert imports == 0


#: Reads of `current_user` through Flask-Login's proxy (each a context lookup and a call) in one view: the request
#: log's (one read for its user id), `login_required`'s, the templates' context and the view's own; the billing
#: summary and the layout read the user object. (Before: 6 and 12; then 6 and 6, the request log reading it thrice.)
PROXY_READS = {"/account": 4, "/billing": 4}


@pytest.mark.parametrize("path", list(PROXY_READS))
def test_a_logged_in_view_reads_the_user_through_the_proxy_a_few_times(pro_client, path):
    reads = calls_of(flask_login.utils._get_user, lambda: pro_client.get(path))
    assert reads <= PROXY_READS[path]


def test_a_connection_the_caller_put_in_autocommit_is_left_in_autocommit(app, pro_client):
    """The log-in check's autocommit read gives the driver back as it found it: a session its caller put in
    AUTOCOMMIT is not turned back to transactions behind SQLAlchemy's back (its writes would then be rolled back)."""
    user_id, session_id = logged_in_ids(app)
    with app.test_request_context("/account"):
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        assert viewer.logged_in_user(session_id, user_id) is not None
        assert db.session.connection().connection.driver_connection.autocommit
        db.session.rollback()


@pytest.mark.parametrize("path", list(CEILINGS))
def test_the_log_in_statement_is_not_rewritten_on_each_view(pro_client, path):
    """The statuses of a subscription that is not over are part of the log-in statement's SQL, compiled once per
    process: an `IN` of bound values would be rewritten into new SQL and parameters on every execution."""
    rewrites = calls_of(SQLCompiler._process_parameters_for_postcompile, lambda: pro_client.get(path))
    assert rewrites == 0


def python_calls(action) -> int:
    """How many Python functions ran while `action()` ran (built-in calls not counted)."""
    return profiled_calls(action, lambda called: True)


@pytest.mark.parametrize("arguments", [{}, {"filename": "css/app.css"}])
def test_a_url_the_templates_built_before_costs_one_context_lookup(app, arguments):
    """The layout asks the templates' url_for for a score of URLs on every page (its assets and navigation): a
    remembered one is answered with the request context's lookup (two calls in Werkzeug's proxy) and built-in
    calls only. (Before: 5 Python calls without arguments, 8 with an asset's file name.)"""
    url_for = app.jinja_env.globals["url_for"]
    endpoint = "static" if arguments else "account.show_account"
    with app.test_request_context("/account"):
        url = url_for(endpoint, **arguments)
        assert python_calls(lambda: url_for(endpoint, **arguments)) <= 4  # this lambda, url_for, the lookup
        assert url_for(endpoint, **arguments) == url


@pytest.mark.parametrize("path", list(CEILINGS))
def test_the_log_in_check_makes_its_user_without_the_orms_row_loading(pro_client, path):
    """The log-in check reads columns on the session's connection and makes the user from them
    (`viewer._persistent_user`): the ORM's loading of rows into objects cost as much as the statement's own
    execution. (Before: once per view.)"""
    assert calls_of(loading.instances, lambda: pro_client.get(path)) == 0


def test_the_log_in_checks_user_is_the_sessions_persistent_user(app, pro_client):
    """The user made from the log-in check's columns is what a query would have loaded: persistent in the session
    (which gives it back without a statement), its columns loaded as the row holds them, no change pending, its
    relationships loaded on first use, a change to it committed; a second check in the session gives it back."""
    user_id, session_id = logged_in_ids(app)
    with app.test_request_context("/account"):
        db.session()  # a request that has made its session already
        user = viewer.logged_in_user(session_id, user_id)
        assert user is not None and sa.inspect(user).persistent
        assert not sa.inspect(user).unloaded - {"subscriptions"}  # every column loaded
        assert not db.session.dirty and not db.session.new
        with statements(app) as sent:
            assert db.session.get(User, user_id) is user
        assert sent == []
        row = db.session.execute(sa.select(User.__table__).where(User.id == user_id)).one()._asdict()
        assert {name: getattr(user, name) for name in row} == row
        assert [s.id for s in user.subscriptions] == [s.id for s in viewer.subscriptions(user_id)]
        user.billing_email = "billing@example.com"
        db.session.commit()
        assert viewer.logged_in_user(session_id, user_id) is user
        assert db.session.scalar(sa.select(User.billing_email).where(User.id == user_id)) == "billing@example.com"


def test_the_log_in_check_makes_no_session_and_its_user_joins_the_one_made_later(app, pro_client):
    """A request that reads nothing after the log-in check makes no SQLAlchemy session (making one, adding the user
    and closing it again cost 14% of a kept logged-in page); the user joins the session the request makes later,
    before that session runs anything: a query gives this user back, a change made to it before is committed, its
    relationships load."""
    user_id, session_id = logged_in_ids(app)
    with app.test_request_context("/account"):
        user = viewer.logged_in_user(session_id, user_id)
        assert user is not None and not db.session.registry.has()
        assert not sa.inspect(user).unloaded - {"subscriptions"}  # every column loaded
        assert viewer.logged_in_user(session_id, user_id) is user  # a second check: the same user, still no session
        user.billing_email = "before-the-session@example.com"
        with statements(app) as sent:
            assert db.session.get(User, user_id) is user
        assert sent == []
        assert sa.inspect(user).persistent and user in db.session.dirty
        assert [s.id for s in user.subscriptions] == [s.id for s in viewer.subscriptions(user_id)]
        db.session.commit()
    with app.app_context():
        assert db.session.scalar(sa.select(User.billing_email).where(User.id == user_id)) == (
            "before-the-session@example.com"
        )


def test_a_logged_in_page_served_from_its_kept_copy_ends_without_a_session(app, pro_client):
    """`/account` viewed again with nothing changed: the log-in check reads, the kept page is sent, and the request
    ends with no SQLAlchemy session made (so none to close)."""
    pro_client.get("/account")
    made: list[bool] = []

    def note_session(exc):  # runs first of the context's teardowns (Flask runs them last registered first)
        made.append(db.session.registry.has())

    app.teardown_appcontext_funcs.append(note_session)
    try:
        assert pro_client.get("/account").status_code == 200
    finally:
        app.teardown_appcontext_funcs.remove(note_session)
    assert made == [False]


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_session_revoked_elsewhere_opens_nothing_on_the_next_view(app, pro_client, path):
    """The log-in check is made on every request: a session ended outside the browser (an admin, "log out
    everywhere" from another device, a password reset) is refused on the very next view."""
    with app.app_context():
        user_id = db.session.scalar(sa.select(User.id))
        sessions.revoke_all(user_id, "admin")
        db.session.commit()
    response = pro_client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_varies_on_the_cookie_and_refreshes_it_only_when_configured(
    app, pro_client, path, monkeypatch
):
    """The session interface's shortcut for a session the view did not change keeps Flask's answers: `Vary: Cookie`
    (the page is the member's), no cookie sent again; with SESSION_REFRESH_EACH_REQUEST every view sends it."""
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    response = pro_client.get(path)
    assert "Cookie" in response.headers.get("Vary", "")
    assert not [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{cookie_name}=")]
    monkeypatch.setitem(app.config, "SESSION_REFRESH_EACH_REQUEST", True)
    response = pro_client.get(path)
    assert "Cookie" in response.headers.get("Vary", "")
    assert [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{cookie_name}=")]
