"""user conversions: one row per converted user, so the dashboard counts converted users without distinct counts
over the audit trail

Revision ID: 0006_user_conversions
Revises: 0005_dashboard_indexes
Create Date: 2026-11-28 09:40:00

- user_conversions (user_id PK → users ON DELETE CASCADE): per conversion path, when the user first made the move
  (free_starter_at, free_pro_at, starter_pro_at) and when they first moved onto Starter (reached_starter_at),
  kept in step by the flush that inserts the audit entry (app/models/conversion.py).
- Backfilled from audit_logs by one INSERT … SELECT with the same filters as reporting.conversions() used.
- PostgreSQL: the audit_logs (user_id) partial indexes of migration 0005, one per conversion path, served only
  the distinct counts this table replaces: dropped, and replaced by partial indexes on (created_at) with the same
  predicates, so the conversions inside a window are an index-only range count.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0006_user_conversions"
down_revision = "0005_dashboard_indexes"
branch_labels = None
depends_on = None

COLUMNS = ("free_starter_at", "free_pro_at", "starter_pro_at", "reached_starter_at")

BACKFILL = """
INSERT INTO user_conversions (user_id, free_starter_at, free_pro_at, starter_pro_at, reached_starter_at)
SELECT user_id,
       min(CASE WHEN action = 'subscription.activated' AND {plan} = 'starter' THEN created_at END),
       min(CASE WHEN action = 'subscription.activated' AND {plan} = 'pro' THEN created_at END),
       min(CASE WHEN action = 'subscription.plan_changed' AND {from_plan} = 'starter' AND {plan} = 'pro'
                THEN created_at END),
       min(CASE WHEN {plan} = 'starter' THEN created_at END)
FROM audit_logs
WHERE user_id IS NOT NULL
  AND action IN ('subscription.activated', 'subscription.plan_changed')
  AND ({plan} = 'starter'
       OR (action = 'subscription.activated' AND {plan} = 'pro')
       OR (action = 'subscription.plan_changed' AND {from_plan} = 'starter' AND {plan} = 'pro'))
GROUP BY user_id
"""


OLD_INDEXES = (  # migration 0005's, recreated by downgrade
    (
        "ix_audit_logs_free_starter",
        "audit_logs (user_id) WHERE action = 'subscription.activated' AND (details ->> 'plan') = 'starter'",
    ),
    (
        "ix_audit_logs_free_pro",
        "audit_logs (user_id) WHERE action = 'subscription.activated' AND (details ->> 'plan') = 'pro'",
    ),
    (
        "ix_audit_logs_starter_pro",
        "audit_logs (user_id) WHERE action = 'subscription.plan_changed' "
        "AND (details ->> 'from_plan') = 'starter' AND (details ->> 'plan') = 'pro'",
    ),
    (
        "ix_audit_logs_starter_users",
        "audit_logs (user_id) "
        "WHERE action IN ('subscription.activated', 'subscription.plan_changed') "
        "AND (details ->> 'plan') = 'starter'",
    ),
)
NEW_INDEXES = (
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
    op.create_table(
        "user_conversions",
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        *(sa.Column(name, sa.DateTime(timezone=True), nullable=True) for name in COLUMNS),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(BACKFILL.format(plan="(details ->> 'plan')", from_plan="(details ->> 'from_plan')"))
        for name, _definition in OLD_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
        for name, definition in NEW_INDEXES:
            op.execute(f"CREATE INDEX {name} ON {definition}")
    else:
        op.execute(
            BACKFILL.format(plan="json_extract(details, '$.plan')", from_plan="json_extract(details, '$.from_plan')")
        )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for name, _definition in reversed(NEW_INDEXES):
            op.execute(f"DROP INDEX IF EXISTS {name}")
        for name, definition in OLD_INDEXES:
            op.execute(f"CREATE INDEX {name} ON {definition}")
    op.drop_table("user_conversions")
