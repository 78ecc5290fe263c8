"""Online consultations: sessions, messages and uploads.

Revision ID: 0011_consultation
Revises: 0010_hospital
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_consultation"
down_revision = "0010_hospital"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consult_session",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("doctor_id", sa.String(64), nullable=True),
        sa.Column("department", sa.String(130), nullable=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("appointment_id", sa.String(64), nullable=True),
        sa.Column("form_id", sa.String(64), nullable=True),
        sa.Column("record_id", sa.String(64), nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("accepted_us", sa.BigInteger, nullable=True),
        sa.Column("ended_us", sa.BigInteger, nullable=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("patient_read_seq", sa.Integer, nullable=False),
        sa.Column("doctor_read_seq", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "id"),
    )
    op.create_index("ix_consult_session_queue", "consult_session", ["tenant", "state", "created_us"])
    op.create_index("ix_consult_session_patient", "consult_session", ["tenant", "patient_id"])
    op.create_index("ix_consult_session_doctor", "consult_session", ["tenant", "doctor_id", "state"])
    op.create_table(
        "consult_message",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("communication_id", sa.String(64), nullable=False),
        sa.Column("sender_role", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=True),
        sa.Column("sent_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "consultation_id", "seq"),
        sa.UniqueConstraint("tenant", "consultation_id", "client_id", name="uq_consult_message_client"),
    )
    op.create_table(
        "consult_upload",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("uploader", sa.String(130), nullable=False),
        sa.Column("storage_key", sa.String(300), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "id"),
    )
    op.create_index("ix_consult_upload_consultation", "consult_upload", ["tenant", "consultation_id"])
    op.create_table(
        "consult_call",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("started_by", sa.String(8), nullable=False),
        sa.Column("started_us", sa.BigInteger, nullable=False),
        sa.Column("connected_us", sa.BigInteger, nullable=True),
        sa.Column("ended_us", sa.BigInteger, nullable=True),
        sa.Column("ended_by", sa.String(8), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "id"),
    )
    op.create_index("ix_consult_call_consultation", "consult_call", ["tenant", "consultation_id"])


def downgrade() -> None:
    op.drop_index("ix_consult_call_consultation", table_name="consult_call")
    op.drop_table("consult_call")
    op.drop_index("ix_consult_upload_consultation", table_name="consult_upload")
    op.drop_table("consult_upload")
    op.drop_table("consult_message")
    op.drop_index("ix_consult_session_doctor", table_name="consult_session")
    op.drop_index("ix_consult_session_patient", table_name="consult_session")
    op.drop_index("ix_consult_session_queue", table_name="consult_session")
    op.drop_table("consult_session")
