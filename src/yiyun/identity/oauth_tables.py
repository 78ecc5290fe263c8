"""OAuth 2.0 / SMART App Launch: registered clients, authorisation codes, grants with their
refresh tokens, revoked token ids and used client-assertion ids (migration 0006_oauth).

Secrets, codes and refresh tokens are stored only as SHA-256 digests (they are random
256-bit values, so a plain digest cannot be reversed or guessed). Times are integer
microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text

metadata = MetaData()

# Apps and backend services allowed to ask for tokens (RFC 6749 §2).
oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # public | confidential | backend
    Column("secret_hash", String(64), nullable=True),  # client_secret_basic
    Column("redirect_uris", Text, nullable=False),  # JSON array, matched exactly
    Column("scopes", Text, nullable=False),  # the most this client may ever be granted
    Column("jwks", Text, nullable=True),  # JSON Web Key Set for private_key_jwt
    Column("jwks_url", String(500), nullable=True),
    Column("status", String(16), nullable=False),  # active | disabled
    Column("created_ts", BigInteger, nullable=False),
    Index("ix_oauth_client_tenant", "tenant"),
)

# One authorisation a user (or a backend client) gave a client: its refresh tokens form a
# family, and revoking the grant refuses every access token issued under it.
oauth_grant = Table(
    "oauth_grant",
    metadata,
    Column("grant_id", String(36), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("account_id", String(36), nullable=True),  # the user's account; null for backend services
    Column("roles", String(300), nullable=False),
    Column("scope", Text, nullable=False),
    Column("patient", String(64), nullable=True),
    Column("fhir_user", String(130), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("revoked_ts", BigInteger, nullable=True),
    Index("ix_oauth_grant_client", "client_id"),
)

# Authorisation codes (RFC 6749 §4.1.2): single use, 60 seconds.
oauth_code = Table(
    "oauth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("grant_id", String(36), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("nonce", String(255), nullable=True),
    Column("expires_ts", BigInteger, nullable=False),
    Column("used_ts", BigInteger, nullable=True),
)

# Refresh tokens, rotated on every use; a used one presented again revokes its grant.
oauth_refresh_token = Table(
    "oauth_refresh_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("grant_id", String(36), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("used_ts", BigInteger, nullable=True),
    Index("ix_oauth_refresh_token_grant", "grant_id"),
)

# Access-token ids (jti) and grant ids the bearer check refuses until they expire (RFC 7009).
oauth_revoked = Table(
    "oauth_revoked",
    metadata,
    Column("token_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # access | grant
    Column("revoked_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Index("ix_oauth_revoked_ts", "revoked_ts"),
)

# Client-assertion ids already used (RFC 7523 §3 item 7), kept until the assertion expires.
oauth_assertion = Table(
    "oauth_assertion",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_ts", BigInteger, nullable=False),
)
