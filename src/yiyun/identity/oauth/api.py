"""HTTP endpoints of the OAuth 2.0 server: token, introspection, revocation, key set and
the OpenID Connect discovery document. (The authorisation endpoint, which needs a signed-in
user and a consent page, is in `authorize.py`.)

All of them take `application/x-www-form-urlencoded` bodies (RFC 6749 §4.1.3) and answer
JSON with `Cache-Control: no-store`; errors are RFC 6749 §5.2 objects with 400 or 401,
never a 500.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings
from yiyun.identity import audit
from yiyun.identity.oauth import revocation, server
from yiyun.identity.oauth.errors import NO_STORE, OAuthError, invalid_request
from yiyun.identity.oauth.jwks import public_jwks

log = get_logger("yiyun.oauth")
router = APIRouter(include_in_schema=True, tags=["OAuth 2.0"])
MAX_FORM_BYTES = 64 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body; a parameter sent twice is refused (RFC 6749 §3.1, §3.2)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise invalid_request("请求体须为 application/x-www-form-urlencoded (form-encoded body required)")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise invalid_request("请求体过大 (request body too large)")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise invalid_request("请求体须为 UTF-8 (body must be UTF-8)") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise invalid_request(f"参数 {name} 重复 (parameter {name} repeated)")
        if "\x00" in value:
            raise invalid_request(f"参数 {name} 含非法字符 (parameter {name} contains NUL)")
        form[name] = value
    return form


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _refused(request: Request, err: OAuthError, *, tenant: str | None, client_id: str | None, what: str) -> None:
    """Every refusal is recorded, in a transaction of its own (the request's is rolled back)."""
    try:
        await audit.append_committed(get_engine(), [audit.AuditEntry(
            tenant=tenant or get_settings().default_tenant, actor=f"client:{client_id}" if client_id else "anonymous",
            action="token-refused", resource_type="OAuthClient", resource_id=(client_id or None) and client_id[:64],
            outcome="denied", client_address=_address(request),
            detail={"endpoint": what, "error": err.error, "description": err.description[:300]},
        )])
    except Exception as exc:  # noqa: BLE001 - the refusal is still answered; the failure is logged
        log.error("oauth_refusal_not_audited", error=str(exc)[:200])


class _Caller:
    """Which client a request turned out to come from, for the audit of a refusal."""

    def __init__(self, form: dict[str, str]) -> None:
        self.form_client_id: str | None = form.get("client_id") or None
        self.seen: dict = {}

    @property
    def client_id(self) -> str | None:
        client = self.seen.get("client")
        return client.client_id if client else self.form_client_id

    @property
    def tenant(self) -> str | None:
        client = self.seen.get("client")
        return client.tenant if client else None


@router.post("/oauth2/token")
async def token(request: Request) -> JSONResponse:
    caller = _Caller({})
    try:
        form = await read_form(request)
        caller = _Caller(form)
        grant_type = form.get("grant_type", "")
        handler = server.GRANTS.get(grant_type)
        if handler is None:
            raise OAuthError("unsupported_grant_type", "不支持的授权类型 (unsupported grant_type)")
        engine = get_engine()
        refused: OAuthError | None = None
        revoked_until: int | None = None
        async with unit_of_work(engine) as conn:
            auth = await server.authenticate_client(conn, form, request.headers.get("authorization", ""),
                                                    server.token_url(_base(request)), caller.seen)
            try:
                issued = await handler(conn, auth, form)
            except OAuthError as err:
                # The refusal commits what it used up: a code or refresh token presented once is
                # spent even when the exchange fails, and a replay's revocation stays.
                refused = err
                if err.revoke_grant:
                    revoked_until = await server.revoke_replayed(conn, err.revoke_grant, reason=err.revoke_reason,
                                                                 client_address=_address(request))
            else:
                await audit.append(conn, [_issued_entry(request, auth, issued, grant_type)])
        if refused is not None:
            if revoked_until and refused.revoke_grant:
                revocation.remember(refused.revoke_grant, revoked_until)
            raise refused
        return JSONResponse(issued.body, headers=NO_STORE)
    except OAuthError as err:
        await _refused(request, err, tenant=caller.tenant, client_id=caller.client_id, what="token")
        return err.response()


def _issued_entry(request: Request, auth, issued, grant_type: str) -> audit.AuditEntry:
    claims = issued.claims
    return audit.AuditEntry(
        tenant=claims.tenant, actor=claims.subject, role=",".join(claims.roles) or None, action="token-issued",
        resource_type="OAuthClient", resource_id=auth.client.client_id[:64],
        patient=f"Patient/{claims.patient}" if claims.patient else None,
        purpose="SYSADMIN" if grant_type == "client_credentials" else None, client_address=_address(request),
        detail={"grant_type": grant_type, "scope": claims.scope, "jti": claims.token_id, "grant": claims.grant_id,
                "expires": claims.expires, "auth": auth.method, "refresh_token": "refresh_token" in issued.body,
                "id_token": "id_token" in issued.body},
    )


async def _authenticated_call(request: Request, what: str, work):
    caller = _Caller({})
    try:
        form = await read_form(request)
        caller = _Caller(form)
        async with unit_of_work(get_engine()) as conn:
            auth = await server.authenticate_client(conn, form, request.headers.get("authorization", ""),
                                                    server.token_url(_base(request)), caller.seen)
            return await work(conn, auth, form)
    except OAuthError as err:
        await _refused(request, err, tenant=caller.tenant, client_id=caller.client_id, what=what)
        return err.response()


@router.post("/oauth2/introspect")
async def introspect(request: Request) -> JSONResponse:
    """RFC 7662: for resource servers of the client's organisation. Public clients cannot
    authenticate and so cannot introspect."""

    async def work(conn, auth, form):
        if auth.method == "none":
            raise OAuthError("invalid_client", "内省须由已认证的客户端调用 (introspection needs an authenticated client)",
                             status=401)
        tok = form.get("token", "")
        if not tok:
            raise invalid_request("缺少参数 token (missing parameter token)")
        return JSONResponse(await server.introspect(conn, auth.client, tok), headers=NO_STORE)

    return await _authenticated_call(request, "introspect", work)


@router.post("/oauth2/revoke")
async def revoke(request: Request) -> JSONResponse:
    """RFC 7009: 200 whether or not the token was known (§2.2)."""
    revoked: list[tuple[str, str, int]] = []

    async def work(conn, auth, form):
        tok = form.get("token", "")
        if not tok:
            raise invalid_request("缺少参数 token (missing parameter token)")
        done = await server.revoke(conn, auth.client, tok, form.get("token_type_hint"))
        if done:
            revoked.append(done)
            kind, token_id, _ = done
            await audit.append(conn, [audit.AuditEntry(
                tenant=auth.client.tenant, actor=f"client:{auth.client.client_id}", action="token-revoked",
                resource_type="OAuthClient", resource_id=auth.client.client_id[:64], client_address=_address(request),
                detail={"kind": kind, "id": token_id},
            )])
        return JSONResponse({}, headers=NO_STORE)

    response = await _authenticated_call(request, "revoke", work)
    for _kind, token_id, expires in revoked:  # after the commit: this process refuses it at once
        revocation.remember(token_id, expires)
    return response


@router.get("/oauth2/jwks")
async def jwks() -> JSONResponse:
    return JSONResponse(public_jwks(), headers={"Cache-Control": "public, max-age=3600"})
