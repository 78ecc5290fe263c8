"""The authorisation endpoint: standalone launch of SMART apps with the user's consent.

`GET /oauth2/authorize` checks the request (RFC 6749 §4.1.1, SMART App Launch v2
https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code), sends a
browser nobody is signed in on to `/signin?next=<this URL>`, and shows the consent page:
the app's name and, in plain Chinese, what it asks to do. `POST /oauth2/authorize` takes
the decision (CSRF-protected by the session's token) and redirects back to the app with a
code (single use, 60 s) or `error=access_denied`, always with the app's `state`.

Until the client and its redirect URI are known to be right, errors are shown here and
never sent anywhere (RFC 6749 §4.1.2.1: do not redirect to an unverified URI); after that
they go back to the app as `error`, `error_description` and `state`.

What a user may grant: only scopes the client registered (more is refused, `invalid_scope`),
and of those only what the user's role allows: a patient `patient/` scopes for their own
record (the token's `patient` is their Patient id), staff `user/` scopes. PKCE with S256
is required of every client (SMART v2: `code_challenge_method=plain` is not supported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import Forbidden
from yiyun.core.settings import get_settings
from yiyun.core.templating import render as render_page
from yiyun.core.templating import request_locale
from yiyun.identity import audit
from yiyun.identity.auth import AuthContext
from yiyun.identity.oauth import grants
from yiyun.identity.oauth.clients import Client, get_client
from yiyun.identity.oauth.errors import OAuthError
from yiyun.identity.oauth.scopeset import parsed, uncovered
from yiyun.identity.scopes import PERMISSIONS, ResourceScope

router = APIRouter(include_in_schema=False)
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")  # base64url of a SHA-256 digest, RFC 7636 §4.2
PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
          "code_challenge_method", "nonce")


class PageError(Exception):
    """A request too broken to send back to the app: shown on a page of our own."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(frozen=True)
class AuthRequest:
    client: Client
    redirect_uri: str
    state: str | None
    scope: str  # what the user is asked to grant
    code_challenge: str
    nonce: str | None
    params: dict[str, str]


def _fhir_bases(request: Request) -> set[str]:
    return {get_settings().base_url.rstrip("/") + "/fhir/R4", str(request.base_url).rstrip("/") + "/fhir/R4"}


async def check_request(request: Request, params: dict[str, str]) -> AuthRequest:
    """Raise PageError (before the redirect URI is trusted) or OAuthError (after)."""
    for name in PARAMS:
        if len(params.get(name, "")) > 2000:
            raise PageError(f"参数 {name} 过长 (parameter {name} too long)")
        if "\x00" in params.get(name, ""):
            raise PageError(f"参数 {name} 含非法字符 (parameter {name} contains NUL)")
    async with unit_of_work(get_engine(), write=False) as conn:
        client = await get_client(conn, params.get("client_id", ""))
    if client is None or not client.active:
        raise PageError("未知或已停用的应用 (unknown or disabled client_id)")
    if client.kind == "backend":
        raise PageError("后台服务不能请求用户授权 (backend services cannot ask users for authorisation)")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise PageError("回调地址与登记的不一致 (redirect_uri does not exactly match a registered one)")
    state = params.get("state") or None
    if params.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "只支持 response_type=code (only the code flow is supported)")
    if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(params.get("code_challenge", "")):
        raise OAuthError("invalid_request", "须使用 PKCE：code_challenge_method=S256 与 code_challenge "
                                            "(PKCE with code_challenge_method=S256 is required)")
    if params.get("aud", "").rstrip("/") not in _fhir_bases(request):
        raise OAuthError("invalid_request", "aud 须为本服务的 FHIR 地址 (aud must be this server's FHIR base URL)")
    scope = params.get("scope", "").strip()
    if not scope:
        raise OAuthError("invalid_scope", "缺少 scope (scope missing)")
    beyond = uncovered(scope, client.scopes)
    if beyond:
        raise OAuthError("invalid_scope", f"应用请求了未登记的范围 {' '.join(beyond)[:200]} "
                                          "(the app asked for scopes beyond its registration)")
    return AuthRequest(client, redirect_uri, state, " ".join(str(s) for s in parsed(scope)),
                       params["code_challenge"], params.get("nonce") or None, {k: params[k] for k in PARAMS if k in params})


