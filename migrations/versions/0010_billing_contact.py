"""billing contact: the email on the Stripe customer, kept apart from the login email

Revision ID: 0010_billing_contact
Revises: 0009_alerts
Create Date: 2026-12-02 02:15:00

- users.billing_email: the customer's email as Stripe holds it (changed in the Customer Portal or the Dashboard),
  written by `customer.updated`; `users.name` already holds the customer's name. The login email (`users.email`)
  is no longer written by Stripe events.

Backfill: a user with a Stripe customer gets their login email as billing email, the address the customer was
created with (the next `customer.updated` brings Stripe's own). The downgrade drops the column: what Stripe sent
is read again from the next event.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010_billing_contact"
down_revision = "0009_alerts"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ALTER TABLE on both databases (SQLite 3.35+ drops a column in place): a batch rebuild of `users` on
    # SQLite would lose the count triggers of migration 0007.
    op.add_column("users", sa.Column("billing_email", sa.String(length=512), nullable=True))
    op.execute("UPDATE users SET billing_email = email WHERE stripe_customer_id IS NOT NULL")


def downgrade():
    op.drop_column("users", "billing_email")
