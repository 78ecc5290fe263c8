"""Web sessions: who is signed in to this browser, for pages, the JSON API, FHIR and WebSockets.

How it works (OWASP Session Management Cheat Sheet; GB/T 22239-2019 8.1.4.1 c "登录连接超时自动退出"):

- The cookie `yiyun_session` holds an opaque random id (256 bits). The server stores only its
  SHA-256 (`identity_session.id_hash`), so a copy of the table opens no session. The cookie
  is HttpOnly, SameSite=Lax, Path=/, and Secure when the request came over https or when
  `YIYUN_SESSION_SECURE_COOKIE=true`.
- A session ends after `YIYUN_SESSION_IDLE_MINUTES` (default 30) without use and, in any
  case, `YIYUN_SESSION_ABSOLUTE_HOURS` (default 12) after it was opened.
- Every session has its own CSRF token. A request authenticated by the cookie that changes
  something (POST, PUT, PATCH, DELETE) must send it back, in the header `X-CSRF-Token` or
  the form field `csrf_token`; requests with `Authorization: Bearer` need none (a browser
  never adds that header by itself). Templates get it as `csrf_token`.
- Sign-in always opens a *new* session id and discards any id the browser had before
  (no session fixation); sign-out deletes the session; "sign out everywhere" deletes all of
  an account's sessions.

For other modules:

- `open_session(conn, account_id, tenant)` signs a persona in without the pages (tests):
  put the returned cookie in `yiyun_session` and the CSRF token in `X-CSRF-Token`.
- `session_context(request)` is the signed-in user's `AuthContext`, or None.
- `require_page_user` is the dependency of pages: when nobody is signed in it answers 303 to
  `/signin?next=<path>`.
- `websocket_context(websocket)` authenticates a WebSocket by the cookie (with an Origin
  check) or by `?access_token=<bearer token>`.
- `yiyun.identity.auth.require_subject` (JSON API) and the FHIR API accept the cookie too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import Request, WebSocket
from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import Forbidden, Unauthorized
from yiyun.core.settings import get_settings
from yiyun.fhir.model import now_us
from yiyun.identity.auth import AuthContext, claims_for, context_from_claims
from yiyun.identity.signin_tables import session as session_table
from yiyun.identity.tables import account, membership
from yiyun.identity.tables import tenant as tenant_table

COOKIE = "yiyun_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a signed-in person may ask of the FHIR API; the access policy then decides per
# resource (roles, care relationships, consent). SMART v2 scope syntax.
STAFF_SCOPE = "user/*.cruds"
PATIENT_SCOPE = "patient/*.cruds"
# Stages of a session: `active` is signed in; `mfa` and `enrol` have passed the password and
# still owe the second factor (they authenticate nothing).
ACTIVE, MFA, ENROL = "active", "mfa", "enrol"
# last_seen_ts is written at most this often (µs), not on every request.
TOUCH_EVERY_US = 60 * 1_000_000
WS_UNAUTHORIZED = 4401  # WebSocket close code: like HTTP 401
# A half-finished sign-in (password given, second factor or enrolment still to do) lapses
# after 15 minutes, whatever the session settings say.
PENDING_US = 15 * 60 * 1_000_000


def hash_session_id(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _idle_us() -> int:
    return get_settings().session_idle_minutes * 60 * 1_000_000


def _absolute_us() -> int:
    return get_settings().session_absolute_hours * 3600 * 1_000_000


@dataclass(frozen=True)
class SessionInfo:
    """One row of `identity_session`, as the account page lists it."""

    id_hash: str
    account_id: str
    tenant: str
    stage: str
    csrf_token: str
    created_ts: int
    last_seen_ts: int
    expires_ts: int
    client_address: str | None
    user_agent: str | None
    next_path: str | None


def _info(row) -> SessionInfo:
    return SessionInfo(row.id_hash, row.account_id, row.tenant, row.stage, row.csrf_token, row.created_ts,
                       row.last_seen_ts, row.expires_ts, row.client_address, row.user_agent, row.next_path)


async def open_session(
    conn: AsyncConnection, account_id: str, tenant: str, *, client_address: str | None = None,
    user_agent: str | None = None, stage: str = ACTIVE, next_path: str | None = None,
    replaces: str | None = None,
) -> tuple[str, str]:
    """Open a session of `account_id` with `tenant` active; returns (cookie value, CSRF token).

    The caller's transaction holds the insert. `replaces` is the cookie value the browser
    sent before (if any): that session is deleted, so an id planted before sign-in is worth
    nothing after it. Nothing here checks the password or the account's status: the sign-in
    flow does that; tests use this directly to sign a persona in:

        cookie, csrf = await open_session(conn, acct.id, tenant)
        client.cookies.set("yiyun_session", cookie)
        await client.post(url, headers={"X-CSRF-Token": csrf}, ...)
    """
    if replaces:
        await conn.execute(delete(session_table).where(session_table.c.id_hash == hash_session_id(replaces)))
    await purge_expired(conn, account_id)
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = now_us()
    await conn.execute(session_table.insert().values(
        id_hash=hash_session_id(cookie), account_id=account_id, tenant=tenant, stage=stage, csrf_token=csrf,
        created_ts=now, last_seen_ts=now, expires_ts=now + (_absolute_us() if stage == ACTIVE else PENDING_US),
        client_address=(client_address or None) and client_address[:64],
        user_agent=(user_agent or None) and user_agent[:300], next_path=next_path and next_path[:500],
    ))
    return cookie, csrf


async def load_session(conn: AsyncConnection, cookie: str | None, *, touch: bool = True) -> SessionInfo | None:
    """The live session behind a cookie value (any stage), or None when unknown or timed out.
    With `touch` (in a write transaction) a timed-out session is deleted and the use is
    recorded (at most once a minute); without it nothing is written."""
    if not cookie or len(cookie) > 200:
        return None
    id_hash = hash_session_id(cookie)
    row = (await conn.execute(select(session_table).where(session_table.c.id_hash == id_hash))).first()
    if row is None:
        return None
    now = now_us()
    if now >= row.expires_ts or now - row.last_seen_ts >= _idle_us():
        if touch:
            await conn.execute(delete(session_table).where(session_table.c.id_hash == id_hash))
        return None
    info = _info(row)
    if touch and needs_touch(info, now):
        await conn.execute(update(session_table).where(session_table.c.id_hash == id_hash).values(last_seen_ts=now))
    return info


def needs_touch(info: SessionInfo, now: int | None = None) -> bool:
    return (now or now_us()) - info.last_seen_ts >= TOUCH_EVERY_US


async def touch_session(conn: AsyncConnection, info: SessionInfo) -> None:
    """Record that the session was used now (its idle timeout starts again)."""
    await conn.execute(update(session_table).where(session_table.c.id_hash == info.id_hash)
                       .values(last_seen_ts=now_us()))


async def purge_expired(conn: AsyncConnection, account_id: str | None = None) -> int:
    """Delete timed-out sessions (of one account, or all)."""
    now = now_us()
    cond = (session_table.c.expires_ts <= now) | (session_table.c.last_seen_ts <= now - _idle_us())
    stmt = delete(session_table).where(cond)
    if account_id:
        stmt = stmt.where(session_table.c.account_id == account_id)
    return (await conn.execute(stmt)).rowcount or 0


async def close_session(conn: AsyncConnection, cookie: str | None) -> SessionInfo | None:
    """Sign out: delete the session behind `cookie`; returns what it was."""
    if not cookie:
        return None
    id_hash = hash_session_id(cookie)
    row = (await conn.execute(select(session_table).where(session_table.c.id_hash == id_hash))).first()
    await conn.execute(delete(session_table).where(session_table.c.id_hash == id_hash))
    return _info(row) if row else None


async def close_all_sessions(conn: AsyncConnection, account_id: str) -> int:
    """Sign out everywhere: delete every session of the account; returns how many."""
    result = await conn.execute(delete(session_table).where(session_table.c.account_id == account_id))
    return result.rowcount or 0


async def list_sessions(conn: AsyncConnection, account_id: str) -> list[SessionInfo]:
    """The account's signed-in sessions that have not timed out, newest first."""
    now = now_us()
    rows = await conn.execute(select(session_table).where(
        session_table.c.account_id == account_id, session_table.c.stage == ACTIVE,
        session_table.c.expires_ts > now, session_table.c.last_seen_ts > now - _idle_us(),
    ).order_by(session_table.c.created_ts.desc()))
    return [_info(r) for r in rows]


