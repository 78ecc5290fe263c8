"""FHIR Bulk Data Access v2: `$export` at system, Patient and Group level.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html — kick-off with `Prefer: respond-async`
answers 202 and a Content-Location to poll; polling answers 202 with `X-Progress` until
the manifest is ready (200); DELETE cancels. Files are NDJSON, one per resource type,
written from the stored JSON bytes without re-serialising.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from functools import lru_cache
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Iterable

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, Issue, NotFound, operation_outcome
from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings
from yiyun.fhir.history import parse_instant_us
from yiyun.fhir.model import instant_from_us, now_us
from yiyun.fhir.protection import FULL, Disclosure, disclosure_for, reveal_content
from yiyun.fhir.router import FhirResponse, Operation, operations
from yiyun.fhir.search.tables import idx_reference
from yiyun.fhir.tables import export_job
from yiyun.fhir.tables import resource as resource_t
from yiyun.fhir.types import is_resource_type, resource_types

log = get_logger("yiyun.bulk")
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
BATCH = 5000
_running: set[asyncio.Task] = set()


@lru_cache(maxsize=1)
def patient_compartment() -> dict[str, list[str]]:
    text = importlib_resources.files("yiyun.fhir").joinpath("data/compartment-patient.json").read_text()
    return json.loads(text)


def export_root() -> Path:
    return get_settings().data_dir.resolve() / "exports"


# ------------------------------------------------------------------ writing
async def _member_ids(conn: AsyncConnection, tenant: str, group_id: str) -> list[str]:
    row = (
        await conn.execute(
            select(resource_t.c.content, resource_t.c.deleted).where(
                resource_t.c.tenant == tenant, resource_t.c.res_type == "Group", resource_t.c.res_id == group_id
            )
        )
    ).first()
    if row is None or row.deleted:
        raise NotFound(f"未找到 Group/{group_id} (group not found)")
    members = orjson.loads(row.content).get("member") or []
    refs = [m.get("entity", {}).get("reference", "") for m in members if isinstance(m, dict)]
    return [r.split("/", 1)[1] for r in refs if r.startswith("Patient/")]


def _type_query(tenant: str, res_type: str, level: str, since_us: int | None, patients: list[str] | None):
    stmt = select(resource_t.c.rid, resource_t.c.res_id, resource_t.c.content).where(
        resource_t.c.tenant == tenant, resource_t.c.res_type == res_type, resource_t.c.deleted.is_(False)
    )
    if since_us is not None:
        stmt = stmt.where(resource_t.c.ts >= since_us)
    if level == "system":
        return stmt
    if res_type == "Patient":
        return stmt.where(resource_t.c.res_id.in_(patients)) if patients is not None else stmt
    params = patient_compartment().get(res_type, [])
    linked = select(idx_reference.c.rid).where(
        idx_reference.c.tenant == tenant,
        idx_reference.c.res_type == res_type,
        idx_reference.c.param.in_(params),
        idx_reference.c.target_type == "Patient",
    )
    if patients is not None:
        linked = linked.where(idx_reference.c.target_id.in_(patients))
    return stmt.where(resource_t.c.rid.in_(linked))


def export_types(level: str, requested: list[str] | None) -> list[str]:
    if level == "system":
        allowed = sorted(resource_types())
    else:
        allowed = sorted({"Patient", *patient_compartment().keys()})
    if requested:
        return [t for t in requested if t in allowed]
    return allowed


async def write_ndjson(
    engine: AsyncEngine,
    tenant: str,
    out_dir: Path,
    *,
    level: str = "system",
    types: Iterable[str] | None = None,
    since_us: int | None = None,
    group_id: str | None = None,
    patients: list[str] | None = None,
    on_progress=None,
    disclosure: Disclosure = FULL,
) -> list[dict]:
    """Write one NDJSON file per type with at least one resource; returns [{type, file, count}].

    `patients` limits a patient-level export to those patients' compartments (the access
    policy sets it for a patient-scoped token); with a group, to its members among them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs: list[dict] = []
    async with unit_of_work(engine, write=False) as conn:
        if group_id:
            members = await _member_ids(conn, tenant, group_id)
            patients = members if patients is None else [p for p in members if p in set(patients)]
        for res_type in export_types(level, list(types) if types else None):
            count = await _write_type(conn, tenant, res_type, level, since_us, patients, out_dir, disclosure)
            if count:
                outputs.append({"type": res_type, "file": f"{res_type}.ndjson", "count": count})
                if on_progress:
                    await on_progress(f"{res_type}: {count}")
    return outputs


