"""logouts everywhere: "Sign out everywhere" also ends a pending login-email change link

Revision ID: 0016_logouts_everywhere
Revises: 0015_drain_batch_counts
Create Date: 2026-12-03 10:45:00

- users.logouts_everywhere: how many times the user chose "Sign out everywhere". An email-change link names the
  count it was made under, so signing out everywhere makes every link mailed before useless, as the notice to the
  old address says. Existing rows start at 0, the count a link made before this revision is read with.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0016_logouts_everywhere"
down_revision = "0015_drain_batch_counts"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ALTER TABLE on both databases, as 0010: a batch rebuild of `users` on SQLite would lose 0007's triggers.
    op.add_column("users", sa.Column("logouts_everywhere", sa.Integer(), server_default="0", nullable=False))


def downgrade():
    op.drop_column("users", "logouts_everywhere")
