"""Tables of the tamper-evident audit log (ordinary tables, not FHIR resources).

One hash chain per tenant: `audit_log` rows are numbered 1, 2, 3 … within their tenant and
each carries the hash of the one before; `audit_chain_head` holds, per tenant, the last
number and hash, and is the row that appends lock to stay in order.
Times are integer microseconds since the Unix epoch (UTC), as in the FHIR store.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text

metadata = MetaData()

audit_log = Table(
    "audit_log",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("role", String(64), nullable=True),
    Column("action", String(32), nullable=False),
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(64), nullable=True),
    Column("patient", String(128), nullable=True),  # "Patient/<id>" whose record was touched
    Column("purpose", String(32), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("client_address", String(64), nullable=True),
    Column("detail", Text, nullable=True),  # small JSON object
    Column("key_id", String(32), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # "Who touched this record", "what did this person do", "who saw my record".
    Index("ix_audit_log_resource", "tenant", "resource_type", "resource_id", "seq"),
    Index("ix_audit_log_actor", "tenant", "actor", "seq"),
    Index("ix_audit_log_patient", "tenant", "patient", "seq"),
)

audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
)
