"""Security events raised by abuse signals.

Revision ID: 0009_security_events
Revises: 0008_verification
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_security_events"
down_revision = "0008_verification"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_event",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("acknowledged_by", sa.String(256), nullable=True),
        sa.Column("acknowledged_ts", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_security_event_list", "security_event", ["tenant", "status", "last_seen"])
    op.create_index("ix_security_event_dedupe", "security_event", ["tenant", "kind", "subject", "last_seen"])
    op.create_table(
        "security_scan_state",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("window_seq", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.create_table(
        "security_policy",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=True),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )


def downgrade() -> None:
    op.drop_table("security_policy")
    op.drop_table("security_scan_state")
    op.drop_index("ix_security_event_dedupe", table_name="security_event")
    op.drop_index("ix_security_event_list", table_name="security_event")
    op.drop_table("security_event")