def for_user(req: AuthRequest, ctx: AuthContext) -> tuple[str, str | None]:
    """The scopes this user may grant, and the patient the token is limited to.

    A patient grants `patient/` scopes over their own record; staff grant `user/` scopes;
    nobody grants `system/` here."""
    is_patient = "patient" in ctx.roles
    is_staff = any(r != "patient" for r in ctx.roles)
    kept: list[str] = []
    for s in parsed(req.scope):
        if isinstance(s, ResourceScope):
            if (s.context == "patient" and is_patient) or (s.context == "user" and is_staff):
                kept.append(str(s))
        elif s != "launch/patient" or is_patient:
            kept.append(s)
    if not any("/" in s and s.split("/")[0] in ("patient", "user") and "." in s for s in kept):
        raise OAuthError("invalid_scope", "您的身份不能授予此应用请求的任何数据权限 "
                                          "(none of the requested scopes fit your role)")
    patient = None
    if any(s.startswith("patient/") for s in kept):
        if not ctx.patient:
            raise OAuthError("access_denied", "您的账号尚未关联患者档案 (your account is not linked to a patient record)")
        patient = ctx.patient
    return " ".join(kept), patient


async def _refused(request: Request, client_id: str | None, err: OAuthError, ctx: AuthContext | None = None) -> None:
    """Refusals sent back to a registered app are recorded in the app's organisation's chain
    (a request for more than the app registered is worth knowing about)."""
    async with unit_of_work(get_engine(), write=False) as conn:
        client = await get_client(conn, client_id or "")
    if client is None:
        return
    await audit.append_committed(get_engine(), [audit.AuditEntry(
        tenant=client.tenant, actor=ctx.subject if ctx else "anonymous", role=",".join(ctx.roles) if ctx else None,
        action="token-refused", resource_type="OAuthClient", resource_id=client.client_id[:64], outcome="denied",
        client_address=request.client.host if request.client else None,
        detail={"endpoint": "authorize", "error": err.error, "description": err.description[:300]},
    )])


def _redirect(req_uri: str, **params) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(req_uri + ("&" if "?" in req_uri else "?") + query, status_code=303,
                            headers={"Cache-Control": "no-store"})


def _error_redirect(req: AuthRequest | None, uri: str, state: str | None, err: OAuthError) -> RedirectResponse:
    return _redirect(uri, error=err.error, error_description=err.description, state=state)


def _locale(request: Request) -> str:
    return request_locale(request)


def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    # the consent page must not be framed (clickjacking, RFC 6749 §10.13) nor cached
    return render_page(request, template, status_code=status, headers={
        "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'", "Cache-Control": "no-store"},
        **context)


def _error_page(request: Request, err: PageError) -> HTMLResponse:
    return render(request, "identity/oauth_error.html", status=err.status, message=err.message)


@router.get("/oauth2/authorize")
async def authorize(request: Request) -> Response:
    from yiyun.identity.sessions import session_context, signin_url

    params = {k: v for k, v in request.query_params.items()}
    try:
        req = await check_request(request, params)
    except PageError as err:
        return _error_page(request, err)
    except OAuthError as err:
        await _refused(request, params.get("client_id"), err, await session_context(request))
        return _redirect(params["redirect_uri"], error=err.error, error_description=err.description,
                         state=params.get("state") or None)
    ctx = await session_context(request)
    if ctx is None:
        wants_patient = any(s.startswith("patient/") for s in req.scope.split())
        here = request.url.path + "?" + request.url.query
        return RedirectResponse(signin_url(here, patient=wants_patient), status_code=303)
    if ctx.tenant != req.client.tenant:
        return _redirect(req.redirect_uri, error="access_denied", state=req.state,
                         error_description="此应用属于另一家机构 (the app belongs to another organisation)")
    try:
        scope, patient = for_user(req, ctx)
    except OAuthError as err:
        await _refused(request, req.client.client_id, err, ctx)
        return _redirect(req.redirect_uri, error=err.error, error_description=err.description, state=req.state)
    return render(request, "identity/oauth_consent.html", client=req.client, items=describe(scope, _locale(request)),
                  params=req.params, patient=patient, user=ctx, refresh=_refresh_kind(scope))


