"""drain batch counts: a queue worker's transaction adds to the kept counts once, at its commit, in key order

Revision ID: 0015_drain_batch_counts
Revises: 0014_event_counts_at_commit
Create Date: 2026-12-03 10:30:00

The kept counts (daily_counts and daily_subscription_changes of migrations 0007/0012, stripe_event_counts of
0011/0014) are upserted by triggers in the transaction of each write, so their rows stay locked until it ends, and a
transaction that writes several takes them in the order of its writes. One event per transaction, that was a handful
of rows in a handful of orders; a drain applying many events in one transaction (app/services/webhooks.py
`drain_received`) would take many, in its events' order, while holding their users' rows: two such transactions
taking two count rows in opposite orders deadlock (as the reverted batches of 957b1db did, at commit, through 0014's
deferred trigger, one row per event).

Here a transaction may ask (`batch_counts_begin()`, called by the worker's claim) for its count changes to be kept
aside until its commit: while `app.batch_counts` is `on` (set for the transaction only),
- a BEFORE INSERT trigger on each count table diverts every row an upsert would add (the key and the amount to add)
  into a temporary table of the session and skips the upsert: no row of the shared table is read, written or locked;
- an event's status change is counted at once (0011's row trigger, not 0014's deferred one: its WHEN clause, checked
  as the row is updated, lets it through only while the setting is off) — into the kept changes;
- the first change kept queues a deferred trigger on the scratch table, so the COMMIT itself, after the last
  statement, adds the kept changes up (`batch_counts_flush_at_commit`): one upsert per count table, in a fixed table
  order (TARGETS), each in key order, nothing written for a key whose changes cancel out, then the setting off.
So a worker's transaction locks count rows only inside its COMMIT, in one global order, and adds no round trip: what
0014 gave a delivery's insert (it never waits for a handler) holds, and two such transactions cannot wait for each
other's count rows in a cycle. Counts are the same once committed; a rolled-back savepoint takes its kept changes
with it. `batch_counts_begin()` makes the session's scratch tables and their triggers the first time (then reused).

Every other writer (the web, `flask` commands, request mode) is unchanged: the WHEN clauses, evaluated before any
trigger code runs, let nothing different through unless the transaction asked. SQLite runs one writer at a time:
nothing there.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0015_drain_batch_counts"
down_revision = "0014_event_counts_at_commit"
branch_labels = None
depends_on = None

#: Each count table, in the order the flush adds to them (the global lock order), with its key and its amount.
TARGETS = (
    ("daily_counts", ("day", "metric"), "value"),
    ("daily_subscription_changes", ("day", "plan_id", "billing_cycle"), "net"),
    ("stripe_event_counts", ("status", "shard"), "events"),
)
#: The session's scratch table per count table: the same columns, no key (LIKE copies types and NOT NULL only),
#: emptied by each COMMIT (ON COMMIT DELETE ROWS truncates the file: no dead rows pile up in a table autovacuum never
#: visits, whatever a rolled-back transaction left there).
SCRATCH = "batch_{}"
SETTING = "app.batch_counts"
#: 0014's deferred trigger counting an event's status change at commit, and the one counting it at once while the
#: transaction keeps its counts (into the kept changes).
DEFERRED_TRIGGER = "stripe_events_counts_update"
KEPT_TRIGGER = "stripe_events_counts_update_kept"
STATUS_CHANGED = "OLD.status IS DISTINCT FROM NEW.status"
KEEPING = f"current_setting('{SETTING}', true) = 'on'"
NOT_KEEPING = f"current_setting('{SETTING}', true) IS DISTINCT FROM 'on'"
ON_STATUS = "AFTER UPDATE OF status ON stripe_events"


def scratch(table):
    return f"pg_temp.{SCRATCH.format(table)}"


BEGIN_FUNCTION = """
CREATE FUNCTION batch_counts_begin() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('{first}') IS NULL THEN
        {create};
    END IF;
    PERFORM set_config('{setting}', 'on', true);
    RETURN true;
END
$$
"""

DIVERT_FUNCTION = """
CREATE FUNCTION batch_count_divert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {branches}
    END IF;
    RETURN NULL;
