"""Care relationships, patient Consent for regional sharing and research, break-glass,
disease-control cases: the routes (docs/sharing.md).

JSON API (bearer token or the browser session; cookie writes need the CSRF header):

- `GET /api/sharing/patients/{id}/regional-records?types=Condition,Observation` — a doctor or
  nurse of the patient's tenant, with a care relationship (or break-glass), reads the same
  person's records in the region's other tenants that hold an active regional-sharing
  Consent of that person; each record read is audited in the tenant that holds it.
- `GET|POST /api/consent`, `DELETE /api/consent/{id}` — the patient's own consents, and with
  `ward` (body field or query parameter) a guardian's for a ward (`consent_guardians`).
- `POST /api/consent/desk`, `GET /api/consent/forms/…` — paper consent recorded at the desk
  (`consent_desk`).
- `POST|GET /api/break-glass`, `DELETE /api/break-glass/{grant}` — declare, list (privacy
  officers), end.
- `GET /api/cdc/cases?since=&code=`, `POST|DELETE /api/cdc/cases/{case}/investigation`.

Pages: `/me/consent` (patients and guardians, phone layout), `/consent/desk` (registration
staff, privacy officers), `/break-glass` (doctors and nurses).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, Forbidden, NotFound
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.identity import breakglass, cdc, consent_desk, consent_guardians
from yiyun.identity import consent as consents
from yiyun.identity.audit import AuditEntry, append_committed
from yiyun.identity.auth import AuthContext, require_subject
from yiyun.identity.policy import CARE_ROLES

api = APIRouter(prefix="/api", tags=["sharing"])

# Types a regional read may return: the clinical summary of a visit elsewhere.
REGIONAL_TYPES = (
    "Condition", "Observation", "MedicationRequest", "AllergyIntolerance", "Encounter", "DiagnosticReport",
    "Immunization", "Procedure", "MedicationDispense", "ImagingStudy", "CarePlan",
)
DEFAULT_REGIONAL_TYPES = ("Condition", "Observation", "MedicationRequest", "AllergyIntolerance", "Encounter")
MAX_PER_TYPE = 200


def _types(value: str | None) -> list[str]:
    if not value:
        return list(DEFAULT_REGIONAL_TYPES)
    types = [t.strip() for t in value.split(",") if t.strip()]
    bad = [t for t in types if t not in REGIONAL_TYPES]
    if bad:
        raise BadRequest(f"区域共享不提供这些类型: {', '.join(bad)}；可选 {', '.join(REGIONAL_TYPES)}")
    return types


def _own_patient(ctx: AuthContext) -> str:
    if not ctx.patient or "patient" not in ctx.roles and not any(s.startswith("patient/") for s in ctx.scopes):
        raise Forbidden("仅患者本人可以管理自己的授权 (patients manage their own consent)")
    return ctx.patient


# ------------------------------------------------------------------ regional records
async def regional_records(ctx: AuthContext, patient_id: str, types: list[str]) -> dict:
    engine = get_engine()
    if not (CARE_ROLES & set(ctx.roles)) or not any(s.startswith("user/") for s in ctx.scopes):
        raise Forbidden("仅医生和护士可以调阅区域共享病历 (for doctors and nurses)")
    # the caller must reach the patient in their own tenant: the policy decides (404 otherwise, audited)
    async with unit_of_work(engine, write=False) as conn:
        await FhirRepository(conn, ctx).read("Patient", patient_id)
    sources = []
    for rec in await consents.same_person(engine, ctx.tenant, patient_id, include_own=False):
        async with unit_of_work(engine, write=False) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=rec.tenant, subject=ctx.subject))
            permit = await consents.active_consents(repo, rec.patient_id, consents.REGIONAL)
        if not permit:
            # without consent the other tenant's records stay invisible, and so does their
            # existence; the refusal is written to that tenant's own audit chain
            await append_committed(engine, [AuditEntry(
                tenant=rec.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="search",
                resource_type="Patient", resource_id=rec.patient_id, patient=f"Patient/{rec.patient_id}",
                purpose="TREAT", client_address=ctx.client_address, outcome="denied",
                detail={"via": "regional-sharing", "requester_tenant": ctx.tenant, "reason": "no regional-sharing consent"},
            )])
            continue
        async with unit_of_work(engine, write=False) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=rec.tenant, subject=ctx.subject))
            records: dict[str, list[dict]] = {}
            for t in types:
                found = await repo.search(t, [("patient", f"Patient/{rec.patient_id}"), ("_count", str(MAX_PER_TYPE))])
                if found.matches:
                    records[t] = [m.resource for m in found.matches]
        entries = [
            AuditEntry(
                tenant=rec.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="read",
                resource_type=r["resourceType"], resource_id=r.get("id"), patient=f"Patient/{rec.patient_id}",
                purpose="TREAT", client_address=ctx.client_address, outcome="ok",
                detail={"via": "regional-sharing", "requester_tenant": ctx.tenant,
                        "consent": f"Consent/{permit[0].res_id}"},
            )
            for rs in records.values() for r in rs
        ]
        if entries:
            await append_committed(engine, entries)
        sources.append({"tenant": rec.tenant, "tenant_name": rec.tenant_name, "patient": f"Patient/{rec.patient_id}",
                        "consent": f"Consent/{permit[0].res_id}", "records": records})
    await append_committed(engine, [AuditEntry(
        tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="search",
        resource_type="Patient", resource_id=patient_id, patient=f"Patient/{patient_id}", purpose="TREAT",
        client_address=ctx.client_address, outcome="ok",
        detail={"via": "regional-sharing", "types": types, "sources": [s["tenant"] for s in sources]},
    )])
    return {"patient": f"Patient/{patient_id}", "types": types, "sources": sources}


@api.get("/sharing/patients/{patient_id}/regional-records")
async def get_regional_records(patient_id: str, types: str | None = Query(None),
                               ctx: AuthContext = Depends(require_subject)) -> JSONResponse:
    return JSONResponse(await regional_records(ctx, patient_id, _types(types)))


# ------------------------------------------------------------------ consent
async def _acting_for(ctx: AuthContext, ward: Any, kind: str | None = None) -> tuple[str, consents.GivenBy]:
    """Whose consent the caller manages: their own, or a ward's as guardian (403 unless the
    guardianship holds now; 409 when the adult ward's own choice about `kind` stands)."""
    patient = _own_patient(ctx)
    if ward is None or ward == "":
        return patient, consents.SELF
    if not isinstance(ward, str) or not 0 < len(ward.strip()) <= 64:
        raise BadRequest("ward 应为被监护人的患者编号 (ward must be the ward's Patient id)")
    ward = ward.strip()
    if ward == patient:
        return patient, consents.SELF
    guardian = await consent_guardians.guardian_for(get_engine(), ctx.tenant, patient, ward)
    if kind is not None:
        await consent_guardians.check_ward_has_not_chosen(get_engine(), ctx.tenant, ward, kind)
    return ward, consents.GivenBy(guardian=guardian)