@router.post("/oauth2/authorize")
async def decide(request: Request) -> Response:
    """The consent form's answer: `decision=approve|deny` with the original parameters."""
    from yiyun.identity.sessions import check_csrf, current_user, signin_url

    form = await request.form()
    params = {k: v for k, v in form.items() if isinstance(v, str) and k in PARAMS}
    try:
        req = await check_request(request, params)
    except PageError as err:
        return _error_page(request, err)
    except OAuthError as err:
        return _redirect(params["redirect_uri"], error=err.error, error_description=err.description,
                         state=params.get("state") or None)
    user = await current_user(request)
    if user is None:
        return RedirectResponse(signin_url("/oauth2/authorize?" + urlencode(req.params)), status_code=303)
    try:
        await check_csrf(request, user)
    except Forbidden as exc:
        return _error_page(request, PageError(exc.message, 403))
    ctx = user.context
    if ctx.tenant != req.client.tenant:
        return _redirect(req.redirect_uri, error="access_denied", state=req.state,
                         error_description="此应用属于另一家机构 (the app belongs to another organisation)")
    try:
        scope, patient = for_user(req, ctx)
    except OAuthError as err:
        await _refused(request, req.client.client_id, err, ctx)
        return _redirect(req.redirect_uri, error=err.error, error_description=err.description, state=req.state)
    approved = form.get("decision") == "approve"
    entry = audit.AuditEntry(
        tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="consent",
        resource_type="OAuthClient", resource_id=req.client.client_id[:64], outcome="ok" if approved else "denied",
        patient=f"Patient/{patient}" if patient else None, client_address=ctx.client_address,
        detail={"scope": scope, "decision": "approve" if approved else "deny", "client": req.client.name},
    )
    if not approved:
        await audit.append_committed(get_engine(), [entry])
        return _redirect(req.redirect_uri, error="access_denied", state=req.state,
                         error_description="用户拒绝了授权 (the user denied the request)")
    async with unit_of_work(get_engine()) as conn:
        grant = await grants.create_grant(conn, client_id=req.client.client_id, tenant=ctx.tenant, subject=ctx.subject,
                                          roles=tuple(ctx.roles), scope=scope, patient=patient, fhir_user=ctx.fhir_user,
                                          account_id=ctx.account_id)
        code = await grants.create_code(conn, grant_id=grant.grant_id, client_id=req.client.client_id,
                                        redirect_uri=req.redirect_uri, code_challenge=req.code_challenge,
                                        nonce=req.nonce)
        entry.detail = {**entry.detail, "grant": grant.grant_id}
        await audit.append(conn, [entry])
    return _redirect(req.redirect_uri, code=code, state=req.state)


def _refresh_kind(scope: str) -> str | None:
    words = scope.split()
    return "offline_access" if "offline_access" in words else ("online_access" if "online_access" in words else None)


# ------------------------------------------------------ scopes in plain words
TYPE_LABELS = {
    "Patient": "basic information", "Observation": "test results and vital signs", "Condition": "diagnoses",
    "MedicationRequest": "prescriptions", "MedicationDispense": "dispensed medicines",
    "AllergyIntolerance": "allergies", "Encounter": "visits", "DiagnosticReport": "reports",
    "Immunization": "vaccinations", "Appointment": "appointments", "Procedure": "procedures",
    "CarePlan": "care plans", "DocumentReference": "documents", "ImagingStudy": "imaging studies",
    "QuestionnaireResponse": "questionnaires", "Consent": "consents", "Claim": "bills and claims",
}


# The categories of HL7's observation-category code system
# (https://terminology.hl7.org/CodeSystem-observation-category.html), which granular scopes
# name most often (`patient/Observation.rs?category=…|vital-signs`).
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CATEGORY_LABELS = {
    "vital-signs": "vital signs", "laboratory": "laboratory", "imaging": "imaging", "exam": "physical examination",
    "social-history": "social history", "survey": "survey", "procedure": "procedure", "therapy": "therapy",
    "activity": "activity",
}
PERMISSION_WORDS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def _verb(perms: frozenset[str]) -> str:
    reads, writes = bool(perms & {"r", "s"}), bool(perms & {"c", "u", "d"})
    return "Read and change" if reads and writes else ("Change" if writes else "Read")


