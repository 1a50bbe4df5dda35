"""admin indexes: the dashboard's figures stay one fast aggregation each

Revision ID: 0004_admin_indexes
Revises: 0003_webhooks
Create Date: 2026-11-28 08:10:00

- audit_logs (action, created_at): conversions and sign-up charts count one action over a time window.
- user_subscriptions (status): failed payments outstanding (past_due / unpaid are few among many active).
- PostgreSQL only, on JSONB expressions the queries spell exactly the same way:
  audit_logs.details->>'invoice' for payment.* (a failed invoice paid later), and the customer of a webhook event
  (data.object.customer, or data.object.id for customer.* events) for the admin's user lookup.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0004_admin_indexes"
down_revision = "0003_webhooks"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.create_index("ix_audit_logs_action_created_at", ["action", "created_at"], unique=False)
    with op.batch_alter_table("user_subscriptions", schema=None) as batch_op:
        batch_op.create_index("ix_user_subscriptions_status", ["status"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_audit_logs_payment_invoice ON audit_logs ((details ->> 'invoice')) "
            "WHERE action IN ('payment.failed', 'payment.succeeded')"
        )
        op.execute(
            "CREATE INDEX ix_stripe_events_object_customer ON stripe_events "
            "((payload -> 'data' -> 'object' ->> 'customer'))"
        )
        op.execute(
            "CREATE INDEX ix_stripe_events_customer_object_id ON stripe_events "
            "((payload -> 'data' -> 'object' ->> 'id')) WHERE type LIKE 'customer.%'"
        )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_stripe_events_customer_object_id")
        op.execute("DROP INDEX IF EXISTS ix_stripe_events_object_customer")
        op.execute("DROP INDEX IF EXISTS ix_audit_logs_payment_invoice")
    with op.batch_alter_table("user_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_user_subscriptions_status")
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_logs_action_created_at")
