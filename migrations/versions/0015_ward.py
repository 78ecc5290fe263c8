"""Consultations for a ward: the guardian who started a consultation for their ward.

Revision ID: 0015_ward
Revises: 0014_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_ward"
down_revision = "0014_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("consult_session", sa.Column("started_by", sa.String(64), nullable=True))
    op.create_index("ix_consult_session_started_by", "consult_session", ["tenant", "started_by"])


def downgrade() -> None:
    op.drop_index("ix_consult_session_started_by", table_name="consult_session")
    with op.batch_alter_table("consult_session") as batch:
        batch.drop_column("started_by")
