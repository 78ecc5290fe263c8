"""Tamper-evident audit log: one hash chain per tenant and its head.

Revision ID: 0003_audit
Revises: 0002_knowledge
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_audit"
down_revision = "0002_knowledge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("role", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=True),
        sa.Column("resource_id", sa.String(64), nullable=True),
        sa.Column("patient", sa.String(128), nullable=True),
        sa.Column("purpose", sa.String(32), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_resource", "audit_log", ["tenant", "resource_type", "resource_id", "seq"])
    op.create_index("ix_audit_log_actor", "audit_log", ["tenant", "actor", "seq"])
    op.create_index("ix_audit_log_patient", "audit_log", ["tenant", "patient", "seq"])
    op.create_table(
        "audit_chain_head",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", name="pk_audit_chain_head"),
    )


def downgrade() -> None:
    op.drop_table("audit_chain_head")
    op.drop_index("ix_audit_log_patient", table_name="audit_log")
    op.drop_index("ix_audit_log_actor", table_name="audit_log")
    op.drop_index("ix_audit_log_resource", table_name="audit_log")
    op.drop_table("audit_log")
