"""Section 8, "Rollback Database": `alembic downgrade -1` on a database holding data, then `alembic upgrade head`.

A row goes into every table at head. The downgrade drops the last migration's own tables (daily_counts and
daily_subscription_changes: counts kept by triggers from the other tables); every other table keeps its rows
untouched. The upgrade then rebuilds those two from the surviving rows, and they come back equal. Migration
0008's tables (log-ins and verified addresses) cannot be rebuilt: they come back empty (everyone logs in again), and
neither can 0009's (watched strategies and their signals: users watch them again). Migration 0010 adds a column
(users.billing_email) instead: the downgrade drops it and leaves every other column as it was; the upgrade backfills
it from the login email of a user with a Stripe customer (the next `customer.updated` brings Stripe's own), which is
what the row below holds. Migration 0011's table (webhook events per status, kept by triggers) is rebuilt from
stripe_events like 0007's. Migration 0012 adds rows to an existing table instead (the `subscriptions.<status>`
metrics of daily_counts, kept by triggers): the downgrade deletes them and leaves the other rows as they were; the
upgrade rebuilds them from the subscriptions, equal.
"""

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from tests.guide.conftest import ROOT, tables

#: The tables a migration creates itself, which its downgrade drops with their rows (for the head revision).
OWN_TABLES = {
    "0007_daily_counts": {"daily_counts", "daily_subscription_changes"},
    "0008_auth_sessions": {"auth_sessions", "verified_emails"},
    "0009_alerts": {"alert_watches", "alert_signals"},
    "0011_stripe_event_counts": {"stripe_event_counts"},
}
#: Of those, the tables whose rows the downgrade loses for good (the upgrade recreates them empty).
LOST_TABLES = {
    "0008_auth_sessions": {"auth_sessions", "verified_emails"},
    "0009_alerts": {"alert_watches", "alert_signals"},
}
#: The columns a migration adds to existing tables, which its downgrade drops (for the head revision).
OWN_COLUMNS = {
    "0010_billing_contact": {"users": {"billing_email"}},
    "0016_logouts_everywhere": {"users": {"logouts_everywhere"}},
    "0017_mail_next_attempt": {"mail_outbox": {"next_attempt_at"}},
}
#: The rows a migration adds to existing tables (a condition per table), which its downgrade deletes.
OWN_ROWS = {"0012_subscription_status_counts": {"daily_counts": "metric LIKE 'subscriptions.%'"}}

#: One row per table written directly; the count tables fill themselves by trigger.
ROWS = (
    "INSERT INTO users (id, email, password_hash, stripe_customer_id, is_admin, created_at, updated_at, name, "
    "customer_event_at, billing_email) VALUES (1001, 'rollback@example.com', 'pbkdf2:x', 'cus_Rollback', false, "
    "'2026-11-02 10:00:00+00', '2026-11-03 10:00:00+00', 'Roll Back', 1762077600, 'rollback@example.com')",
    "INSERT INTO subscription_plans (id, name, display_name, description, price_monthly, price_yearly, "
    "stripe_price_id_monthly, stripe_price_id_yearly, is_active, sort_order, created_at, updated_at) VALUES "
    "(1001, 'starter', 'Starter', 'For active traders.', 19.99, 199.99, 'price_1QStarterM', 'price_1QStarterY', "
    "true, 1, '2026-11-01 09:00:00+00', '2026-11-01 09:00:00+00')",
    "INSERT INTO plan_features (id, plan_id, key, display_name, kind, limit_value, sort_order) VALUES "
    "(1001, 1001, 'strategies_max', 'Up to 25 strategies', 'limit', 25, 0)",
    "INSERT INTO user_subscriptions (id, user_id, plan_id, billing_cycle, status, stripe_subscription_id, "
    "stripe_price_id, current_period_start, current_period_end, cancel_at_period_end, canceled_at, ended_at, "
    "trial_end, created_at, updated_at, last_event_at) VALUES (1001, 1001, 1001, 'monthly', 'active', "
    "'sub_Rollback', 'price_1QStarterM', '2026-11-02 10:00:00+00', '2026-12-02 10:00:00+00', false, NULL, NULL, "
    "NULL, '2026-11-02 10:00:00+00', '2026-11-02 10:00:05+00', 1762077605)",
    "INSERT INTO audit_logs (id, user_id, action, details, created_at) VALUES (1001, 1001, "
    '\'subscription.activated\', \'{"plan": "starter", "billing_cycle": "monthly"}\', \'2026-11-02 10:00:05+00\')',
    "INSERT INTO user_conversions (user_id, free_starter_at, free_pro_at, starter_pro_at, reached_starter_at) "
    "VALUES (1001, '2026-11-02 10:00:05+00', NULL, NULL, '2026-11-02 10:00:05+00')",
    "INSERT INTO stripe_events (id, type, stripe_created, livemode, received_at, processed_at, status, error, "
    "attempts, payload) VALUES ('evt_Rollback', 'checkout.session.completed', '2026-11-02 10:00:04+00', true, "
    "'2026-11-02 10:00:05+00', '2026-11-02 10:00:05+00', 'processed', NULL, 1, '{\"id\": \"evt_Rollback\"}')",
    "INSERT INTO strategies (id, user_id, name, description, rules, created_at, updated_at) VALUES (1001, 1001, "
    "'Golden cross', 'SMA 50 over SMA 200', 'buy when sma50 > sma200', '2026-11-02 11:00:00+00', "
    "'2026-11-02 11:00:00+00')",
    "INSERT INTO backtests (id, strategy_id, user_id, start_date, end_date, result, created_at) VALUES (1001, 1001, "
    "1001, '2020-01-01', '2025-12-31', '{\"return_pct\": \"12.50\"}', '2026-11-02 11:05:00+00')",
    "INSERT INTO alert_settings (user_id, email_enabled, realtime_enabled, created_at, updated_at) VALUES (1001, "
    "true, false, '2026-11-02 11:10:00+00', '2026-11-02 11:10:00+00')",
    "INSERT INTO mail_outbox (id, dedupe_key, kind, user_id, recipient, subject, body, status, attempts, error, "
    "created_at, sent_at) VALUES (1001, 'payment_succeeded:in_Rollback', 'payment_succeeded', 1001, "
    "'rollback@example.com', 'Payment received', 'Thank you.', 'sent', 1, NULL, '2026-11-02 10:00:06+00', "
    "'2026-11-02 10:00:07+00')",
    "INSERT INTO auth_sessions (id, user_id, kind, refresh_jti, created_at, expires_at, revoked_at, revoked_reason) "
    "VALUES ('sess_Rollback', 1001, 'api', 'jti_Rollback', '2026-11-02 10:00:00+00', '2026-11-09 10:00:00+00', "
    "NULL, NULL)",
    "INSERT INTO verified_emails (user_id, email, verified_at) VALUES (1001, 'rollback@example.com', "
    "'2026-11-02 10:05:00+00')",
    "INSERT INTO alert_watches (strategy_id, user_id, created_at) VALUES (1001, 1001, '2026-11-02 11:15:00+00')",
    "INSERT INTO alert_signals (id, strategy_id, user_id, bar_date, side, close, fast, slow, delivery, created_at, "
    "mailed_at) VALUES (1001, 1001, 1001, '2025-12-31', 'buy', 153.47, 50, 200, 'digest', "
    "'2026-11-02 22:15:00+00', NULL)",
)