async def switch_tenant(conn: AsyncConnection, cookie: str, tenant: str) -> bool:
    """Make `tenant` the active tenant of the session, if the account is a member of it."""
    info = await load_session(conn, cookie, touch=False)
    if info is None or info.stage != ACTIVE:
        return False
    member = (await conn.execute(select(membership.c.tenant).where(
        membership.c.account_id == info.account_id, membership.c.tenant == tenant))).first()
    if member is None:
        return False
    await conn.execute(update(session_table).where(session_table.c.id_hash == info.id_hash).values(tenant=tenant))
    return True


def scopes_for_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    """Staff roles get `user/*.cruds`, patients `patient/*.cruds` (limited to their own
    compartment by the access policy)."""
    scopes = []
    if any(r != "patient" for r in roles):
        scopes.append(STAFF_SCOPE)
    if "patient" in roles:
        scopes.append(PATIENT_SCOPE)
    return tuple(scopes)


@dataclass(frozen=True)
class SignedIn:
    """A signed-in session with its account: what pages show in the header."""

    session: SessionInfo
    account_id: str
    username: str | None
    display_name: str
    kind: str
    context: AuthContext
    tenant_name: str = ""


async def signed_in(conn: AsyncConnection, cookie: str | None, *, base_url: str,
                    client_address: str | None = None, touch: bool = True) -> SignedIn | None:
    """The signed-in user behind a cookie value, or None: unknown, timed out, still owing its
    second factor, account no longer active, or no longer a member of the session's tenant.
    `touch=False` writes nothing (a read transaction); the caller then records the use."""
    info = await load_session(conn, cookie, touch=touch)
    if info is None or info.stage != ACTIVE:
        return None
    row = (await conn.execute(
        select(account.c.username, account.c.display_name, account.c.kind, account.c.status,
               account.c.fhir_ref, membership.c.roles, membership.c.fhir_ref.label("member_ref"),
               tenant_table.c.name.label("tenant_name"))
        .select_from(account.join(membership, and_(membership.c.account_id == account.c.id,
                                                   membership.c.tenant == info.tenant))
                     .join(tenant_table, tenant_table.c.slug == membership.c.tenant))
        .where(account.c.id == info.account_id)
    )).first()
    if row is None or row.status != "active":
        return None
    roles = tuple(r for r in row.roles.split(",") if r)
    fhir_user = row.member_ref or row.fhir_ref
    patient = None
    if "patient" in roles and fhir_user and fhir_user.startswith("Patient/"):
        patient = fhir_user.split("/", 1)[1]
    ctx = AuthContext(
        tenant=info.tenant, subject=row.username or info.account_id, roles=roles, scopes=scopes_for_roles(roles),
        client_address=client_address, base_url=base_url, patient=patient, token_id=f"session:{info.id_hash[:16]}",
        fhir_user=fhir_user, account_id=info.account_id, display_name=row.display_name, via_session=True,
    )
    return SignedIn(info, info.account_id, row.username, row.display_name, row.kind, ctx, row.tenant_name)


