"""Sharing state that is not clinical data (migration 0007_sharing).

- `sharing_break_glass`: emergency access grants ("break-glass"): one practitioner, one
  patient of the tenant, a mandatory reason, a short lifetime. The access policy adds the
  patient to the practitioner's care set while a grant is active.
- `sharing_investigation`: cases (a Condition of a hospital tenant) that a disease-control
  officer put under investigation: their patient is shown identified in the case list.

Care relationships, guardianship and patient consent are FHIR resources (Encounter,
Appointment, CareTeam, ServiceRequest, EpisodeOfCare, RelatedPerson, Consent), not tables.
Times are integer microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table

metadata = MetaData()

break_glass = Table(
    "sharing_break_glass",
    metadata,
    Column("grant_id", String(36), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("practitioner", String(64), nullable=False),  # Practitioner id (the token's fhirUser)
    Column("subject", String(256), nullable=False),  # the token's subject (account)
    Column("patient", String(64), nullable=False),  # Patient id in the tenant
    Column("reason", String(1000), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("ended_ts", BigInteger, nullable=True),  # ended early by the practitioner or a privacy officer
    Column("ended_by", String(256), nullable=True),
    Index("ix_sharing_break_glass_practitioner", "tenant", "practitioner", "expires_ts"),
    Index("ix_sharing_break_glass_tenant", "tenant", "expires_ts"),
)

investigation = Table(
    "sharing_investigation",
    metadata,
    Column("source_tenant", String(64), primary_key=True),  # the tenant holding the Condition
    Column("condition_id", String(64), primary_key=True),
    Column("cdc_tenant", String(64), nullable=False),
    Column("opened_by", String(256), nullable=False),
    Column("reason", String(1000), nullable=False),
    Column("opened_ts", BigInteger, nullable=False),
    Column("closed_ts", BigInteger, nullable=True),
    Column("closed_by", String(256), nullable=True),
)
