"""stripe event counts: the dashboard's webhook events per status read a few kept rows instead of every event

Revision ID: 0011_stripe_event_counts
Revises: 0010_billing_contact
Create Date: 2026-12-02 05:20:00

- stripe_event_counts (status, shard) → events: summed over the shards, the recorded webhook events in that status.
  An event counts in shard (code point of its id's last character) % SHARDS — Stripe's ids end in a random letter or
  digit. A delivery inserts its event at the start of a transaction that lasts as long as its handler: one row per
  status, locked by that insert until the commit, would make every concurrent delivery wait for it; spread over
  SHARDS rows, two deliveries seldom meet.
- Kept by triggers in the transaction of the write, whoever writes (the app, `flask` commands, bulk SQL), as the
  per-day counts of migration 0007: on PostgreSQL INSERT and DELETE by statement-level triggers over the transition
  tables (a bulk INSERT … SELECT costs one aggregated upsert), UPDATE by a row-level trigger whose WHEN clause lets
  through only a change of status; on SQLite row-level triggers. Keys are upserted in order, and changes that
  cancel out write nothing. TRUNCATE fires no trigger: truncate this table with stripe_events.
- Backfilled by the same contribution query over the whole table, after the triggers are created: on PostgreSQL
  their lock holds writers off until the migration commits.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0011_stripe_event_counts"
down_revision = "0010_billing_contact"
branch_labels = None
depends_on = None

#: Rows per status (app/models/stripe_event.py EVENT_COUNT_SHARDS).
SHARDS = 16
OPERATIONS = ("insert", "update", "delete")


def shard(dialect, row):
    """The shard of the event `row`: the code point of its id's last character, modulo SHARDS."""
    if dialect == "postgresql":
        return f"ascii(right({row}.id, 1)) % {SHARDS}"
    return f"coalesce(unicode(substr({row}.id, -1)), 0) % {SHARDS}"


def counted(dialect, table, sign):
    """Per status and shard, `sign` × the rows of `table` (stripe_events, or a transition table)."""
    return f"SELECT r.status, {shard(dialect, 'r')} AS shard, {sign} * count(*) AS n FROM {table} AS r GROUP BY 1, 2"


def row(dialect, ref, sign):
    """`sign` for the one row NEW or OLD in its status and shard."""
    return f"SELECT {ref}.status AS status, {shard(dialect, ref)} AS shard, {sign} AS n"


def upsert(body):
    """Add the contributions `body` (SQL yielding status, shard and n) to the counts, in key order, nothing written
    for a key whose changes cancel out."""
    return (
        "INSERT INTO stripe_event_counts (status, shard, events) "
        f"SELECT status, shard, sum(n) FROM ({body}) AS contributions WHERE true "
        "GROUP BY status, shard HAVING sum(n) <> 0 ORDER BY status, shard "
        "ON CONFLICT (status, shard) DO UPDATE SET events = stripe_event_counts.events + excluded.events"
    )


def changed(dialect):
    """A status change: -1 in the old status, +1 in the new one."""
    return f"{row(dialect, 'OLD', -1)} UNION ALL {row(dialect, 'NEW', 1)}"


def backfill(dialect):
    """The statement that counts every row of stripe_events (the counts start empty)."""
    return upsert(counted(dialect, "stripe_events", 1))


POSTGRESQL_FUNCTION = """
CREATE FUNCTION stripe_event_counts() RETURNS trigger LANGUAGE plpgsql AS $$
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
#: When each trigger fires: on PostgreSQL INSERT and DELETE per statement over the transition tables, UPDATE per
#: row and only when the status changed (the usual update of attempts and times costs nothing).
POSTGRESQL_TIMINGS = {
    "insert": "AFTER INSERT ON stripe_events REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
    "update": "AFTER UPDATE OF status ON stripe_events FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)",
    "delete": "AFTER DELETE ON stripe_events REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
}
SQLITE_TIMINGS = {
    "insert": "AFTER INSERT ON stripe_events FOR EACH ROW",
    "update": "AFTER UPDATE OF status ON stripe_events FOR EACH ROW WHEN OLD.status IS NOT NEW.status",
    "delete": "AFTER DELETE ON stripe_events FOR EACH ROW",
}


def trigger_name(operation):
    return f"stripe_events_counts_{operation}"


def create_triggers(dialect):
    if dialect == "postgresql":
        op.execute(
            POSTGRESQL_FUNCTION.format(
                update=upsert(changed(dialect)),
                insert=upsert(counted(dialect, "new_rows", 1)),
                delete=upsert(counted(dialect, "old_rows", -1)),
            )
        )
        for operation, timing in POSTGRESQL_TIMINGS.items():
            op.execute(f"CREATE TRIGGER {trigger_name(operation)} {timing} EXECUTE FUNCTION stripe_event_counts()")
        return
    bodies = {"insert": row(dialect, "NEW", 1), "update": changed(dialect), "delete": row(dialect, "OLD", -1)}
    for operation, timing in SQLITE_TIMINGS.items():
        op.execute(f"CREATE TRIGGER {trigger_name(operation)} {timing} BEGIN {upsert(bodies[operation])}; END")


def upgrade():
    dialect = op.get_bind().dialect.name
    op.create_table(
        "stripe_event_counts",
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("status", "shard"),
    )
    create_triggers(dialect)  # first: on PostgreSQL their lock holds writers off until the backfill commits
    op.execute(backfill(dialect))


def downgrade():
    dialect = op.get_bind().dialect.name
    for operation in OPERATIONS:
        on_table = " ON stripe_events" if dialect == "postgresql" else ""
        op.execute(f"DROP TRIGGER IF EXISTS {trigger_name(operation)}{on_table}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS stripe_event_counts()")
    op.drop_table("stripe_event_counts")
