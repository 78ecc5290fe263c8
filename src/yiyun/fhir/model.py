"""Value objects of the FHIR store, independent of the web framework."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson


def now_us() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1_000_000)


def instant_from_us(ts: int) -> str:
    """FHIR instant (https://hl7.org/fhir/R4/datatypes.html#instant) in UTC."""
    dt = datetime.fromtimestamp(ts / 1_000_000, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StoredResource:
    """One version of a resource as stored: the JSON bytes are served as they are."""

    rid: int
    tenant: str
    res_type: str
    res_id: str
    version_id: int
    ts: int
    deleted: bool
    content: bytes
    method: str = ""
    _parsed: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Any, method: str = "") -> "StoredResource":
        """From a `fhir_resource` or `fhir_resource_version` row."""
        return cls(
            rid=row.rid,
            tenant=row.tenant,
            res_type=row.res_type,
            res_id=row.res_id,
            version_id=row.version_id,
            ts=row.ts,
            deleted=bool(row.deleted),
            content=bytes(row.content),
            # only version rows carry `method`; asking a current row for it would raise and
            # catch an error per row (a search of a few hundred rows felt it)
            method=method or (row.method if "method" in row._fields else "") or "",
        )

    @property
    def resource(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = orjson.loads(self.content)
        return self._parsed

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def last_modified(self) -> str:
        return instant_from_us(self.ts)

    @property
    def reference(self) -> str:
        return f"{self.res_type}/{self.res_id}"


@dataclass
class RequestContext:
    """Who is asking, for which tenant and why: the repository filters and audits by it."""

    tenant: str
    subject: str = "system"
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    purpose: str = "TREAT"
    client_address: str | None = None
    base_url: str = "http://127.0.0.1:8000/fhir/R4"
