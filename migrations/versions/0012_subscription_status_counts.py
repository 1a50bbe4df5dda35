"""subscription status counts: churn and failed payments add up kept rows instead of counting subscriptions

Revision ID: 0012_subscription_status_counts
Revises: 0011_stripe_event_counts
Create Date: 2026-12-02 05:35:00

- daily_counts (migration 0007) gains the metrics `subscriptions.<status>`: per UTC day, the subscriptions in that
  status, each on the day it was created — a canceled one on the day it ended (coalesce(ended_at, canceled_at,
  updated_at)) instead. Summed over every day, the subscriptions in a status (past_due and unpaid: the failed
  payments); `subscriptions.canceled` per day, the subscriptions that ended that day (churn).
- Kept by triggers on user_subscriptions in the transaction of the write, as migration 0007's: on PostgreSQL INSERT
  and DELETE by statement-level triggers over the transition tables, UPDATE by a row-level trigger whose WHEN clause
  lets through only the updates that can change a count (not the usual webhook update of periods and event times);
  on SQLite row-level triggers. Keys are upserted in order, and changes that cancel out write nothing.
- Backfilled by the same contribution query over the whole table, after the triggers are created (on PostgreSQL
  their lock holds writers off until the migration commits). The downgrade deletes these metrics.
- PostgreSQL: a partial index on the canceled subscriptions that ended before they were created (a row written
  after the subscription had already ended): churn counts, among the subscriptions created inside its window, the
  ones of those that ended before it, and only reads them.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0012_subscription_status_counts"
down_revision = "0011_stripe_event_counts"
branch_labels = None
depends_on = None

PREFIX = "subscriptions."
COLUMNS = ("status", "created_at", "ended_at", "canceled_at", "updated_at")
OPERATIONS = ("insert", "update", "delete")
ENDED_BEFORE_CREATED = (
    "ix_user_subscriptions_canceled_before_created",
    "user_subscriptions (created_at) INCLUDE (ended_at, canceled_at, updated_at) "
    "WHERE status = 'canceled' AND coalesce(ended_at, canceled_at, updated_at) < created_at",
)


def day(dialect, expression):
    """The UTC calendar day of a timestamp, as migration 0007 counts it."""
    if dialect == "postgresql":
        return f"(({expression}) AT TIME ZONE 'UTC')::date"
    return f"date({expression})"


def contributions(dialect, rows):
    """`sign` for each of `rows` (SQL yielding COLUMNS and `sign`) in its status, on the day it counts."""
    counted_at = (
        "CASE WHEN r.status = 'canceled' THEN coalesce(r.ended_at, r.canceled_at, r.updated_at) ELSE r.created_at END"
    )
    return f"SELECT {day(dialect, counted_at)} AS day, '{PREFIX}' || r.status AS metric, r.sign AS n FROM ({rows}) AS r"


def upsert(dialect, rows):
    """Add the contributions of `rows` to daily_counts, one row per key, in key order, nothing written for a key
    whose changes cancel out."""
    return (
        "INSERT INTO daily_counts (day, metric, value) "
        f"SELECT day, metric, sum(n) FROM ({contributions(dialect, rows)}) AS contributions WHERE true "
        "GROUP BY day, metric HAVING sum(n) <> 0 ORDER BY day, metric "
        "ON CONFLICT (day, metric) DO UPDATE SET value = daily_counts.value + excluded.value"
    )


def _select(source, sign):
    return f"SELECT {', '.join(COLUMNS)}, {sign} AS sign FROM {source}"


def _select_row(row, sign):
    return f"SELECT {', '.join(f'{row}.{c} AS {c}' for c in COLUMNS)}, {sign} AS sign"


CHANGED = f"{_select_row('NEW', 1)} UNION ALL {_select_row('OLD', -1)}"


def update_condition(dialect):
    """When an UPDATE can change a count: the status changed, or the time the row counts on (created_at; for a
    canceled one, its end time — updated_at moves on every write, so only while canceled)."""
    distinct = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    end = "coalesce({0}.ended_at, {0}.canceled_at, {0}.updated_at)"
    return (
        f"OLD.status {distinct} NEW.status OR (NEW.status <> 'canceled' AND OLD.created_at {distinct} NEW.created_at) "
        f"OR (NEW.status = 'canceled' AND {end.format('OLD')} {distinct} {end.format('NEW')})"
    )


def backfill(dialect):
    """The statement that counts every row of user_subscriptions (the metrics start absent)."""
    return upsert(dialect, _select("user_subscriptions", 1))


POSTGRESQL_FUNCTION = """
CREATE FUNCTION user_subscriptions_status_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        {update};
    ELSIF TG_OP = 'INSERT' THEN
        {insert};
    ELSE
        {delete};
    END IF;
    RETURN NULL;
END
$$
"""
POSTGRESQL_TIMINGS = {
    "insert": "AFTER INSERT ON user_subscriptions REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
    "update": "AFTER UPDATE ON user_subscriptions FOR EACH ROW WHEN ({when})",
    "delete": "AFTER DELETE ON user_subscriptions REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
}


def trigger_name(operation):
    return f"user_subscriptions_status_counts_{operation}"


def create_triggers(dialect):
    when = update_condition(dialect)
    if dialect == "postgresql":
        op.execute(
            POSTGRESQL_FUNCTION.format(
                update=upsert(dialect, CHANGED),
                insert=upsert(dialect, _select("new_rows", 1)),
                delete=upsert(dialect, _select("old_rows", -1)),
            )
        )
        for operation, timing in POSTGRESQL_TIMINGS.items():
            op.execute(
                f"CREATE TRIGGER {trigger_name(operation)} {timing.format(when=when)} "
                "EXECUTE FUNCTION user_subscriptions_status_counts()"
            )
        return
    rows = {
        "insert": ("", _select_row("NEW", 1)),
        "update": (f" WHEN {when}", CHANGED),
        "delete": ("", _select_row("OLD", -1)),
    }
    for operation, (condition, selected) in rows.items():
        op.execute(
            f"CREATE TRIGGER {trigger_name(operation)} AFTER {operation.upper()} ON user_subscriptions FOR EACH ROW"
            f"{condition} BEGIN {upsert(dialect, selected)}; END"
        )


def upgrade():
    dialect = op.get_bind().dialect.name
    create_triggers(dialect)  # first: on PostgreSQL their lock holds writers off until the backfill commits
    op.execute(backfill(dialect))
    if dialect == "postgresql":
        name, definition = ENDED_BEFORE_CREATED
        op.execute(f"CREATE INDEX {name} ON {definition}")


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {ENDED_BEFORE_CREATED[0]}")
    for operation in OPERATIONS:
        on_table = " ON user_subscriptions" if dialect == "postgresql" else ""
        op.execute(f"DROP TRIGGER IF EXISTS {trigger_name(operation)}{on_table}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS user_subscriptions_status_counts()")
    op.execute(f"DELETE FROM daily_counts WHERE metric LIKE '{PREFIX}%'")
