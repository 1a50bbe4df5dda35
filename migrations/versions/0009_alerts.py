"""alerts: watched strategies and the signals the scheduled evaluation found on them

Revision ID: 0009_alerts
Revises: 0008_auth_sessions
Create Date: 2026-12-02 02:10:00

- alert_watches: one row per strategy its owner watches.
- alert_signals: one row per (strategy, bar date, side) crossover seen, with how it is mailed and when it was.

A downgrade drops both: the watches and the signal history are lost (users watch their strategies again).
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0009_alerts"
down_revision = "0008_auth_sessions"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "alert_watches",
        sa.Column("strategy_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_alert_watches_strategy_id_strategies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_alert_watches_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("strategy_id", name=op.f("pk_alert_watches")),
    )
    op.create_index(op.f("ix_alert_watches_user_id"), "alert_watches", ["user_id"], unique=False)
    op.create_table(
        "alert_signals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("strategy_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("bar_date", sa.Date(), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("close", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("fast", sa.Integer(), nullable=False),
        sa.Column("slow", sa.Integer(), nullable=False),
        sa.Column("delivery", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mailed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_alert_signals_side")),
        sa.CheckConstraint("delivery IN ('realtime', 'digest', 'none')", name=op.f("ck_alert_signals_delivery")),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_alert_signals_strategy_id_strategies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_alert_signals_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_signals")),
        sa.UniqueConstraint("strategy_id", "bar_date", "side", name="uq_alert_signals_strategy_id_bar_date_side"),
    )
    op.create_index("ix_alert_signals_user_id_bar_date", "alert_signals", ["user_id", "bar_date"], unique=False)


def downgrade():
    op.drop_index("ix_alert_signals_user_id_bar_date", table_name="alert_signals")
    op.drop_table("alert_signals")
    op.drop_index(op.f("ix_alert_watches_user_id"), table_name="alert_watches")
    op.drop_table("alert_watches")
