"""dashboard indexes: every admin figure reads an index, not the whole table, at a million subscriptions

Revision ID: 0005_dashboard_indexes
Revises: 0004_admin_indexes
Create Date: 2026-11-28 09:25:00

- user_subscriptions (created_at) INCLUDE (status, plan_id, billing_cycle): subscriptions started inside a window
  (MRR history, churn), read without the table on PostgreSQL.
- stripe_events (received_at): the newest webhook events (ORDER BY received_at DESC LIMIT n).
- users (created_at): sign-ups per day.
- PostgreSQL only:
  - user_subscriptions (plan_id, billing_cycle) WHERE status is live: revenue by plan and cycle is an index-only
    count of a few groups;
  - user_subscriptions (coalesce(ended_at, canceled_at, updated_at)) WHERE status = 'canceled', including the
    columns the queries read: subscriptions that ended inside a window (churn, MRR history), index-only;
  - audit_logs (user_id) for each conversion path, the predicate being the path's filter on the JSONB details
    (`details ->> 'plan'`, spelled as app/services/reporting.py spells it): distinct converted users without
    parsing JSON at query time.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0005_dashboard_indexes"
down_revision = "0004_admin_indexes"
branch_labels = None
depends_on = None

POSTGRESQL_INDEXES = (
    (
        "ix_user_subscriptions_live",
        "user_subscriptions (plan_id, billing_cycle) WHERE status IN ('trialing', 'active', 'past_due')",
    ),
    (
        "ix_user_subscriptions_canceled_ended",
        "user_subscriptions ((coalesce(ended_at, canceled_at, updated_at))) "
        "INCLUDE (ended_at, canceled_at, updated_at, created_at, plan_id, "
        "billing_cycle) WHERE status = 'canceled'",
    ),
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


def upgrade():
    with op.batch_alter_table("user_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_user_subscriptions_created_at",
            ["created_at"],
            unique=False,
            postgresql_include=["status", "plan_id", "billing_cycle"],
        )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index("ix_stripe_events_received_at", ["received_at"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index("ix_users_created_at", ["created_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for name, definition in POSTGRESQL_INDEXES:
            op.execute(f"CREATE INDEX {name} ON {definition}")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for name, _definition in reversed(POSTGRESQL_INDEXES):
            op.execute(f"DROP INDEX IF EXISTS {name}")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_created_at")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_events_received_at")
    with op.batch_alter_table("user_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_user_subscriptions_created_at")
