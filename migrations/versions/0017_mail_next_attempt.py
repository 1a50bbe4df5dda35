"""mail next attempt: each outbox mail backs off on its own after a failed attempt

Revision ID: 0017_mail_next_attempt
Revises: 0016_logouts_everywhere
Create Date: 2026-12-04 22:00:00

- mail_outbox.next_attempt_at: when a mail that failed may be tried again (app/services/mail.py's MAIL_BACKOFF:
  10 s, 30 s, 1 min, 5 min, 15 min, 1 h, then every 3 h); a delivery takes only the mails due. NULL for a mail never
  tried: due at once. Existing rows start NULL: a pending one is tried by the next delivery, as before this revision.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0017_mail_next_attempt"
down_revision = "0016_logouts_everywhere"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ALTER TABLE on both databases, as 0010 and 0016 (SQLite 3.35+ drops a column in place).
    op.add_column("mail_outbox", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    op.drop_column("mail_outbox", "next_attempt_at")
