"""Disease control: reportable-disease cases of the region for cdc-officers.

A case is a Condition in a care tenant (hospital, clinic) whose ICD-10 code falls under a
notifiable infectious disease (`data/reportable-diseases.csv`, with its legal source). The
officer (role cdc-officer in a tenant of kind cdc) sees every case of the region, with the
Condition and its Patient de-identified (`yiyun.identity.protection.deidentify`: names,
contacts, identifiers and free text removed or pseudonymised, dates shifted per patient,
a salt per cdc tenant) — 《传染病防治法》第十二条 and 《个人信息保护法》第十三条(五): personal
information for a public-health emergency, no more than needed. A case the officer puts
under investigation (with a reason; 《传染病防治法》第十二条, 流行病学调查) is shown identified
until the investigation is closed. Every case shown is audited in the chain of the tenant
holding it, with purpose PUBHLTH.

Cases are addressed by an opaque case key (the encrypted "tenant/Condition id"), so the
de-identified list does not carry the hospital's record ids.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.core.errors import BadRequest, Forbidden, NotFound
from yiyun.fhir.model import RequestContext, now_us
from yiyun.fhir.repository import FhirRepository
from yiyun.identity.audit import AuditEntry, append, append_committed
from yiyun.identity.sharing_tables import investigation

CASE_PURPOSE = "cdc-case"
ICD10_SYSTEMS = ("http://www.nhc.gov.cn/icd10/clinical-v2", "http://hl7.org/fhir/sid/icd-10")
CHUNK = 100
MAX_CASES = 500


@dataclass(frozen=True)
class ReportableDisease:
    klass: str  # A | B | C (甲类, 乙类, 丙类)
    name_zh: str
    name_en: str
    prefixes: tuple[str, ...]


@lru_cache(maxsize=1)
def reportable_diseases() -> tuple[ReportableDisease, ...]:
    text = resources.files("yiyun.identity").joinpath("data/reportable-diseases.csv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return tuple(
        ReportableDisease(r["class"], r["name_zh"], r["name_en"], tuple(r["icd10_prefixes"].split()))
        for r in csv.DictReader(lines)
    )


def _norm(code: str) -> str:
    return code.replace(".", "").strip().upper()


def disease_of(code: str | None) -> ReportableDisease | None:
    if not code:
        return None
    c = _norm(code)
    for d in reportable_diseases():
        if any(c.startswith(_norm(p)) for p in d.prefixes):
            return d
    return None


@lru_cache(maxsize=1)
def reportable_codes() -> tuple[str, ...]:
    """Every code of the shipped ICD-10 clinical list under a reportable disease, and the
    prefixes themselves (WHO ICD-10 codes such as B18.1)."""
    path = resources.files("yiyun.core").joinpath("data/codes/icd10-clinical-v2/icd10_clinical_v2.csv")
    codes = set()
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code = (row.get("code") or "").strip()
            if code and disease_of(code):
                codes.add(code)
    for d in reportable_diseases():
        codes.update(d.prefixes)
    return tuple(sorted(codes))


# ------------------------------------------------------------------ case keys
def case_key(tenant: str, condition_id: str) -> str:
    from yiyun.identity.protection import encrypt

    return encrypt(f"{tenant}/{condition_id}", CASE_PURPOSE)


def open_case_key(key: str) -> tuple[str, str]:
    from yiyun.identity.protection import DecryptionError, decrypt

    try:
        tenant, _, cid = decrypt(key, CASE_PURPOSE).partition("/")
    except (DecryptionError, ValueError, TypeError) as exc:
        raise NotFound("未找到病例 (case not found)") from exc
    return tenant, cid


def _salt(cdc_tenant: str) -> bytes:
    """A secret salt per recipient (GB/T 37964-2019 §5.3: recipients cannot link their sets)."""
    from yiyun.identity.protection import field_keyring

    ring = field_keyring()
    return ring.derive(ring.current_id, b"yiyun/cdc-deid/" + cdc_tenant.encode())


# ------------------------------------------------------------------ access
async def require_cdc_officer(engine: AsyncEngine, ctx: RequestContext) -> None:
    from yiyun.identity.accounts import get_tenant

    if "cdc-officer" not in ctx.roles or getattr(ctx, "patient", None):
        raise Forbidden("仅疾控人员可以查看传染病病例 (for disease-control officers only)")
    async with unit_of_work(engine, write=False) as conn:
        try:
            kind = (await get_tenant(conn, ctx.tenant)).kind
        except NotFound:
            kind = None
    if kind != "cdc":
        raise Forbidden("仅疾控机构的人员可以查看传染病病例 (for officers of a disease-control tenant only)")


async def _under_investigation(conn) -> dict[tuple[str, str], dict]:
    rows = await conn.execute(select(investigation).where(investigation.c.closed_ts.is_(None)))
    return {(r.source_tenant, r.condition_id): {"reason": r.reason, "opened_by": r.opened_by, "opened_ts": r.opened_ts}
            for r in rows}


async def cases(engine: AsyncEngine, ctx: RequestContext, *, since: str | None = None, code: str | None = None,
                limit: int = MAX_CASES) -> list[dict]:
    """Reportable cases of the region, newest recorded first (de-identified unless investigated)."""
    from yiyun.identity.accounts import list_tenants
    from yiyun.identity.protection import deidentify

    await require_cdc_officer(engine, ctx)
    wanted = reportable_codes()
    if code:
        if not disease_of(code):
            raise BadRequest(f"{code} 不是法定传染病的 ICD-10 编码 (not a reportable disease code)")
        wanted = tuple(c for c in wanted if _norm(c).startswith(_norm(code))) or (code,)
    base = [("_sort", "-recorded-date"), ("_count", str(min(limit, MAX_CASES)))]
    if since:
        base.append(("recorded-date", f"ge{since}"))
    out: list[dict] = []
    audit: dict[str, list[AuditEntry]] = {}
    salt = _salt(ctx.tenant)
    async with unit_of_work(engine, write=False) as conn:
        tenants = [t for t in await list_tenants(conn) if t.active and t.kind != "cdc"]
        flagged = await _under_investigation(conn)
        for t in tenants:
            repo = FhirRepository(conn, RequestContext(tenant=t.slug, subject=ctx.subject))
            for start in range(0, len(wanted), CHUNK):
                found = await repo.search("Condition", [("code", ",".join(wanted[start:start + CHUNK])), *base])
                for cond in found.matches:
                    c = cond.resource
                    if (c.get("verificationStatus") or {}).get("coding", [{}])[0].get("code") in ("refuted", "entered-in-error"):
                        continue
                    coding = next((x for x in (c.get("code") or {}).get("coding") or [] if disease_of(x.get("code"))), None)
                    if coding is None:
                        continue
                    disease = disease_of(coding["code"])
                    pid = ((c.get("subject") or {}).get("reference") or "").removeprefix("Patient/")
                    patient = None
                    if pid:
                        try:
                            patient = (await repo.read("Patient", pid)).resource
                        except NotFound:  # a case whose patient record was removed
                            patient = None
                    flag = flagged.get((t.slug, cond.res_id))
                    if flag is None:
                        shown = deidentify([r for r in (patient, c) if r], salt=salt)
                        shown_patient = shown[0] if patient else None
                        shown_condition = shown[-1]
                    else:
                        shown_patient, shown_condition = patient, c
                    out.append({
                        "case": case_key(t.slug, cond.res_id),
                        "tenant": t.slug, "tenant_name": t.name,
                        "class": disease.klass, "disease": disease.name_zh, "disease_en": disease.name_en,
                        "code": coding.get("code"), "recorded": c.get("recordedDate"),
                        "identified": flag is not None, "investigation": flag,
                        "condition": shown_condition, "patient": shown_patient,
                    })
                    audit.setdefault(t.slug, []).append(AuditEntry(
                        tenant=t.slug, actor=ctx.subject, role=",".join(ctx.roles) or None, action="read",
                        resource_type="Condition", resource_id=cond.res_id,
                        patient=f"Patient/{pid}" if pid else None, purpose="PUBHLTH",
                        client_address=ctx.client_address, outcome="ok",
                        detail={"via": "cdc-cases", "cdc_tenant": ctx.tenant, "identified": flag is not None},
                    ))
    out.sort(key=lambda x: x.get("recorded") or "", reverse=True)
    for entries in audit.values():
        await append_committed(engine, entries)
    return out[:limit]


async def set_investigation(engine: AsyncEngine, ctx: RequestContext, key: str, reason: object, *, open_: bool) -> dict:
    """Open (with a reason) or close the investigation of a case; audited in the case's tenant."""
    await require_cdc_officer(engine, ctx)
    tenant, cid = open_case_key(key)
    text = reason.strip() if isinstance(reason, str) else ""
    if open_ and len(text) < 10:
        raise BadRequest("请说明流行病学调查的理由（至少 10 个字）(a reason of at least 10 characters is required)")
    now = now_us()
    async with unit_of_work(engine, write=True) as conn:
        repo = FhirRepository(conn, RequestContext(tenant=tenant))
        cond = await repo.read("Condition", cid)
        if disease_of(next((x.get("code") for x in (cond.resource.get("code") or {}).get("coding") or []
                            if disease_of(x.get("code"))), None)) is None:
            raise NotFound("未找到病例 (case not found)")
        existing = (await conn.execute(select(investigation).where(
            investigation.c.source_tenant == tenant, investigation.c.condition_id == cid))).first()
        if open_:
            values = dict(cdc_tenant=ctx.tenant, opened_by=ctx.subject, reason=text[:1000], opened_ts=now,
                          closed_ts=None, closed_by=None)
            if existing is None:
                await conn.execute(investigation.insert().values(source_tenant=tenant, condition_id=cid, **values))
            else:
                await conn.execute(update(investigation).where(
                    investigation.c.source_tenant == tenant, investigation.c.condition_id == cid).values(**values))
        elif existing is not None and existing.closed_ts is None:
            await conn.execute(update(investigation).where(
                investigation.c.source_tenant == tenant, investigation.c.condition_id == cid
            ).values(closed_ts=now, closed_by=ctx.subject))
        pid = ((cond.resource.get("subject") or {}).get("reference") or "")
        await append(conn, [AuditEntry(
            tenant=tenant, actor=ctx.subject, role=",".join(ctx.roles) or None,
            action="investigation-open" if open_ else "investigation-close",
            resource_type="Condition", resource_id=cid, patient=pid or None, purpose="PUBHLTH",
            client_address=ctx.client_address, outcome="ok",
            detail={"reason": text[:1000], "cdc_tenant": ctx.tenant},
        )])
    return {"case": key, "under_investigation": open_}
