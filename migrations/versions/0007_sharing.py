"""Break-glass grants and disease-control investigations.

Revision ID: 0007_sharing
Revises: 0006_oauth
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_sharing"
down_revision = "0006_oauth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sharing_break_glass",
        sa.Column("grant_id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("practitioner", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
        sa.Column("ended_ts", sa.BigInteger, nullable=True),
        sa.Column("ended_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    op.create_index("ix_sharing_break_glass_practitioner", "sharing_break_glass",
                    ["tenant", "practitioner", "expires_ts"])
    op.create_index("ix_sharing_break_glass_tenant", "sharing_break_glass", ["tenant", "expires_ts"])
    op.create_table(
        "sharing_investigation",
        sa.Column("source_tenant", sa.String(64), nullable=False),
        sa.Column("condition_id", sa.String(64), nullable=False),
        sa.Column("cdc_tenant", sa.String(64), nullable=False),
        sa.Column("opened_by", sa.String(256), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("opened_ts", sa.BigInteger, nullable=False),
        sa.Column("closed_ts", sa.BigInteger, nullable=True),
        sa.Column("closed_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("source_tenant", "condition_id"),
    )


def downgrade() -> None:
    op.drop_table("sharing_investigation")
    op.drop_index("ix_sharing_break_glass_tenant", table_name="sharing_break_glass")
    op.drop_index("ix_sharing_break_glass_practitioner", table_name="sharing_break_glass")
    op.drop_table("sharing_break_glass")
