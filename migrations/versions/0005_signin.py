"""Web sessions, second factors, one-time codes and sign-in attempts.

Revision ID: 0005_signin
Revises: 0004_identity
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_signin"
down_revision = "0004_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("identity_membership") as batch:
        batch.add_column(sa.Column("fhir_ref", sa.String(130), nullable=True))
    op.create_table(
        "identity_session",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ts", sa.BigInteger, nullable=False),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
        sa.Column("next_path", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    op.create_index("ix_identity_session_account", "identity_session", ["account_id"])
    op.create_table(
        "identity_totp",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("secret", sa.String(255), nullable=False),
        sa.Column("confirmed_ts", sa.BigInteger, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "identity_recovery_code",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("used_ts", sa.BigInteger, nullable=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "code_hash"),
    )
    op.create_table(
        "identity_phone",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("phone", sa.String(255), nullable=False),
        sa.Column("phone_index", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("phone_index"),
    )
    op.create_table(
        "identity_sms_code",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("phone_index", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("used_ts", sa.BigInteger, nullable=True),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_identity_sms_code_phone", "identity_sms_code", ["phone_index", "created_ts"])
    op.create_index("ix_identity_sms_code_address", "identity_sms_code", ["client_address", "created_ts"])
    op.create_table(
        "identity_sms_outbox",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("phone", sa.String(255), nullable=False),
        sa.Column("body", sa.String(500), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "identity_signin_attempt",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_identity_signin_attempt_key", "identity_signin_attempt", ["key", "ts"])


def downgrade() -> None:
    op.drop_index("ix_identity_signin_attempt_key", table_name="identity_signin_attempt")
    op.drop_table("identity_signin_attempt")
    op.drop_table("identity_sms_outbox")
    op.drop_index("ix_identity_sms_code_address", table_name="identity_sms_code")
    op.drop_index("ix_identity_sms_code_phone", table_name="identity_sms_code")
    op.drop_table("identity_sms_code")
    op.drop_table("identity_phone")
    op.drop_table("identity_recovery_code")
    op.drop_table("identity_totp")
    op.drop_index("ix_identity_session_account", table_name="identity_session")
    op.drop_table("identity_session")
    with op.batch_alter_table("identity_membership") as batch:
        batch.drop_column("fhir_ref")
