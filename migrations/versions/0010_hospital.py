"""Hospital services: booking rules, schedules and queue numbers.

Revision ID: 0010_hospital
Revises: 0009_security_events
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_hospital"
down_revision = "0009_security_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hospital_booking_rule",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("cancel_cutoff_minutes", sa.Integer, nullable=False),
        sa.Column("booking_window_days", sa.Integer, nullable=False),
        sa.Column("max_active_per_day", sa.Integer, nullable=False),
        sa.Column("max_active_per_department_day", sa.Integer, nullable=False),
        sa.Column("noshow_threshold", sa.Integer, nullable=False),
        sa.Column("noshow_window_days", sa.Integer, nullable=False),
        sa.Column("block_days", sa.Integer, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.create_table(
        "hospital_booking_block",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("blocked_until", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "patient"),
    )
    op.create_table(
        "hospital_queue_number",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("schedule", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("appointment", sa.String(64), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "schedule", "day", "number"),
    )
    op.create_table(
        "hospital_schedule_template",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("schedule", sa.String(64), nullable=False),
        sa.Column("weekdays", sa.String(20), nullable=False),
        sa.Column("start_time", sa.String(5), nullable=False),
        sa.Column("end_time", sa.String(5), nullable=False),
        sa.Column("slot_minutes", sa.Integer, nullable=False),
        sa.Column("valid_from", sa.String(10), nullable=True),
        sa.Column("valid_to", sa.String(10), nullable=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_hospital_schedule_template_schedule", "hospital_schedule_template", ["tenant", "schedule"])
    op.create_table(
        "hospital_schedule_exception",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("target", sa.String(130), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        sa.Column("slot_minutes", sa.Integer, nullable=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_hospital_schedule_exception_target", "hospital_schedule_exception", ["tenant", "target"])
    op.create_table(
        "hospital_reminder",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("appointment", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("due_us", sa.BigInteger, nullable=False),
        sa.Column("sent_us", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("tenant", "appointment", "kind"),
    )
    op.create_index("ix_hospital_reminder_due", "hospital_reminder", ["due_us"])


def downgrade() -> None:
    op.drop_index("ix_hospital_reminder_due", table_name="hospital_reminder")
    op.drop_table("hospital_reminder")
    op.drop_index("ix_hospital_schedule_exception_target", table_name="hospital_schedule_exception")
    op.drop_table("hospital_schedule_exception")
    op.drop_index("ix_hospital_schedule_template_schedule", table_name="hospital_schedule_template")
    op.drop_table("hospital_schedule_template")
    op.drop_table("hospital_queue_number")
    op.drop_table("hospital_booking_block")
    op.drop_table("hospital_booking_rule")