def snapshot(
    conn, names, without: dict[str, set[str]] | None = None, rows_without: dict[str, str] | None = None
) -> dict[str, list]:
    """Every row of every table named, in a stable order; the columns `without` names for a table left out, and
    the rows matching the condition `rows_without` gives for a table."""
    found = {}
    for name in sorted(names):
        skipped = (without or {}).get(name, set())
        columns = ", ".join(c["name"] for c in sa.inspect(conn).get_columns(name) if c["name"] not in skipped)
        condition = (rows_without or {}).get(name)
        where = f" WHERE NOT ({condition})" if condition else ""
        found[name] = conn.execute(sa.text(f"SELECT {columns} FROM {name}{where} ORDER BY 1, 2")).all()
    return found


def revision(conn) -> str:
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()


def head_and_previous() -> tuple[str, str]:
    """The head revision and the one `alembic downgrade -1` goes back to, read from the migration scripts."""
    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_revision("head")
    return head.revision, head.down_revision


def test_downgrade_one_then_upgrade_keeps_every_row(migrated_shell):
    shell = migrated_shell  # at head, as `alembic upgrade head` leaves it
    head, previous = head_and_previous()
    dropped = OWN_TABLES.get(head, set())
    lost = LOST_TABLES.get(head, set())
    added = OWN_COLUMNS.get(head, {})
    added_rows = OWN_ROWS.get(head, {})
    engine = shell.engine()
    with engine.begin() as conn:
        for statement in ROWS:
            conn.execute(sa.text(statement))
    with engine.connect() as conn:
        at_head = tables(conn)
        before = snapshot(conn, at_head)
        before_without_added = snapshot(conn, at_head - dropped, without=added, rows_without=added_rows)
        added_rows_found = [conn.scalar(sa.text(f"SELECT count(*) FROM {n} WHERE {c}")) for n, c in added_rows.items()]
    assert dropped <= at_head
    assert all(added_rows_found), "rows the migration adds, none of them written, prove nothing"
    assert [name for name, rows in before.items() if not rows] == [], "a table without a row proves nothing"

    shell.ok("alembic downgrade -1")
    with engine.connect() as conn:
        assert revision(conn) == previous
        assert tables(conn) == at_head - dropped
        assert snapshot(conn, at_head - dropped) == before_without_added

    shell.ok("alembic upgrade head")
    with engine.connect() as conn:
        assert revision(conn) == head
        assert tables(conn) == at_head
        assert snapshot(conn, at_head - lost) == {name: rows for name, rows in before.items() if name not in lost}
        assert all(rows == [] for rows in snapshot(conn, lost).values())
    engine.dispose()
