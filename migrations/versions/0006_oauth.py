"""OAuth 2.0 / SMART clients, authorisation codes and refresh tokens.

Revision ID: 0006_oauth
Revises: 0005_signin
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_oauth"
down_revision = "0005_signin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=True),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("jwks", sa.Text, nullable=True),
        sa.Column("jwks_url", sa.String(500), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_index("ix_oauth_client_tenant", "oauth_client", ["tenant"])
    op.create_table(
        "oauth_grant",
        sa.Column("grant_id", sa.String(36), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=True),
        sa.Column("roles", sa.String(300), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("fhir_user", sa.String(130), nullable=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
        sa.Column("revoked_ts", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    op.create_index("ix_oauth_grant_client", "oauth_grant", ["client_id"])
    op.create_table(
        "oauth_code",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("grant_id", sa.String(36), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("redirect_uri", sa.String(2000), nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("nonce", sa.String(255), nullable=True),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
        sa.Column("used_ts", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_table(
        "oauth_refresh_token",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("grant_id", sa.String(36), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
        sa.Column("used_ts", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_oauth_refresh_token_grant", "oauth_refresh_token", ["grant_id"])
    op.create_table(
        "oauth_revoked",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("revoked_ts", sa.BigInteger, nullable=False),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("token_id"),
    )
    op.create_index("ix_oauth_revoked_ts", "oauth_revoked", ["revoked_ts"])
    op.create_table(
        "oauth_assertion",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti"),
    )


def downgrade() -> None:
    op.drop_table("oauth_assertion")
    op.drop_index("ix_oauth_revoked_ts", table_name="oauth_revoked")
    op.drop_table("oauth_revoked")
    op.drop_index("ix_oauth_refresh_token_grant", table_name="oauth_refresh_token")
    op.drop_table("oauth_refresh_token")
    op.drop_table("oauth_code")
    op.drop_index("ix_oauth_grant_client", table_name="oauth_grant")
    op.drop_table("oauth_grant")
    op.drop_index("ix_oauth_client_tenant", table_name="oauth_client")
    op.drop_table("oauth_client")