async def _write_type(conn, tenant, res_type, level, since_us, patients, out_dir: Path, disclosure=FULL) -> int:
    base = _type_query(tenant, res_type, level, since_us, patients)
    last, count = 0, 0
    path = out_dir / f"{res_type}.ndjson"
    fh = None
    try:
        while True:
            rows = (
                await conn.execute(base.where(resource_t.c.rid > last).order_by(resource_t.c.rid).limit(BATCH))
            ).all()
            if not rows:
                break
            if fh is None:
                fh = path.open("wb")
            # resident IDs and phones as the exporter may see them (yiyun.fhir.protection)
            fh.write(b"\n".join(reveal_content(res_type, r.res_id, bytes(r.content), disclosure)[0] for r in rows) + b"\n")
            count += len(rows)
            last = rows[-1].rid
    finally:
        if fh is not None:
            fh.close()
    return count


# --------------------------------------------------------------- the job
async def _set_job(engine: AsyncEngine, job_id: str, **values) -> None:
    # a job cancelled meanwhile stays cancelled: the client's DELETE may land between the
    # job's first read and its first write
    async with unit_of_work(engine) as conn:
        await conn.execute(update(export_job).where(export_job.c.job_id == job_id, export_job.c.status != "cancelled")
                           .values(**values))


async def run_export_job(engine: AsyncEngine, job_id: str, base_url: str) -> None:
    async with unit_of_work(engine, write=False) as conn:
        job = (await conn.execute(select(export_job).where(export_job.c.job_id == job_id))).first()
    if job is None or job.status == "cancelled":
        return
    params = orjson.loads(job.params)
    await _set_job(engine, job_id, status="running", progress="starting")

    async def progress(text: str) -> None:
        await _set_job(engine, job_id, progress=text[:128])

    try:
        outputs = await write_ndjson(
            engine,
            job.tenant,
            export_root() / job_id,
            level=params["level"],
            types=params.get("types"),
            since_us=params.get("since_us"),
            group_id=params.get("group_id"),
            patients=params.get("patients"),
            on_progress=progress,
            disclosure=Disclosure.from_dict(params.get("disclosure")),
        )
    except Exception as exc:  # recorded on the job: the poller reports it as an OperationOutcome
        log.exception("export_failed", job_id=job_id)
        await _set_job(engine, job_id, status="failed", error=str(exc)[:2000])
        return
    manifest = {
        "transactionTime": instant_from_us(job.transaction_ts),
        "request": job.request_url,
        # the files are served under the FHIR base, which requires the bearer token
        "requiresAccessToken": True,
        "output": [
            {"type": o["type"], "url": f"{base_url}/$export-file?_jobId={job_id}&_file={o['file']}", "count": o["count"]}
            for o in outputs
        ],
        "error": [],
    }
    async with unit_of_work(engine) as conn:
        current = (await conn.execute(select(export_job.c.status).where(export_job.c.job_id == job_id))).scalar()
        if current == "cancelled":
            shutil.rmtree(export_root() / job_id, ignore_errors=True)
            return
        await conn.execute(
            update(export_job)
            .where(export_job.c.job_id == job_id)
            .values(status="done", progress="done", manifest=orjson.dumps(manifest))
        )


def _start_in_background(job_id: str, base_url: str) -> None:
    task = asyncio.get_running_loop().create_task(run_export_job(get_engine(), job_id, base_url))
    _running.add(task)
    task.add_done_callback(_running.discard)


# ---------------------------------------------------------- the operations
def _parse_kickoff(req, level: str) -> dict:
    if "respond-async" not in req.prefer:
        raise BadRequest("批量导出需要请求头 Prefer: respond-async (bulk export is asynchronous)")
    out: dict = {"level": level}
    for name, value in req.params:
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise BadRequest(f"不支持的输出格式 {value!r} (only application/fhir+ndjson)")
        elif name == "_type":
            types = [t.strip() for t in value.split(",") if t.strip()]
            unknown = [t for t in types if not is_resource_type(t)]
            if unknown:
                raise BadRequest(f"_type 中有未知的资源类型: {', '.join(unknown)}")
            out.setdefault("types", []).extend(types)
        elif name == "_since":
            out["since_us"] = parse_instant_us(value, "_since")
        else:
            raise BadRequest(f"批量导出不支持参数 {name} (unsupported $export parameter)")
    return out