async def _consent_state(ctx: AuthContext) -> dict:
    engine = get_engine()
    patient = _own_patient(ctx)
    wards = await consent_guardians.wards_of(engine, ctx.tenant, patient)
    return {"patient": f"Patient/{patient}", "consents": await consents.status(engine, ctx.tenant, patient),
            "wards": [{"patient": f"Patient/{w['id']}", "name": w["name"], "birthDate": w["birthDate"],
                       "consents": await consents.status(engine, ctx.tenant, w["id"])} for w in wards]}


@api.get("/consent")
async def get_consent(ctx: AuthContext = Depends(require_subject)) -> dict:
    return await _consent_state(ctx)


@api.post("/consent", status_code=201)
async def post_consent(body: dict[str, Any] = Body(...), ctx: AuthContext = Depends(require_subject)) -> dict:
    kind = consents.check_kind(str(body.get("kind", "")))
    patient, given_by = await _acting_for(ctx, body.get("ward"), kind)
    written = await consents.grant(get_engine(), ctx, patient, kind, given_by)
    return {"kind": kind, "patient": f"Patient/{patient}", "granted": written,
            "consents": await consents.status(get_engine(), ctx.tenant, patient)}


@api.delete("/consent/{consent_id}")
async def delete_consent(consent_id: str, ward: str | None = Query(None),
                         ctx: AuthContext = Depends(require_subject)) -> dict:
    _own_patient(ctx)
    engine = get_engine()
    async with unit_of_work(engine, write=False) as conn:
        stored = await FhirRepository(conn, ctx).read("Consent", consent_id)  # 404 unless in the caller's compartment
    kind = consents.kind_of(stored.resource)
    if kind is None:
        raise NotFound(f"未找到授权 Consent/{consent_id} (consent not found)")
    patient, given_by = await _acting_for(ctx, ward, kind)
    if (stored.resource.get("patient") or {}).get("reference") != f"Patient/{patient}":
        raise NotFound(f"未找到授权 Consent/{consent_id} (consent not found)")
    revoked = await consents.revoke(engine, ctx, patient, kind, given_by)
    return {"kind": kind, "patient": f"Patient/{patient}", "revoked": revoked,
            "consents": await consents.status(engine, ctx.tenant, patient)}


# ------------------------------------------------------------------ break-glass
@api.post("/break-glass", status_code=201)
async def post_break_glass(body: dict[str, Any] = Body(...), ctx: AuthContext = Depends(require_subject)) -> dict:
    async with unit_of_work(get_engine(), write=True) as conn:
        grant = await breakglass.declare(conn, ctx, str(body.get("patient") or ""), body.get("reason"))
    breakglass.committed(ctx.tenant)
    return grant.as_dict()


