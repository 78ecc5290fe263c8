"""Security alerts to privacy officers: SMS throttle and read marker per officer.

Revision ID: 0016_consent
Revises: 0015_ward
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_consent"
down_revision = "0015_ward"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_alert_recipient",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("last_sms_ts", sa.BigInteger, nullable=True),
        sa.Column("seen_seq", sa.BigInteger, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("security_alert_recipient")