async def kickoff(router, req, repo, res_type, res_id) -> FhirResponse:
    level = "system" if res_type is None else "patient"
    params = _parse_kickoff(req, level)
    if res_type == "Group":
        await repo.read("Group", res_id)  # 404 when the group does not exist or is not visible
        params["group_id"] = res_id
    # The policy may narrow `params` to what the caller may read and search: `types`, and
    # for a patient-scoped token `level` and `patients` (that patient's compartment only).
    await repo.policy.check(repo.ctx, "export", res_type, res_id, params)
    params["owner"] = repo.ctx.subject
    params["disclosure"] = disclosure_for(repo.ctx).as_dict()
    job_id = uuid.uuid4().hex
    base = repo.ctx.base_url
    path = "/".join(p for p in (base, res_type, res_id, "$export") if p)
    query = "&".join(f"{k}={v}" for k, v in req.params)
    ts = now_us()
    await repo.conn.execute(
        export_job.insert().values(
            job_id=job_id,
            tenant=repo.ctx.tenant,
            status="queued",
            request_url=f"{path}?{query}" if query else path,
            params=orjson.dumps(params),
            transaction_ts=ts,
            progress="queued",
            created_ts=ts,
        )
    )
    await repo.policy.record(repo.ctx, "export", res_type, res_id, "ok", detail=params)
    repo.after_commit.append(lambda: _start_in_background(job_id, base))
    return FhirResponse(202, None, {"Content-Location": f"{base}/$export-poll-status?_jobId={job_id}"})


async def _job(repo, req):
    job_id = dict(req.params).get("_jobId", "")
    row = (
        await repo.conn.execute(
            select(export_job).where(export_job.c.job_id == job_id, export_job.c.tenant == repo.ctx.tenant)
        )
    ).first()
    owner = orjson.loads(row.params).get("owner") if row is not None else None
    if row is None or (owner is not None and owner != repo.ctx.subject):
        # another caller's export is as invisible as a missing one
        raise NotFound(f"未找到导出任务 {job_id!r} (export job not found)")
    return row


async def poll_status(router, req, repo, res_type, res_id) -> FhirResponse:
    job = await _job(repo, req)
    if req.method.upper() == "DELETE":
        await repo.conn.execute(update(export_job).where(export_job.c.job_id == job.job_id).values(status="cancelled"))
        shutil.rmtree(export_root() / job.job_id, ignore_errors=True)
        return FhirResponse(202, None)
    if job.status in ("queued", "running"):
        return FhirResponse(202, None, {"X-Progress": job.progress or job.status, "Retry-After": "1"})
    if job.status == "cancelled":
        raise NotFound("导出任务已取消 (export job was cancelled)")
    if job.status == "failed":
        return FhirResponse(500, operation_outcome([Issue("error", "exception", f"导出失败: {job.error}")]))
    return FhirResponse(200, orjson.loads(job.manifest))


async def export_file(router, req, repo, res_type, res_id) -> FhirResponse:
    job = await _job(repo, req)
    name = dict(req.params).get("_file", "")
    if job.status != "done" or not name.endswith(".ndjson") or "/" in name or ".." in name:
        raise NotFound("未找到导出文件 (export file not found)")
    path = export_root() / job.job_id / name
    if not path.is_file():
        raise NotFound("未找到导出文件 (export file not found)")
    return FhirResponse(200, path.read_bytes(), {"Content-Type": NDJSON})


for _levels, _types in ((("system",), ()), (("type",), ("Patient",)), (("instance",), ("Group",))):
    operations.register(
        Operation("export", kickoff, levels=_levels, types=_types, methods=("GET", "POST"),
                  definition="http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export")
    )
operations.register(Operation("export-poll-status", poll_status, levels=("system",), methods=("GET", "DELETE")))
operations.register(Operation("export-file", export_file, levels=("system",), methods=("GET",)))