@api.get("/break-glass")
async def list_break_glass(all: bool = Query(False), ctx: AuthContext = Depends(require_subject)) -> dict:
    if "privacy-officer" not in ctx.roles:
        raise Forbidden("仅隐私保护负责人可以查看紧急调阅记录 (for privacy officers)")
    async with unit_of_work(get_engine(), write=False) as conn:
        grants = await breakglass.active_grants(conn, ctx.tenant, include_ended=all)
    return {"grants": [g.as_dict() for g in grants]}


@api.delete("/break-glass/{grant_id}")
async def end_break_glass(grant_id: str, ctx: AuthContext = Depends(require_subject)) -> dict:
    async with unit_of_work(get_engine(), write=True) as conn:
        return (await breakglass.end(conn, ctx, grant_id)).as_dict()


# ------------------------------------------------------------------ disease control
@api.get("/cdc/cases")
async def cdc_cases(since: str | None = Query(None), code: str | None = Query(None),
                    limit: int = Query(cdc.MAX_CASES, ge=1, le=cdc.MAX_CASES),
                    ctx: AuthContext = Depends(require_subject)) -> dict:
    found = await cdc.cases(get_engine(), ctx, since=since, code=code, limit=limit)
    return {"count": len(found), "cases": found}


@api.post("/cdc/cases/{case}/investigation")
async def open_investigation(case: str, body: dict[str, Any] = Body(...),
                             ctx: AuthContext = Depends(require_subject)) -> dict:
    return await cdc.set_investigation(get_engine(), ctx, case, body.get("reason"), open_=True)


@api.delete("/cdc/cases/{case}/investigation")
async def close_investigation(case: str, ctx: AuthContext = Depends(require_subject)) -> dict:
    return await cdc.set_investigation(get_engine(), ctx, case, None, open_=False)


# ------------------------------------------------------------------ pages
pages = APIRouter(tags=["sharing pages"])


async def _page_user(request: Request, *, patient: bool) -> AuthContext:
    from yiyun.identity import sessions

    return await (sessions.require_patient_page_user if patient else sessions.require_page_user)(request)


async def _check_form_csrf(request: Request, form) -> None:
    from yiyun.identity import sessions

    user = await sessions.current_user(request)
    if user is None or not sessions.csrf_matches(user.session.csrf_token, form.get("csrf_token")):
        raise Forbidden(sessions.CSRF_MESSAGE)


@pages.get("/me/consent")
async def consent_page(request: Request):
    from yiyun.identity.web import render

    ctx = await _page_user(request, patient=True)
    notice = request.query_params.get("done")
    if not ctx.patient:
        return render(request, "identity/consent.html", consents=None, wards=[], notice=notice)
    state = await _consent_state(ctx)
    return render(request, "identity/consent.html", consents=state["consents"], wards=state["wards"], notice=notice)


@pages.post("/me/consent")
async def consent_form(request: Request):
    from yiyun.core.errors import YiyunError

    ctx = await _page_user(request, patient=True)
    form = await request.form()
    await _check_form_csrf(request, form)
    kind = consents.check_kind(str(form.get("kind", "")))
    try:
        patient, given_by = await _acting_for(ctx, form.get("ward") or None, kind)
    except YiyunError as err:
        if err.status != 409:
            raise
        return RedirectResponse("/me/consent?done=ward-chose", status_code=303)
    if form.get("action") == "revoke":
        await consents.revoke(get_engine(), ctx, patient, kind, given_by)
        done = "revoked"
    else:
        await consents.grant(get_engine(), ctx, patient, kind, given_by)
        done = "granted"
    return RedirectResponse(f"/me/consent?done={done}", status_code=303)


@pages.get("/break-glass")
async def break_glass_page(request: Request):
    from yiyun.identity.web import render

    ctx = await _page_user(request, patient=False)
    return render(request, "identity/break_glass.html", grant=None, error=None,
                  patient=request.query_params.get("patient", ""), allowed=bool(CARE_ROLES & set(ctx.roles)),
                  hours=breakglass.LIFETIME_HOURS, min_reason=breakglass.MIN_REASON)


@pages.post("/break-glass")
async def break_glass_form(request: Request):
    from yiyun.core.errors import YiyunError
    from yiyun.identity.web import render

    ctx = await _page_user(request, patient=False)
    form = await request.form()
    await _check_form_csrf(request, form)
    patient = str(form.get("patient", "")).strip()
    try:
        async with unit_of_work(get_engine(), write=True) as conn:
            grant = await breakglass.declare(conn, ctx, patient, form.get("reason"))
        breakglass.committed(ctx.tenant)
        error = None
    except YiyunError as err:
        grant, error = None, err.message
    response = render(request, "identity/break_glass.html", grant=grant, error=error, patient=patient,
                      allowed=bool(CARE_ROLES & set(ctx.roles)), hours=breakglass.LIFETIME_HOURS,
                      min_reason=breakglass.MIN_REASON, reason=str(form.get("reason", "")))
    if error:
        response.status_code = 400 if "理由" in error else 404 if "未找到" in error else 403
    return response


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    app.include_router(api)
    app.include_router(pages)
    consent_desk.install(app)