def _client(request: Request | WebSocket) -> str | None:
    return request.client.host if request.client else None


def _fhir_base(request: Request | WebSocket) -> str:
    return str(request.base_url).rstrip("/") + "/fhir/R4"


async def current_user(request: Request) -> SignedIn | None:
    """The signed-in user of this request (looked up once per request), or None."""
    state = request.state
    if hasattr(state, "yiyun_signed_in"):
        return state.yiyun_signed_in
    cookie = request.cookies.get(COOKIE)
    user = await _lookup(cookie, _fhir_base(request), _client(request)) if cookie else None
    state.yiyun_signed_in = user
    return user


async def _lookup(cookie: str, base_url: str, client: str | None) -> SignedIn | None:
    # A read transaction on every request; a short write only once a minute per session
    # (SQLite has one writer: reads must not queue behind it).
    engine = get_engine()
    async with unit_of_work(engine, write=False) as conn:
        user = await signed_in(conn, cookie, base_url=base_url, client_address=client, touch=False)
    if user is not None and needs_touch(user.session):
        async with unit_of_work(engine) as conn:
            await touch_session(conn, user.session)
    return user


async def session_context(request: Request) -> AuthContext | None:
    """The `AuthContext` of the signed-in web user, or None when nobody is signed in.

    tenant: the session's active tenant (staff with several tenants switch it on /account);
    subject: the username (staff) or the account id (patients, who have no username);
    roles: the account's roles in that tenant; fhir_user: the membership's `fhir_ref` in that
    tenant, else the account's (Practitioner/<id> or Patient/<id>); scopes: `user/*.cruds`
    for staff roles, `patient/*.cruds` for patients, with `patient` = their Patient id in
    that tenant (None while the account is not yet linked to a Patient there).
    `account_id` and `display_name` are set; `via_session` is True.
    """
    user = await current_user(request)
    return user.context if user else None


