"""Consultation ratings; the consultation of a booking is found by an index.

Revision ID: 0012_consult
Revises: 0011_consultation
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_consult"
down_revision = "0011_consultation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_consult_session_appointment", "consult_session", ["tenant", "appointment_id"])
    op.create_table(
        "consult_rating",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("practitioner_id", sa.String(64), nullable=False),
        sa.Column("stars", sa.Integer, nullable=False),
        sa.Column("comment", sa.String(200), nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "consultation_id"),
    )
    op.create_index("ix_consult_rating_practitioner", "consult_rating", ["tenant", "practitioner_id"])


def downgrade() -> None:
    op.drop_index("ix_consult_rating_practitioner", table_name="consult_rating")
    op.drop_table("consult_rating")
    op.drop_index("ix_consult_session_appointment", table_name="consult_session")