END
$$
"""

#: Fired at COMMIT once per kept change (a constraint trigger can only be per row): the first adds them all up,
#: the others find the setting off and return at once.
FLUSH_FUNCTION = """
CREATE FUNCTION batch_counts_flush_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {keeping} THEN
        PERFORM set_config('{setting}', 'off', true);
        {upserts};
    END IF;
    RETURN NULL;
END
$$
"""


def create_scratch(table):
    """The session's scratch table of `table`, and the deferred trigger that adds its rows up at COMMIT."""
    name = SCRATCH.format(table)
    return (
        f"CREATE TEMP TABLE {name} (LIKE {table}) ON COMMIT DELETE ROWS;\n        "
        f"CREATE CONSTRAINT TRIGGER {name}_at_commit AFTER INSERT ON {name} DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION batch_counts_flush_at_commit()"
    )


def divert_branch(index, table, keys, amount):
    columns = ", ".join(f"NEW.{column}" for column in (*keys, amount))
    keyword = "IF" if index == 0 else "ELSIF"
    return f"{keyword} TG_TABLE_NAME = '{table}' THEN INSERT INTO {scratch(table)} VALUES ({columns});"


def flush_upsert(table, keys, amount):
    """Move the kept changes of `table` into it: summed per key, in key order, cancelled-out keys left alone."""
    key_list = ", ".join(keys)
    return (
        f"WITH kept AS (DELETE FROM {scratch(table)} RETURNING *) "
        f"INSERT INTO {table} ({key_list}, {amount}) SELECT {key_list}, sum({amount}) FROM kept "
        f"GROUP BY {key_list} HAVING sum({amount}) <> 0 ORDER BY {key_list} "
        f"ON CONFLICT ({key_list}) DO UPDATE SET {amount} = {table}.{amount} + excluded.{amount}"
    )


def trigger_name(table):
    return f"{table}_batch_divert"


def status_trigger(name, when, deferred):
    timing = "CONSTRAINT TRIGGER" if deferred else "TRIGGER"
    deferral = " DEFERRABLE INITIALLY DEFERRED" if deferred else ""
    return (
        f"CREATE {timing} {name} {ON_STATUS}{deferral} FOR EACH ROW WHEN ({when}) "
        "EXECUTE FUNCTION stripe_event_counts()"
    )


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        FLUSH_FUNCTION.format(
            keeping=KEEPING, setting=SETTING, upserts=";\n        ".join(flush_upsert(*target) for target in TARGETS)
        )
    )
    op.execute(
        BEGIN_FUNCTION.format(
            first=scratch(TARGETS[0][0]),
            create=";\n        ".join(create_scratch(table) for table, _, _ in TARGETS),
            setting=SETTING,
        )
    )
    op.execute(
        DIVERT_FUNCTION.format(branches="\n    ".join(divert_branch(n, *target) for n, target in enumerate(TARGETS)))
    )
    for table, _, _ in TARGETS:
        op.execute(
            f"CREATE TRIGGER {trigger_name(table)} BEFORE INSERT ON {table} FOR EACH ROW "
            f"WHEN ({KEEPING}) EXECUTE FUNCTION batch_count_divert()"
        )
    op.execute(f"DROP TRIGGER {DEFERRED_TRIGGER} ON stripe_events")
    op.execute(status_trigger(DEFERRED_TRIGGER, f"{STATUS_CHANGED} AND {NOT_KEEPING}", deferred=True))
    op.execute(status_trigger(KEPT_TRIGGER, f"{STATUS_CHANGED} AND {KEEPING}", deferred=False))


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER {KEPT_TRIGGER} ON stripe_events")
    op.execute(f"DROP TRIGGER {DEFERRED_TRIGGER} ON stripe_events")
    op.execute(status_trigger(DEFERRED_TRIGGER, STATUS_CHANGED, deferred=True))
    for table, _, _ in TARGETS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger_name(table)} ON {table}")
    for function in ("batch_count_divert", "batch_counts_begin", "batch_counts_flush_at_commit"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
