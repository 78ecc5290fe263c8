"""Sign-in state: web sessions, TOTP second factors, recovery codes, one-time SMS codes,
the development SMS outbox and sign-in attempts (migration 0005_signin).

Nothing here is stored in a form that signs anyone in when read from a copy of the
database: session ids, recovery codes and SMS codes are kept as keyed hashes, TOTP secrets
and phone numbers are encrypted (`yiyun.identity.protection.fields`)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table

from yiyun.identity.protection.fields import PHONE, EncryptedColumn, register_encrypted_column

metadata = MetaData()

# A signed-in browser (or one half-way through signing in). The cookie holds a random id;
# only its SHA-256 is stored, so a copy of this table opens no session.
session = Table(
    "identity_session",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("tenant", String(64), nullable=False),  # the active tenant
    Column("stage", String(16), nullable=False),  # active | mfa | enrol (second factor still to give)
    Column("csrf_token", String(64), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("last_seen_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),  # absolute timeout
    Column("client_address", String(64), nullable=True),
    Column("user_agent", String(300), nullable=True),
    Column("next_path", String(500), nullable=True),  # where to go once signed in
    Index("ix_identity_session_account", "account_id"),
)

# RFC 6238 second factor of a staff account; `confirmed_ts` is null until enrolment is confirmed.
totp = Table(
    "identity_totp",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("secret", String(255), nullable=False),  # encrypted base32 secret
    Column("confirmed_ts", BigInteger, nullable=True),
    Column("last_step", BigInteger, nullable=True),  # last accepted time step: a code is used once
    Column("created_ts", BigInteger, nullable=False),
)

recovery_code = Table(
    "identity_recovery_code",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("code_hash", String(64), primary_key=True),
    Column("used_ts", BigInteger, nullable=True),
    Column("created_ts", BigInteger, nullable=False),
)

# A patient account's mobile phone: encrypted, found by its blind index.
phone = Table(
    "identity_phone",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("phone", String(255), nullable=False),
    Column("phone_index", String(64), nullable=False, unique=True),
)

sms_code = Table(
    "identity_sms_code",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("phone_index", String(64), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("tries", Integer, nullable=False),
    Column("used_ts", BigInteger, nullable=True),
    Column("client_address", String(64), nullable=True),
    Index("ix_identity_sms_code_phone", "phone_index", "created_ts"),
    Index("ix_identity_sms_code_address", "client_address", "created_ts"),
)

# Messages the development provider "sent": read them at /dev/sms-outbox.
sms_outbox = Table(
    "identity_sms_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("phone", String(255), nullable=False),  # encrypted
    Column("body", String(500), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

# Sign-in attempts by key ("user:<hmac of the username>", "addr:<client address>"), for
# back-off and lockout (NIST SP 800-63B §5.2.2; GB/T 22239-2019 8.1.4.1 登录失败处理).
signin_attempt = Table(
    "identity_signin_attempt",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(100), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("success", Boolean, nullable=False),
    Index("ix_identity_signin_attempt_key", "key", "ts"),
)

register_encrypted_column(EncryptedColumn(phone, "account_id", "phone", PHONE, "phone_index"))
register_encrypted_column(EncryptedColumn(totp, "account_id", "secret", "totp-secret"))
register_encrypted_column(EncryptedColumn(sms_outbox, "id", "phone", PHONE))
