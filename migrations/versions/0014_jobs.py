"""Reminder delivery and automatic no-shows: delivery state of reminders, the no-show grace rule.

Revision ID: 0014_jobs
Revises: 0013_admin
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_jobs"
down_revision = "0013_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hospital_booking_rule",
                  sa.Column("noshow_grace_minutes", sa.Integer, nullable=False, server_default="30"))
    op.add_column("hospital_reminder", sa.Column("outcome", sa.String(16), nullable=True))
    op.add_column("hospital_reminder", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("hospital_reminder", sa.Column("last_error", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hospital_reminder") as batch:
        batch.drop_column("last_error")
        batch.drop_column("attempts")
        batch.drop_column("outcome")
    with op.batch_alter_table("hospital_booking_rule") as batch:
        batch.drop_column("noshow_grace_minutes")
