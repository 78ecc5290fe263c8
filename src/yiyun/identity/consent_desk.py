"""Consents signed on paper at the desk, recorded by registration staff or a privacy officer
(docs/sharing.md "Paper consent at the desk").

The patient signs a grant or a withdrawal on paper; staff of the hospital (role `admin`, which
covers registration, or `privacy-officer`) scan it and record it here. The consent is then the
same FHIR Consent as one given online, in every hospital holding the patient, with the scan as
`Consent.sourceAttachment` (the withdrawal form on the withdrawn Consent) and the staff member
named; the patient sees it on /me/consent and may withdraw it there themselves.
《个人信息保护法》第十四条 (consent given explicitly; a signed form is the evidence),
第二十九条 (separate consent for sensitive information such as health records).

- `POST /api/consent/desk` (multipart: `patient`, `kind`, `action` grant|revoke, `form` file);
- `GET /api/consent/forms/{tenant}/{name}`: the scan, for that tenant's desk staff and for the
  patient whose consent names it;
- page `/consent/desk` (staff).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, Conflict, Forbidden, NotFound, YiyunError
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.identity import consent as consents
from yiyun.identity import consent_forms
from yiyun.identity.audit import AuditEntry, append_committed
from yiyun.identity.auth import AuthContext, require_subject
from yiyun.identity.consent_guardians import display_name

DESK_ROLES = frozenset({"admin", "privacy-officer"})
ACTIONS = ("grant", "revoke")
FORM_TITLE = {"grant": "纸质知情同意书（窗口登记）", "revoke": "纸质撤回授权书（窗口登记）"}


def check_desk(ctx: AuthContext) -> None:
    if not DESK_ROLES.intersection(ctx.roles) or not any(s.startswith("user/") for s in ctx.scopes):
        raise Forbidden("仅挂号登记人员或隐私保护负责人可以登记纸质授权 (registration staff or privacy officer only)")


async def desk_patient(ctx: AuthContext, patient_id: str) -> dict:
    """The Patient the form is for, in the staff member's tenant (404 otherwise). Read without
    the access policy, which gives privacy officers no Patient: the desk must see the name to
    match it against the signed form. The read is audited here."""
    check_desk(ctx)
    if not patient_id or len(patient_id) > 64:
        raise BadRequest("请填写患者编号 (patient id required)")
    async with unit_of_work(get_engine(), write=False) as conn:
        stored = await FhirRepository(conn, RequestContext(tenant=ctx.tenant)).read("Patient", patient_id)
    await append_committed(get_engine(), [AuditEntry(
        tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="read", resource_type="Patient",
        resource_id=patient_id, patient=f"Patient/{patient_id}", purpose="PATADMIN",
        client_address=ctx.client_address, outcome="ok", detail={"via": "consent-desk"})])
    return stored.resource


@dataclass(frozen=True)
class DeskResult:
    patient: str
    kind: str
    action: str
    written: list[dict]
    form: dict

    def as_dict(self) -> dict:
        return {"patient": f"Patient/{self.patient}", "kind": self.kind, "action": self.action,
                "recorded": self.written, "form": self.form}


async def record(ctx: AuthContext, patient_id: str, kind: str, action: str, data: bytes,
                 content_type: str | None) -> DeskResult:
    """Check everything, store the scan, write the consent; the scan is removed again when
    the consent cannot be written, so no form is kept without its record."""
    check_desk(ctx)
    consents.check_kind(kind)
    if action not in ACTIONS:
        raise BadRequest("操作只能是 grant（同意）或 revoke（撤回） (action must be grant or revoke)")
    consent_forms.check_form(data, content_type)
    await desk_patient(ctx, patient_id)
    engine = get_engine()
    if action == "revoke" and not (await consents.status(engine, ctx.tenant, patient_id))[kind]["active"]:
        raise Conflict("该患者没有可撤回的此类授权 (there is no active consent of this kind to withdraw)")
    form = await consent_forms.store_form(ctx.tenant, data, content_type, title=FORM_TITLE[action])
    given_by = consents.GivenBy(desk=consents.DeskRecord(ctx.tenant, ctx.subject, ctx.display_name or ctx.subject,
                                                         form.attachment))
    try:
        change = consents.grant if action == "grant" else consents.revoke
        written = await change(engine, ctx, patient_id, kind, given_by)
    except BaseException:
        # the patient's own hospital is written first: if its Consent does not name the
        # form, nothing does, and the file goes; otherwise (or if that cannot be told now,
        # the database being away) it stays with its record
        with contextlib.suppress(Exception):
            if not await _form_named(ctx.tenant, patient_id, form.attachment["url"]):
                await consent_forms.discard(form)
        raise
    return DeskResult(patient_id, kind, action, written, form.attachment)


async def _form_named(tenant: str, patient_id: str, url: str) -> bool:
    async with unit_of_work(get_engine(), write=False) as conn:
        found = await FhirRepository(conn, RequestContext(tenant=tenant)).search(
            "Consent", [("patient", f"Patient/{patient_id}"), ("_count", "200")])
    return any(consent_forms.names_form(s.resource, url) for s in found.matches)


async def upload(request: Request) -> tuple[dict, bytes, str | None]:
    """The multipart form's text fields, and the file's bytes and declared type (read at most
    one byte past the limit)."""
    try:
        form = await request.form()
    except Exception as exc:  # not multipart, or a broken body
        raise BadRequest("请以 multipart/form-data 提交 (send multipart/form-data)") from exc
    fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    file = form.get("form")
    if not isinstance(file, UploadFile):
        return fields, b"", None
    data = await file.read(consent_forms.MAX_BYTES + 1)
    return fields, data, file.content_type


api = APIRouter(prefix="/api/consent", tags=["sharing"])


@api.post("/desk", status_code=201)
async def post_desk_consent(request: Request, ctx: AuthContext = Depends(require_subject)) -> dict:
    check_desk(ctx)
    fields, data, ctype = await upload(request)
    result = await record(ctx, fields.get("patient", "").strip(), fields.get("kind", ""),
                          fields.get("action", "grant"), data, ctype)
    return {**result.as_dict(), "consents": await consents.status(get_engine(), ctx.tenant, result.patient)}


@api.get("/forms/{tenant}/{name}")
async def get_form(tenant: str, name: str, ctx: AuthContext = Depends(require_subject)) -> Response:
    key = consent_forms.key_of(tenant, name)  # 404 for a malformed name
    if not await may_see_form(ctx, tenant, consent_forms.URL_PREFIX + f"{tenant}/{name}"):
        raise NotFound("文件不存在 (form not found)")
    data, ctype = await consent_forms.read_form(tenant, name)
    await append_committed(get_engine(), [AuditEntry(
        tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="read",
        resource_type="Binary", resource_id=key, patient=f"Patient/{ctx.patient}" if ctx.patient else None,
        purpose="PATADMIN", client_address=ctx.client_address, outcome="ok", detail={"consent_form": True})])
    return Response(data, media_type=ctype, headers={
        "Content-Disposition": f'inline; filename="{name}"', "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store"})


async def may_see_form(ctx: AuthContext, tenant: str, url: str) -> bool:
    if DESK_ROLES.intersection(ctx.roles) and ctx.tenant == tenant:
        return True
    if not ctx.patient:
        return False
    async with unit_of_work(get_engine(), write=False) as conn:
        found = await FhirRepository(conn, ctx).search("Consent", [("patient", f"Patient/{ctx.patient}"),
                                                                  ("_count", "100")])
    return any(consent_forms.names_form(s.resource, url) for s in found.matches)


# ------------------------------------------------------------------ page
pages = APIRouter(tags=["sharing pages"])


async def _desk_page(request: Request, ctx: AuthContext, patient_id: str, **extra):
    from yiyun.identity.web import render

    allowed = bool(DESK_ROLES.intersection(ctx.roles))
    patient, state, error = None, None, extra.pop("error", None)
    if allowed and patient_id:
        try:
            patient = await desk_patient(ctx, patient_id)
            state = await consents.status(get_engine(), ctx.tenant, patient_id)
        except YiyunError as err:
            error = error or err.message
    return render(request, "identity/consent_desk.html", allowed=allowed, patient_id=patient_id,
                  name=display_name(patient) if patient else None, consents=state, error=error,
                  max_mb=consent_forms.MAX_BYTES // (1024 * 1024), **extra)


@pages.get("/consent/desk")
async def desk_page(request: Request):
    from yiyun.identity.sessions import require_page_user

    ctx = await require_page_user(request)
    response = await _desk_page(request, ctx, request.query_params.get("patient", "").strip()[:64],
                                done=request.query_params.get("done"))
    if not DESK_ROLES.intersection(ctx.roles):
        response.status_code = 403
    return response


@pages.post("/consent/desk")
async def desk_form(request: Request):
    from fastapi.responses import RedirectResponse

    from yiyun.identity import sessions

    ctx = await sessions.require_page_user(request)
    fields, data, ctype = await upload(request)
    user = await sessions.current_user(request)
    if user is None or not sessions.csrf_matches(user.session.csrf_token, fields.get("csrf_token")):
        raise Forbidden(sessions.CSRF_MESSAGE)
    patient_id = fields.get("patient", "").strip()[:64]
    try:
        result = await record(ctx, patient_id, fields.get("kind", ""), fields.get("action", "grant"), data, ctype)
    except YiyunError as err:
        response = await _desk_page(request, ctx, patient_id, error=err.message)
        response.status_code = err.status
        return response
    return RedirectResponse(f"/consent/desk?patient={result.patient}&done={result.action}", status_code=303)


def install(app) -> None:
    app.include_router(api)
    app.include_router(pages)