def describe(scope: str, locale: str) -> list[dict]:
    """Each scope as one line a patient or a doctor understands (translated), with the
    scope itself beside it for those who want the detail."""
    from yiyun.core.i18n import translations

    _ = translations(locale).gettext
    items = []
    for s in parsed(scope):
        if isinstance(s, ResourceScope):
            what = (_("entire health record") if s.resource_type == "*"
                    else _(TYPE_LABELS.get(s.resource_type, s.resource_type)))
            if s.query:
                text = _granular_text(s, what, _)
            elif s.context == "patient":
                text = _("%(verb)s your %(what)s") % {"verb": _(_verb(s.permissions)), "what": what}
            else:
                text = _("%(verb)s the %(what)s of patients in your organisation") % {
                    "verb": _(_verb(s.permissions)), "what": what}
        else:
            text = _({
                "openid": "Know who you are", "fhirUser": "Know who you are", "profile": "Know who you are",
                "launch/patient": "Know which patient record is yours",
                "offline_access": "Keep access after you leave, until you withdraw it",
                "online_access": "Keep access while you are using it",
            }.get(s, s))
        if text not in [i["text"] for i in items]:
            items.append({"text": text, "scope": str(s), "data": isinstance(s, ResourceScope)})
    return sorted(items, key=lambda i: not i["data"])  # what it may do with the record first


def _granular_text(s: ResourceScope, what: str, _) -> str:
    """A granular scope: the data it limits to (a known observation category by its name,
    any other query as written) and each permission letter in words."""
    category = _observation_category(s)
    if category is not None:
        what = _("%(category)s observations") % {"category": _(category)}
    else:
        what = _("%(what)s matching %(query)s") % {"what": what, "query": s.query}
    permissions = _(", ").join(_(PERMISSION_WORDS[p]) for p in PERMISSIONS if p in s.permissions)
    if s.context == "patient":
        return _("Your %(what)s (%(permissions)s)") % {"what": what, "permissions": permissions}
    return _("The %(what)s of patients in your organisation (%(permissions)s)") % {
        "what": what, "permissions": permissions}


def _observation_category(s: ResourceScope) -> str | None:
    """The label of `Observation?category=[system|]code` for one known category, else None."""
    key, _sep, value = (s.query or "").partition("=")
    if s.resource_type != "Observation" or key != "category" or "&" in value or "," in value:
        return None
    system, bar, code = value.rpartition("|")
    if bar and system != OBSERVATION_CATEGORY:
        return None
    return CATEGORY_LABELS.get(code)


# ------------------------------------------------------- authorised apps page
def _shanghai(us: int) -> str:
    from datetime import datetime, timedelta, timezone

    return datetime.fromtimestamp(us / 1_000_000, timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M")


@router.get("/authorized-apps")
async def authorized_apps(request: Request) -> Response:
    """The apps the signed-in user has allowed, each with a button to withdraw it."""
    from yiyun.identity.sessions import require_page_user

    ctx = await require_page_user(request)
    async with unit_of_work(get_engine(), write=False) as conn:
        active = await grants.active_grants_of(conn, ctx.account_id or "", ctx.tenant)
    locale = _locale(request)
    apps = [{"id": g.grant_id, "name": g.client_name, "items": describe(g.scope, locale),
             "since": _shanghai(g.created_ts), "until": _shanghai(g.expires_ts)} for g in active]
    return render(request, "identity/oauth_apps.html", apps=apps, done=request.query_params.get("done"))


@router.post("/authorized-apps/{grant_id}/revoke")
async def withdraw(request: Request, grant_id: str) -> Response:
    """Withdraw one of the user's own authorisations: its tokens stop working at once."""
    from yiyun.identity.oauth import revocation as revocation_ids
    from yiyun.identity.sessions import check_csrf, current_user, require_page_user

    ctx = await require_page_user(request)
    user = await current_user(request)
    try:
        await check_csrf(request, user)
    except Forbidden as exc:
        return _error_page(request, PageError(exc.message, 403))
    async with unit_of_work(get_engine()) as conn:
        grant = await grants.get_grant(conn, grant_id[:36])
        if grant is None or grant.account_id != ctx.account_id or grant.tenant != ctx.tenant:
            return _error_page(request, PageError("没有找到这项授权 (no such authorisation)", 404))
        if not grant.revoked:
            await grants.revoke_grant(conn, grant.grant_id)
            await audit.append(conn, [audit.AuditEntry(
                tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="token-revoked",
                resource_type="OAuthClient", resource_id=grant.client_id[:64], client_address=ctx.client_address,
                patient=f"Patient/{grant.patient}" if grant.patient else None,
                detail={"kind": "grant", "id": grant.grant_id, "reason": "withdrawn by the user"},
            )])
    revocation_ids.remember(grant.grant_id, grants.now_us() + grants.access_lifetime_us() + 300 * grants.SECOND)
    return RedirectResponse("/authorized-apps?done=1", status_code=303)
