"""Real-name verification of patients and practitioner registration.

Revision ID: 0008_verification
Revises: 0007_sharing
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_verification"
down_revision = "0007_sharing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_real_name",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("name_masked", sa.String(64), nullable=False),
        sa.Column("id_masked", sa.String(32), nullable=False),
        sa.Column("id_sealed", sa.String(200), nullable=False),
        sa.Column("id_index", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("verified_ts", sa.BigInteger, nullable=True),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_index("ix_identity_real_name_index", "identity_real_name", ["id_index"])
    op.create_table(
        "identity_real_name_attempt",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_identity_real_name_attempt_account", "identity_real_name_attempt", ["account_id", "ts"])
    op.create_table(
        "identity_practitioner_registration",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("department", sa.String(100), nullable=False),
        sa.Column("certificate", sa.String(15), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("decided_ts", sa.BigInteger, nullable=True),
        sa.Column("decided_by", sa.String(256), nullable=True),
        sa.Column("practitioner_ref", sa.String(130), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_identity_practitioner_registration_tenant", "identity_practitioner_registration",
                    ["tenant", "status", "created_ts"])
    op.create_index("ix_identity_practitioner_registration_certificate", "identity_practitioner_registration",
                    ["certificate"])


def downgrade() -> None:
    op.drop_index("ix_identity_practitioner_registration_certificate", table_name="identity_practitioner_registration")
    op.drop_index("ix_identity_practitioner_registration_tenant", table_name="identity_practitioner_registration")
    op.drop_table("identity_practitioner_registration")
    op.drop_index("ix_identity_real_name_attempt_account", table_name="identity_real_name_attempt")
    op.drop_table("identity_real_name_attempt")
    op.drop_index("ix_identity_real_name_index", table_name="identity_real_name")
    op.drop_table("identity_real_name")
