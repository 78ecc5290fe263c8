"""Hospital waitlist (候补挂号) for full days of a doctor's schedule.

Revision ID: 0013_admin
Revises: 0012_consult
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_admin"
down_revision = "0012_consult"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hospital_waitlist",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("schedule", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("appointment", sa.String(64), nullable=True),
        sa.Column("note", sa.String(300), nullable=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_hospital_waitlist_day", "hospital_waitlist", ["tenant", "schedule", "day", "status"])
    op.create_index("ix_hospital_waitlist_patient", "hospital_waitlist", ["tenant", "patient", "status"])


def downgrade() -> None:
    op.drop_index("ix_hospital_waitlist_patient", table_name="hospital_waitlist")
    op.drop_index("ix_hospital_waitlist_day", table_name="hospital_waitlist")
    op.drop_table("hospital_waitlist")
