"""Identity tables: tenants, accounts and their memberships. Not clinical data, so
ordinary tables (DESIGN.md: "credentials and sessions" live outside the FHIR store)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table

metadata = MetaData()

# The region's organisations: each is one isolated tenant of the FHIR store.
tenant = Table(
    "identity_tenant",
    metadata,
    Column("slug", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # hospital | clinic | pharmacy | cdc
    Column("active", Boolean, nullable=False, default=True),
    Column("created_ts", BigInteger, nullable=False),
)

account = Table(
    "identity_account",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(100), nullable=True, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # staff | patient
    Column("password_hash", String(255), nullable=True),
    Column("status", String(16), nullable=False),  # active | pending | disabled
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger, nullable=True),
    Column("fhir_ref", String(130), nullable=True),  # Practitioner/… or Patient/…
    Column("created_ts", BigInteger, nullable=False),
)

membership = Table(
    "identity_membership",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("tenant", String(64), primary_key=True),
    Column("roles", String(300), nullable=False),  # comma-separated role codes
    # The person's FHIR resource in this tenant (Patient/… for patients, Practitioner/… for
    # staff); when null the account's own `fhir_ref` applies (migration 0005_signin).
    Column("fhir_ref", String(130), nullable=True),
)
