"""Tables of the FHIR store: current resources and every version.

Search index tables live in `yiyun.fhir.search.tables` on the same metadata. Times are
integer microseconds since the Unix epoch (UTC), so ordering and `_since` behave the
same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint identity.
RowId = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "fhir_resource",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=False),
    UniqueConstraint("tenant", "res_type", "res_id", name="uq_fhir_resource_identity"),
    # Searches without _sort and exports walk a type in rid order (keyset paging).
    Index("ix_fhir_resource_type_rid", "tenant", "res_type", "rid"),
)

resource_version = Table(
    "fhir_resource_version",
    metadata,
    Column("rid", RowId, primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("method", String(8), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Index("ix_fhir_version_tenant_ts", "tenant", "ts"),
    Index("ix_fhir_version_type_ts", "tenant", "res_type", "ts"),
)

# Bulk export jobs (FHIR Bulk Data Access v2): not clinical data, an ordinary table.
export_job = Table(
    "fhir_export_job",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | done | failed | cancelled
    Column("request_url", String(2048), nullable=False),
    Column("params", LargeBinary, nullable=False),  # JSON: level, group, _type, _since
    Column("transaction_ts", BigInteger, nullable=False),
    Column("progress", String(128), nullable=True),
    Column("manifest", LargeBinary, nullable=True),
    Column("error", String(2048), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
)
