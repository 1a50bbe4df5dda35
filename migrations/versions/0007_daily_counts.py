"""daily counts: the dashboard's totals and histories read a few thousand maintained rows instead of a million

Revision ID: 0007_daily_counts
Revises: 0006_user_conversions
Create Date: 2026-11-28 10:40:00

- daily_counts (day, metric) → value: per UTC day,
  - `signups`: users created that day;
  - `conversions.free_starter|free_pro|starter_pro`: audit entries of that conversion made that day;
  - `converted.free_starter|free_pro|starter_pro|reached_starter`: users whose first such move (user_conversions)
    was that day — summed over all days, the distinct converted users.
- daily_subscription_changes (day, plan_id, billing_cycle) → net: +1 on the day each subscription that counts for
  revenue (trialing, active, past_due — or canceled, which did count until it ended) started, -1 on the day a
  canceled one ended (coalesce(ended_at, canceled_at, updated_at)). Summed up to a day, the live subscriptions by
  plan and cycle that day: the MRR history.
- Kept by triggers in the transaction of the write, whoever writes (the app, `flask` commands, bulk SQL, ON
  DELETE CASCADE): on PostgreSQL INSERT and DELETE by statement-level triggers over the transition tables (a bulk
  INSERT … SELECT costs one aggregated upsert, not one per row), UPDATE by row-level triggers whose WHEN clause
  lets through only the updates that can change a count (not the usual webhook update of periods and event
  times); keys are upserted in order, and changes that cancel out write nothing. On SQLite row-level triggers. TRUNCATE fires
  no trigger: truncate these tables with their sources.
- Backfilled by the same contribution queries over the whole tables (BACKFILL).
- PostgreSQL: migration 0006's partial indexes on audit_logs (created_at) per conversion path served only the
  conversions in a window, now read here: dropped.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0007_daily_counts"
down_revision = "0006_user_conversions"
branch_labels = None
depends_on = None

REVENUE_OR_CANCELED = "('trialing', 'active', 'past_due', 'canceled')"

#: Per source table: the columns its contributions read, the target, and the contributions of the rows `{r}`
#: (each with a `sign`: +1 for a row that now exists, -1 for one that no longer does).
SOURCES = {
    "users": (
        ("created_at",),
        "daily_counts",
        """
        SELECT {day[r.created_at]} AS day, 'signups' AS metric, r.sign AS n FROM {r}
    """,
    ),
    "audit_logs": (
        ("action", "details", "created_at"),
        "daily_counts",
        """
        SELECT day, metric, n FROM (
            SELECT {day[r.created_at]} AS day,
                   CASE WHEN r.action = 'subscription.activated' AND {text[r.details.plan]} = 'starter'
                             THEN 'conversions.free_starter'
                        WHEN r.action = 'subscription.activated' AND {text[r.details.plan]} = 'pro'
                             THEN 'conversions.free_pro'
                        WHEN r.action = 'subscription.plan_changed' AND {text[r.details.from_plan]} = 'starter'
                             AND {text[r.details.plan]} = 'pro'
                             THEN 'conversions.starter_pro' END AS metric,
                   r.sign AS n
            FROM {r} WHERE r.action IN ('subscription.activated', 'subscription.plan_changed')
        ) AS entries WHERE metric IS NOT NULL
    """,
    ),
    "user_conversions": (
        ("free_starter_at", "free_pro_at", "starter_pro_at", "reached_starter_at"),
        "daily_counts",
        """
        SELECT {day[r.free_starter_at]} AS day, 'converted.free_starter' AS metric, r.sign AS n
        FROM {r} WHERE r.free_starter_at IS NOT NULL
        UNION ALL SELECT {day[r.free_pro_at]}, 'converted.free_pro', r.sign FROM {r} WHERE r.free_pro_at IS NOT NULL
        UNION ALL SELECT {day[r.starter_pro_at]}, 'converted.starter_pro', r.sign
        FROM {r} WHERE r.starter_pro_at IS NOT NULL
        UNION ALL SELECT {day[r.reached_starter_at]}, 'converted.reached_starter', r.sign
        FROM {r} WHERE r.reached_starter_at IS NOT NULL
    """,
    ),
    "user_subscriptions": (
        ("status", "plan_id", "billing_cycle", "created_at", "ended_at", "canceled_at", "updated_at"),
        "daily_subscription_changes",
        f"""
        SELECT {{day[r.created_at]}} AS day, r.plan_id, r.billing_cycle, r.sign AS n
        FROM {{r}} WHERE r.status IN {REVENUE_OR_CANCELED}
        UNION ALL
        SELECT {{day[coalesce(r.ended_at, r.canceled_at, r.updated_at)]}}, r.plan_id, r.billing_cycle, -r.sign
        FROM {{r}} WHERE r.status = 'canceled'
    """,
    ),
}
TARGETS = {
    "daily_counts": (("day", "metric"), "value"),
    "daily_subscription_changes": (("day", "plan_id", "billing_cycle"), "net"),
}


class _Day:
    """`{day[expression]}`: the UTC calendar day of a timestamp."""

    def __init__(self, dialect):
        self.dialect = dialect

    def __getitem__(self, expression):
        if self.dialect == "postgresql":
            return f"(({expression}) AT TIME ZONE 'UTC')::date"
        return f"date({expression})"


class _Text:
    """`{text[r.details.plan]}`: the text of one key of a JSON column."""

    def __init__(self, dialect):
        self.dialect = dialect

    def __getitem__(self, path):
        column, key = path.rsplit(".", 1)
        if self.dialect == "postgresql":
            return f"({column} ->> '{key}')"
        return f"json_extract({column}, '$.{key}')"


def upsert(dialect, table, rows):
    """One statement adding the contributions of `rows` (SQL yielding the source's columns and `sign`) to the
    target, one aggregated row per key, in key order, nothing written for a key whose changes cancel out."""
    columns, target, contributions = SOURCES[table]
    keys, value = TARGETS[target]
    body = contributions.format(day=_Day(dialect), text=_Text(dialect), r=f"({rows}) AS r")
    key_list = ", ".join(keys)
    return (
        f"INSERT INTO {target} ({key_list}, {value}) "
        f"SELECT {key_list}, sum(n) FROM ({body}) AS contributions WHERE true "
        f"GROUP BY {key_list} HAVING sum(n) <> 0 ORDER BY {key_list} "
        f"ON CONFLICT ({key_list}) DO UPDATE SET {value} = {target}.{value} + excluded.{value}"
    )


def _select(columns, source, sign):
    return f"SELECT {', '.join(columns)}, {sign} AS sign FROM {source}"


def _select_row(columns, row, sign):  # SQLite: the columns of NEW or OLD
    return f"SELECT {', '.join(f'{row}.{c} AS {c}' for c in columns)}, {sign} AS sign"


def backfill(dialect, table):
    """The statement that counts every row of `table` (the tables start empty)."""
    return upsert(dialect, table, _select(SOURCES[table][0], table, 1))


def update_condition(dialect, table):
    """When an UPDATE can change the counts: one of the columns they read changed (for a subscription, its end
    time only matters while canceled — updated_at moves on every write). Evaluated by the database before any
    trigger code runs, so the usual webhook update (periods, last_event_at) costs nothing."""
    distinct = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    if table == "user_subscriptions":
        end = "coalesce({0}.ended_at, {0}.canceled_at, {0}.updated_at)"
        return " OR ".join(
            [f"OLD.{c} {distinct} NEW.{c}" for c in ("status", "plan_id", "billing_cycle", "created_at")]
            + [
                f"((OLD.status = 'canceled' OR NEW.status = 'canceled') "
                f"AND {end.format('OLD')} {distinct} {end.format('NEW')})"
            ]
        )
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in SOURCES[table][0])


POSTGRESQL_FUNCTION = """
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
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
#: PostgreSQL: INSERT and DELETE per statement over the transition tables (a bulk write costs one aggregated
#: upsert), UPDATE per row and only when it can change a count.
TRANSITIONS = {
    "INSERT": "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
    "UPDATE": "FOR EACH ROW WHEN ({when})",
    "DELETE": "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
}


def trigger_name(table, operation):
    return f"{table}_daily_counts_{operation.lower()}"


def create_triggers(dialect, table):
    columns = SOURCES[table][0]
    changed = _select_row(columns, "NEW", 1) + " UNION ALL " + _select_row(columns, "OLD", -1)
    when = update_condition(dialect, table)
    if dialect == "postgresql":
        name = f"{table}_daily_counts"
        op.execute(
            POSTGRESQL_FUNCTION.format(
                name=name,
                insert=upsert(dialect, table, _select(columns, "new_rows", 1)),
                update=upsert(dialect, table, changed),
                delete=upsert(dialect, table, _select(columns, "old_rows", -1)),
            )
        )
        for operation, timing in TRANSITIONS.items():
            op.execute(
                f"CREATE TRIGGER {trigger_name(table, operation)} AFTER {operation} ON {table} "
                f"{timing.format(when=when)} EXECUTE FUNCTION {name}()"
            )
        return
    rows = {
        "INSERT": ("", _select_row(columns, "NEW", 1)),
        "UPDATE": (f" WHEN {when}", changed),
        "DELETE": ("", _select_row(columns, "OLD", -1)),
    }
    for operation, (condition, selected) in rows.items():
        op.execute(
            f"CREATE TRIGGER {trigger_name(table, operation)} AFTER {operation} ON {table} FOR EACH ROW"
            f"{condition} BEGIN {upsert(dialect, table, selected)}; END"
        )


def drop_triggers(dialect, table):
    for operation in TRANSITIONS:
        op.execute(
            f"DROP TRIGGER IF EXISTS {trigger_name(table, operation)}"
            + (f" ON {table}" if dialect == "postgresql" else "")
        )
    if dialect == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {table}_daily_counts()")


#: Migration 0006's, recreated by downgrade.
CONVERSION_WINDOW_INDEXES = (
    (
        "ix_audit_logs_free_starter_created_at",
        "audit_logs (created_at) WHERE action = 'subscription.activated' AND (details ->> 'plan') = 'starter'",
    ),
    (
        "ix_audit_logs_free_pro_created_at",
        "audit_logs (created_at) WHERE action = 'subscription.activated' AND (details ->> 'plan') = 'pro'",
    ),
    (
        "ix_audit_logs_starter_pro_created_at",
        "audit_logs (created_at) WHERE action = 'subscription.plan_changed' "
        "AND (details ->> 'from_plan') = 'starter' AND (details ->> 'plan') = 'pro'",
    ),
)


def upgrade():
    dialect = op.get_bind().dialect.name
    op.create_table(
        "daily_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "metric"),
    )
    op.create_table(
        "daily_subscription_changes",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("billing_cycle", sa.String(length=16), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["plan_id"], ["subscription_plans.id"]),
        sa.PrimaryKeyConstraint("day", "plan_id", "billing_cycle"),
    )
    for table in SOURCES:  # triggers first: on PostgreSQL their lock holds writers off until the backfill commits
        create_triggers(dialect, table)
        op.execute(backfill(dialect, table))
    if dialect == "postgresql":
        for name, _definition in CONVERSION_WINDOW_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for name, definition in CONVERSION_WINDOW_INDEXES:
            op.execute(f"CREATE INDEX {name} ON {definition}")
    for table in reversed(list(SOURCES)):
        drop_triggers(dialect, table)
    op.drop_table("daily_subscription_changes")
    op.drop_table("daily_counts")
