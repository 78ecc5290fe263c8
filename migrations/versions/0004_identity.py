"""Identity: tenants, accounts and their memberships.

Revision ID: 0004_identity
Revises: 0003_audit
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_identity"
down_revision = "0003_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_tenant",
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("slug"),
    )
    op.create_table(
        "identity_account",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("username", sa.String(100), nullable=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.BigInteger, nullable=True),
        sa.Column("fhir_ref", sa.String(130), nullable=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "identity_membership",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("roles", sa.String(300), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "tenant"),
    )


def downgrade() -> None:
    op.drop_table("identity_membership")
    op.drop_table("identity_account")
    op.drop_table("identity_tenant")
