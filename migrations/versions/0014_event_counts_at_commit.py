"""stripe event counts at commit: a status change is counted when its transaction commits, not when it is made

Revision ID: 0014_event_counts_at_commit
Revises: 0013_stripe_events_autovacuum
Create Date: 2026-12-02 17:00:00

Migration 0011's row trigger counts an event's status change in `stripe_event_counts` (one row per status and
shard) at the UPDATE, so the two count rows it touches stay locked until the transaction ends. A queue worker's
claim (`received` → `processed`) is the first statement of a transaction that lasts as long as the event's
handler: every delivery recording a new event in the same `received` shard waited for that handler — a web worker
held up by a background one. On PostgreSQL the trigger becomes a deferred constraint trigger: the same function,
the same condition, run at commit, so the count rows are locked for the commit alone. Counts are the same once
committed (a transaction reads its own change counted only after it commits). The insert and delete triggers stay
per statement (a deferred trigger can only be per row, which bulk inserts would pay for). SQLite, which runs one
writer at a time, keeps its triggers. The downgrade restores 0011's trigger.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0014_event_counts_at_commit"
down_revision = "0013_stripe_events_autovacuum"
branch_labels = None
depends_on = None

TRIGGER = "stripe_events_counts_update"
CONDITION = "AFTER UPDATE OF status ON stripe_events"
WHEN = "WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION stripe_event_counts()"


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER {TRIGGER} ON stripe_events")
    op.execute(f"CREATE CONSTRAINT TRIGGER {TRIGGER} {CONDITION} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW {WHEN}")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER {TRIGGER} ON stripe_events")
    op.execute(f"CREATE TRIGGER {TRIGGER} {CONDITION} FOR EACH ROW {WHEN}")
