"""stripe events autovacuum: the event table is vacuumed after a few thousand status changes, not a fifth of it

Revision ID: 0013_stripe_events_autovacuum
Revises: 0012_subscription_status_counts
Create Date: 2026-12-02 16:10:00

With the webhook endpoint's queue mode every event is inserted `received` and then updated once applied. The status
is in an index (`ix_stripe_events_status_received_at`), so each such update leaves a dead entry there, and the
look-up of the oldest waiting event (/metrics, `flask queue status`, `flask doctor`) steps over every entry left
since the last vacuum. PostgreSQL's default autovacuum waits for 20% of the table to change: 200,000 updates at a
million events, after which the look-up took tens to hundreds of milliseconds. Here the table is vacuumed (and
analysed) after 1% of it plus 1,000 rows have changed. PostgreSQL only (SQLite has no autovacuum); the downgrade
restores the defaults.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0013_stripe_events_autovacuum"
down_revision = "0012_subscription_status_counts"
branch_labels = None
depends_on = None

SETTINGS = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.01",
    "autovacuum_analyze_threshold": "1000",
}


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    options = ", ".join(f"{name} = {value}" for name, value in SETTINGS.items())
    op.execute(f"ALTER TABLE stripe_events SET ({options})")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE stripe_events RESET ({', '.join(SETTINGS)})")