class SignInRequired(Exception):
    """Raised by `require_page_user`; the handler installed by `yiyun.identity.web.install`
    answers 303 to `/signin?next=<path>` (`/signin/patient` for patient pages)."""

    def __init__(self, next_path: str, patient: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.patient = patient


def signin_url(next_path: str, patient: bool = False) -> str:
    return ("/signin/patient" if patient else "/signin") + "?next=" + quote(next_path, safe="/")


def _here(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


async def require_page_user(request: Request) -> AuthContext:
    """Dependency of pages: the signed-in user's `AuthContext`; when nobody is signed in the
    browser is sent (303) to `/signin?next=<this path>`:

        @router.get("/doctor")
        async def page(request: Request, ctx: AuthContext = Depends(require_page_user)): ...
    """
    ctx = await session_context(request)
    if ctx is None:
        raise SignInRequired(_here(request))
    return ctx


async def require_patient_page_user(request: Request) -> AuthContext:
    """Like `require_page_user`, but sends to the patient sign-in page (phone + SMS code)."""
    ctx = await session_context(request)
    if ctx is None:
        raise SignInRequired(_here(request), patient=True)
    return ctx


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


CSRF_MESSAGE = ("缺少或错误的 CSRF 令牌：请刷新页面后重试 (missing or wrong CSRF token: send the session's token "
                "in the X-CSRF-Token header or the csrf_token form field)")


async def check_csrf(request: Request, user: SignedIn) -> None:
    """Refuse (403) an unsafe request authenticated by the cookie without the session's CSRF token."""
    if request.method.upper() not in UNSAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER)
    if not given:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
    if not csrf_matches(user.session.csrf_token, given):
        raise Forbidden(CSRF_MESSAGE)


async def cookie_context(request: Request) -> AuthContext:
    """The context of a cookie-authenticated API request (CSRF checked), or 401."""
    user = await current_user(request)
    if user is None:
        raise Unauthorized("登录已失效，请重新登录 (session expired or unknown: sign in again)",
                           headers={"WWW-Authenticate": 'Bearer realm="yiyun"'})
    await check_csrf(request, user)
    return user.context


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host")
    if not origin or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


class WebSocketUnauthorized(Exception):
    """No valid session cookie or access token on a WebSocket (closed with 4401)."""


async def websocket_context(websocket: WebSocket) -> AuthContext:
    """Who is on this WebSocket: `?access_token=<bearer token>`, else the session cookie (only
    when the Origin header names this host: browsers send cookies on cross-site WebSockets,
    and SameSite does not stop them). Call it before `accept()`; when nobody is identified
    it accepts and closes the socket with code 4401 and raises `WebSocketUnauthorized`
    (return from the endpoint then).
    """
    base = _fhir_base(websocket)
    client = _client(websocket)
    token = websocket.query_params.get("access_token")
    ctx: AuthContext | None = None
    if token:
        try:
            ctx = context_from_claims(claims_for(token), base_url=base, client_address=client)
        except Unauthorized:
            ctx = None
    else:
        cookie = websocket.cookies.get(COOKIE)
        if cookie and _same_origin(websocket):
            user = await _lookup(cookie, base, client)
            ctx = user.context if user else None
    if ctx is None:
        # accepted and then closed, so that the browser sees the code 4401 (closing before
        # accepting refuses the handshake with HTTP 403, which scripts cannot tell apart)
        await websocket.accept()
        await websocket.close(code=WS_UNAUTHORIZED)
        raise WebSocketUnauthorized("需要登录 (sign-in required)")
    return ctx


def cookie_secure(request: Request) -> bool:
    return get_settings().session_secure_cookie or request.url.scheme in ("https", "wss")


def set_session_cookie(response, request: Request, cookie: str) -> None:
    """Put the session id in the browser: HttpOnly, SameSite=Lax, Secure over https. No
    Max-Age: the server ends the session; the browser forgets it when it closes."""
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="lax", secure=cookie_secure(request), path="/")


def clear_session_cookie(response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_secure(request))


class SessionAuthMiddleware:
    """Looks up the session cookie before the route runs, once per request.

    The FHIR layer's context provider is synchronous and so is page rendering (the header
    shows who is signed in), while the session lookup is not: for every request carrying
    the cookie (static files excepted) the signed-in user is put in the request state. For
    FHIR requests (`/fhir/R4/...`) without an `Authorization` header the outcome is also
    prepared for `yiyun.identity.auth.fhir_request_context`, CSRF included: FHIR requests
    send the token in the `X-CSRF-Token` header.
    """

    def __init__(self, app, fhir_prefix: str = "/fhir/R4") -> None:
        self.app = app
        self.fhir_prefix = fhir_prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not scope.get("path", "").startswith("/static/"):
            request = Request(scope)
            if request.cookies.get(COOKIE):
                user = await current_user(request)
                if "authorization" not in request.headers and scope.get("path", "").startswith(self.fhir_prefix):
                    state = scope.setdefault("state", {})
                    if user is None:
                        state["yiyun_session_auth"] = "expired"
                    elif request.method.upper() in UNSAFE_METHODS and not csrf_matches(
                            user.session.csrf_token, request.headers.get(CSRF_HEADER)):
                        state["yiyun_session_auth"] = "csrf"
                    else:
                        state["yiyun_session_auth"] = user.context
        await self.app(scope, receive, send)
