"""Loading FHIR content in bulk: Bundles (transaction, batch, collection) and NDJSON.

Used by `yiyun fhir import` and `yiyun demo`. Resources that carry an id keep it
(update-as-create), so loading the same data twice, or Synthea bundles that repeat the
same Organization and Practitioner, never duplicates anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.core.errors import YiyunError
from yiyun.fhir.bundle import process_bundle
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.fhir.router import FhirRequest, FhirRouter

CHUNK = 500

# Referenced resources first, so conditional references in later files resolve.
TYPE_ORDER = {
    t: i
    for i, t in enumerate(
        ["Organization", "Location", "Practitioner", "PractitionerRole", "HealthcareService", "Patient",
         "RelatedPerson", "Group", "Device", "Medication", "Encounter", "Condition"]
    )
}


@dataclass
class LoadReport:
    files: int = 0
    bundles: int = 0
    resources: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)

    def add(self, res_type: str, n: int = 1) -> None:
        self.resources += n
        self.by_type[res_type] = self.by_type.get(res_type, 0) + n


def discover(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(x for x in p.rglob("*") if x.suffix in (".json", ".ndjson") and x.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(str(p))

    def key(path: Path):
        stem = path.name.split(".")[0]
        info = "Information" in path.name  # Synthea hospital/practitioner bundles go first
        return (0 if info else 1, TYPE_ORDER.get(stem, 50), str(path))

    return sorted(found, key=key)


def as_upsert_entry(resource: dict, full_url: str | None = None) -> dict:
    res_type = resource.get("resourceType")
    rid = resource.get("id")
    entry: dict[str, Any] = {"resource": resource}
    if full_url:
        entry["fullUrl"] = full_url
    if isinstance(rid, str) and rid:
        entry["request"] = {"method": "PUT", "url": f"{res_type}/{rid}"}
    else:
        entry["request"] = {"method": "POST", "url": str(res_type)}
    return entry


def normalise_bundle(bundle: dict, keep_ids: bool) -> dict:
    """A transaction to load: POSTs of resources with ids become PUTs when keeping ids."""
    kind = bundle.get("type")
    entries = bundle.get("entry") or []
    if kind in ("transaction", "batch"):
        if keep_ids:
            for e in entries:
                req, res = e.get("request") or {}, e.get("resource") or {}
                if req.get("method") == "POST" and not req.get("ifNoneExist") and res.get("id"):
                    e["request"] = {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
        return {"resourceType": "Bundle", "type": kind, "entry": entries}
    # collection, searchset, document, message …: load each resource
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [as_upsert_entry(e["resource"], e.get("fullUrl")) for e in entries if isinstance(e.get("resource"), dict)],
    }


def ndjson_chunks(path: Path) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path.name} 第 {n} 行不是合法 JSON (line {n} is not JSON): {exc}") from exc
            if not isinstance(resource, dict) or "resourceType" not in resource:
                continue  # e.g. an export log line, not a resource
            chunk.append(resource)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


class Loader:
    def __init__(self, engine: AsyncEngine, ctx: RequestContext, *, keep_ids: bool = True, validate: bool = True):
        self.engine = engine
        self.ctx = ctx
        self.keep_ids = keep_ids
        self.validate = validate
        self.router = FhirRouter()

    async def load_bundle(self, bundle: dict, report: LoadReport) -> None:
        body = normalise_bundle(bundle, self.keep_ids)
        if not body["entry"]:
            return
        req = FhirRequest("POST", "", [], {"prefer": "return=minimal"}, body)
        async with unit_of_work(self.engine) as conn:
            repo = FhirRepository(conn, self.ctx, validate=self.validate)
            resp = await process_bundle(self.router, req, repo)
        report.bundles += 1
        for e in body["entry"]:
            res = e.get("resource") or {}
            if e.get("request", {}).get("method") in ("POST", "PUT"):
                report.add(res.get("resourceType", "?"))
        for item in (resp.resource() or {}).get("entry", []):
            status = item.get("response", {}).get("status", "")
            if status[:1] in ("4", "5"):
                report.failed.append(("batch entry", status))

    async def load_resources(self, resources: list[dict], report: LoadReport) -> None:
        await self.load_bundle(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}, report
        )

    async def load_path(self, path: Path, report: LoadReport, progress: Callable[[int], None] | None = None) -> None:
        report.files += 1
        try:
            if path.suffix == ".ndjson":
                for chunk in ndjson_chunks(path):
                    await self.load_resources(chunk, report)
                    if progress:
                        progress(len(chunk))
                return
            data = orjson.loads(path.read_bytes())
            if not isinstance(data, dict):
                raise ValueError("文件内容不是 JSON 对象 (not a JSON object)")
            if data.get("resourceType") == "Bundle":
                await self.load_bundle(data, report)
            else:
                await self.load_resources([data], report)
            if progress:
                progress(1)
        except (YiyunError, ValueError) as exc:
            message = exc.message if isinstance(exc, YiyunError) else str(exc)
            if isinstance(exc, YiyunError) and exc.issues:
                details = "; ".join(f"{i.diagnostics} @ {','.join(i.expression)}" for i in exc.issues[:3])
                message = f"{message}: {details}"
            report.failed.append((str(path), message))
