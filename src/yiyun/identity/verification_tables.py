"""Real-name verification of patients and registration of practitioners
(migration 0008_verification)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table

from yiyun.identity.protection.fields import RESIDENT_ID, EncryptedColumn, register_encrypted_column

metadata = MetaData()

# One row per patient account: the outcome of its real-name verification (实名认证). The
# resident ID is never stored in plain text: its mask for display, its ciphertext (so a key
# rotation can re-index it) and its blind index (one ID, one verified account).
real_name = Table(
    "identity_real_name",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("verified", Boolean, nullable=False),
    Column("name_masked", String(64), nullable=False),
    Column("id_masked", String(32), nullable=False),
    Column("id_sealed", String(200), nullable=False),
    Column("id_index", String(64), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("reason", String(32), nullable=False),  # matched | name-mismatch | not-found | deceased | revoked | invalid-id
    Column("verified_ts", BigInteger, nullable=True),
    Column("updated_ts", BigInteger, nullable=False),
)
Index("ix_identity_real_name_index", real_name.c.id_index)
register_encrypted_column(EncryptedColumn(real_name, "account_id", "id_sealed", RESIDENT_ID, "id_index"))

# Every attempt, for the daily limit (the outcome only: never the number tried).
real_name_attempt = Table(
    "identity_real_name_attempt",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(36), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("outcome", String(32), nullable=False),
)
Index("ix_identity_real_name_attempt_account", real_name_attempt.c.account_id, real_name_attempt.c.ts)

# A doctor's sign-up, waiting for (or decided by) an administrator of the hospital.
practitioner_registration = Table(
    "identity_practitioner_registration",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("department", String(100), nullable=False),
    Column("certificate", String(15), nullable=False),  # 医师执业证书编码
    Column("status", String(16), nullable=False),  # pending | approved | rejected
    Column("reason", String(500), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("decided_ts", BigInteger, nullable=True),
    Column("decided_by", String(256), nullable=True),
    Column("practitioner_ref", String(130), nullable=True),
)
Index("ix_identity_practitioner_registration_tenant", practitioner_registration.c.tenant,
      practitioner_registration.c.status, practitioner_registration.c.created_ts)
Index("ix_identity_practitioner_registration_certificate", practitioner_registration.c.certificate)
