"""Sign-in pages: staff (username + password, then TOTP), patients (phone + SMS code, or phone +
password once set), sign-out, the account page (sessions, sign out everywhere, tenant
switcher, patient password) and the development SMS outbox.

Failed sign-ins (GB/T 22239-2019 8.1.4.1 a "应具有登录失败处理功能，应配置并启用结束会话、限制
非法登录次数和当登录连接超时自动退出等相关措施"; NIST SP 800-63B §5.2.2 rate limiting):

- failures are counted per typed username (or phone) and per client address, whether or not
  the account exists, and every refusal says the same thing, so the page never reveals which
  usernames exist;
- after 5 consecutive failures each further try must wait 10 s, 20 s, 40 s, 80 s, 160 s;
- after 10 the username is locked for 15 minutes (and again after each failure that follows);
- one client address gets at most 50 failures in 15 minutes (password spraying);
- a correct password and second factor resets the count.

Audit actions written here (yiyun.identity.audit): `signin` (ok), `signin-failed` (denied;
detail.reason: password, second-factor, sms-code, throttled, locked, pending, disabled,
no-tenant), `signin-locked` (the failure that locks), `signout` (detail.scope: this | everywhere),
`totp-enrolled`, `recovery-codes-issued`, `sms-code-issued` (ok or denied with detail.reason),
`password-changed`, `tenant-switched`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, NotFound, YiyunError
from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings
from yiyun.fhir.model import RequestContext, now_us
from yiyun.identity import accounts, sessions, sms, totp
from yiyun.identity.audit import AuditEntry, append
from yiyun.identity.keys import signing_key
from yiyun.identity.passwords import hash_password, needs_rehash, verify_password
from yiyun.identity.signin_tables import signin_attempt
from yiyun.identity.tables import account, membership
from yiyun.identity.tables import tenant as tenant_table
from yiyun.identity.web import render

log = get_logger("yiyun.signin")
router = APIRouter(include_in_schema=False)

# --------------------------------------------------------------- failure handling
DELAY_AFTER = 5  # NIST SP 800-63B §5.2.2: rate-limit consecutive failed attempts
FIRST_DELAY_S = 10
LOCK_AFTER = 10  # GB/T 22239-2019 8.1.4.1 a: 限制非法登录次数
LOCK_MINUTES = 15
FAILURE_MEMORY_H = 24  # failures older than this are forgotten
ADDRESS_FAILURES = 50
ADDRESS_WINDOW_MIN = 15
_S = 1_000_000
PRE_COOKIE = "yiyun_signin"  # double-submit token of the sign-in forms (no session yet)


def user_key(name: str) -> str:
    """The attempt key of a typed username or phone: keyed hash, so the table lists no names."""
    norm = (name or "").strip().lower()
    return "user:" + hmac.new(signing_key(), norm.encode(), hashlib.sha256).hexdigest()[:40]


def address_key(address: str | None) -> str | None:
    return f"addr:{address[:64]}" if address else None


async def _failures(conn: AsyncConnection, key: str, now: int) -> tuple[int, int | None]:
    """Consecutive failures of `key` (since its last success, within a day) and the last one's time."""
    last_ok = (await conn.execute(select(func.max(signin_attempt.c.ts)).where(
        signin_attempt.c.key == key, signin_attempt.c.success.is_(True)))).scalar() or 0
    since = max(last_ok, now - FAILURE_MEMORY_H * 3600 * _S)
    row = (await conn.execute(select(func.count(), func.max(signin_attempt.c.ts)).where(
        signin_attempt.c.key == key, signin_attempt.c.success.is_(False), signin_attempt.c.ts > since))).first()
    return int(row[0] or 0), row[1]


def wait_after(failures: int) -> tuple[int, bool]:
    """(seconds to wait after the last failure, locked?) for a count of consecutive failures."""
    if failures >= LOCK_AFTER:
        return LOCK_MINUTES * 60, True
    if failures >= DELAY_AFTER:
        return FIRST_DELAY_S * 2 ** (failures - DELAY_AFTER), False
    return 0, False


async def throttled(conn: AsyncConnection, name_key: str, addr_key: str | None) -> tuple[int, bool]:
    """Seconds the caller must still wait before trying (0: go ahead), and whether locked."""
    now = now_us()
    count, last = await _failures(conn, name_key, now)
    wait, locked = wait_after(count)
    remaining = int((last + wait * _S - now) // _S) + 1 if last and wait else 0
    if remaining > 0:
        return remaining, locked
    if addr_key:
        recent = (await conn.execute(select(func.count()).select_from(signin_attempt).where(
            signin_attempt.c.key == addr_key, signin_attempt.c.success.is_(False),
            signin_attempt.c.ts > now - ADDRESS_WINDOW_MIN * 60 * _S))).scalar()
        if recent >= ADDRESS_FAILURES:
            return 60, False
    return 0, False


async def record_attempt(conn: AsyncConnection, keys: list[str | None], success: bool) -> int:
    """Record one attempt under each key; returns the consecutive failures of the first key."""
    now = now_us()
    await conn.execute(signin_attempt.insert(), [{"key": k, "ts": now, "success": success} for k in keys if k])
    return 0 if success else (await _failures(conn, keys[0], now))[0]


# --------------------------------------------------------------- helpers
def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def safe_next(value: str | None, default: str = "/") -> str:
    """Only a path of this site (no scheme, no //host): no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or "\n" in value:
        return default
    return value[:500]


async def _audit(conn: AsyncConnection, tenant: str | None, actor: str, action: str, outcome: str, request: Request,
                 role: str | None = None, **detail) -> None:
    await append(conn, [AuditEntry(
        tenant=tenant or get_settings().default_tenant, actor=(actor or "anonymous")[:100], action=action,
        outcome=outcome, role=role, purpose="SYSADMIN", client_address=client_address(request),
        detail={k: v for k, v in detail.items() if v is not None} or None,
    )])


async def _home_tenant(conn: AsyncConnection, account_id: str | None) -> str | None:
    if not account_id:
        return None
    return (await conn.execute(select(func.min(membership.c.tenant)).where(membership.c.account_id == account_id))).scalar()


def _pre_token(request: Request) -> str:
    return request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)


def _with_pre(response: Response, request: Request, token: str) -> Response:
    if request.cookies.get(PRE_COOKIE) != token:
        response.set_cookie(PRE_COOKIE, token, httponly=True, samesite="strict", secure=sessions.cookie_secure(request),
                            path="/signin")
    return response


def _pre_ok(request: Request, given: str | None) -> bool:
    expected = request.cookies.get(PRE_COOKIE)
    return bool(expected) and sessions.csrf_matches(expected, given)


def page(request: Request, template: str, status: int = 200, **ctx) -> HTMLResponse:
    response = render(request, template, **ctx)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _signed_in_redirect(request: Request, cookie: str, url: str) -> RedirectResponse:
    response = _redirect(url)
    sessions.set_session_cookie(response, request, cookie)
    response.delete_cookie(PRE_COOKIE, path="/signin")
    return response


WRONG = "用户名或密码错误 (wrong username or password)"


def wait_message(wait_s: int, locked: bool) -> str:
    if locked:
        minutes = max(1, (wait_s + 59) // 60)
        return f"登录失败次数过多，账号已临时锁定，请 {minutes} 分钟后再试 (too many failed attempts: locked, try again in {minutes} min)"
    return f"登录失败次数过多，请 {wait_s} 秒后再试 (too many failed attempts: try again in {wait_s} s)"


async def _failed(conn: AsyncConnection, request: Request, *, name: str, name_key: str, account_id: str | None,
                  reason: str) -> str:
    """Record a failed attempt (and the lock it may cause); returns the message to show."""
    tenant = await _home_tenant(conn, account_id)
    count = await record_attempt(conn, [name_key, address_key(client_address(request))], False)
    await _audit(conn, tenant, name, "signin-failed", "denied", request, reason=reason, failures=count)
    if account_id:
        wait, locked = wait_after(count)
        await conn.execute(update(account).where(account.c.id == account_id).values(
            failed_logins=count, locked_until=now_us() + wait * _S if locked else None))
    if count == LOCK_AFTER:
        await _audit(conn, tenant, name, "signin-locked", "denied", request, failures=count, minutes=LOCK_MINUTES)
    wait, locked = wait_after(count)
    if wait:
        return wait_message(wait, locked)
    return WRONG if reason == "password" else "验证码错误 (wrong code)"


# --------------------------------------------------------------- staff: password
@router.get("/signin")
async def signin_form(request: Request, next: str = "/"):
    user = await sessions.current_user(request)
    if user is not None:
        return _redirect(safe_next(next))
    token = _pre_token(request)
    return _with_pre(page(request, "identity/signin.html", next=safe_next(next), pre_token=token, error=None,
                          username=""), request, token)


@router.post("/signin")
async def signin_submit(request: Request, username: str = Form(""), password: str = Form(""),
                        next: str = Form("/"), csrf_token: str = Form("")):
    next_path = safe_next(next)
    token = _pre_token(request)

    def again(error: str, status: int) -> Response:
        return _with_pre(page(request, "identity/signin.html", status, next=next_path, pre_token=token, error=error,
                              username=username[:100]), request, token)

    if not _pre_ok(request, csrf_token):
        return again("页面已过期，请重新提交 (the form expired: submit it again)", 403)
    username = username.strip()[:100]
    name_key, addr_key = user_key(username), address_key(client_address(request))
    async with unit_of_work(get_engine(), write=False) as conn:
        wait, locked = await throttled(conn, name_key, addr_key)
        row = (await conn.execute(select(account).where(account.c.username == username,
                                                        account.c.kind == "staff"))).first() if username else None
    if wait:
        async with unit_of_work(get_engine()) as conn:
            await _audit(conn, await _home_tenant(conn, row.id if row else None), username, "signin-failed", "denied",
                         request, reason="locked" if locked else "throttled")
        return again(wait_message(wait, locked), 429)
    ok = verify_password(row.password_hash if row else None, password)  # same time whether or not it exists
    async with unit_of_work(get_engine()) as conn:
        if not ok:
            message = await _failed(conn, request, name=username, name_key=name_key,
                                    account_id=row.id if row else None, reason="password")
            return again(message, 401)
        tenant = await _home_tenant(conn, row.id)
        if row.status != "active":
            await _audit(conn, tenant, username, "signin-failed", "denied", request, reason=row.status)
            message = ("账号正在等待审核，审核通过后才能登录 (this account is awaiting approval and cannot sign in yet)"
                       if row.status == "pending" else "账号已停用，请联系管理员 (this account is disabled)")
            return again(message, 403)
        if tenant is None:
            await _audit(conn, None, username, "signin-failed", "denied", request, reason="no-tenant")
            return again("账号尚未加入任何机构，请联系管理员 (the account belongs to no organisation)", 403)
        if needs_rehash(row.password_hash):  # hashing parameters raised since it was stored (RFC 9106 §4)
            await conn.execute(update(account).where(account.c.id == row.id).values(password_hash=hash_password(password)))
        stage = sessions.MFA if await totp.has_second_factor(conn, row.id) else sessions.ENROL
        cookie, _ = await sessions.open_session(
            conn, row.id, tenant, client_address=client_address(request), user_agent=request.headers.get("user-agent"),
            stage=stage, next_path=next_path, replaces=request.cookies.get(sessions.COOKIE))
    return _signed_in_redirect(request, cookie, "/signin/totp" if stage == sessions.MFA else "/signin/enrol")


async def _pending(request: Request, stage: str):
    """The half-finished sign-in of this browser at `stage`, with its account; else None."""
    async with unit_of_work(get_engine()) as conn:
        info = await sessions.load_session(conn, request.cookies.get(sessions.COOKIE))
        if info is None or info.stage != stage:
            return None, None
        acct = await accounts.get_account(conn, info.account_id)
    return info, acct


async def _finish(conn: AsyncConnection, request: Request, info, acct, factor: str) -> str:
    """Second factor accepted: the half-finished session gives way to a new, signed-in one."""
    await record_attempt(conn, [user_key(acct.username or ""), address_key(client_address(request))], True)
    await conn.execute(update(account).where(account.c.id == acct.id).values(failed_logins=0, locked_until=None))
    cookie, _ = await sessions.open_session(
        conn, acct.id, info.tenant, client_address=client_address(request),
        user_agent=request.headers.get("user-agent"), replaces=request.cookies.get(sessions.COOKIE))
    roles = (await accounts.memberships(conn, acct.id)).get(info.tenant, ())
    await _audit(conn, info.tenant, acct.username or acct.id, "signin", "ok", request, role=",".join(roles) or None,
                 factor=factor, kind=acct.kind)
    return cookie


# --------------------------------------------------------------- staff: TOTP
@router.get("/signin/totp")
async def totp_form(request: Request):
    info, acct = await _pending(request, sessions.MFA)
    if info is None:
        return _redirect("/signin")
    return page(request, "identity/signin_totp.html", pending_csrf=info.csrf_token, error=None, name=acct.display_name)


@router.post("/signin/totp")
async def totp_submit(request: Request, code: str = Form(""), csrf_token: str = Form("")):
    info, acct = await _pending(request, sessions.MFA)
    if info is None:
        return _redirect("/signin")
    if not sessions.csrf_matches(info.csrf_token, csrf_token):
        return page(request, "identity/signin_totp.html", 403, pending_csrf=info.csrf_token, name=acct.display_name,
                    error="页面已过期，请重新提交 (the form expired: submit it again)")
    name_key = user_key(acct.username or "")
    async with unit_of_work(get_engine(), write=False) as conn:
        wait, locked = await throttled(conn, name_key, address_key(client_address(request)))
    async with unit_of_work(get_engine()) as conn:
        if wait:
            await _audit(conn, info.tenant, acct.username, "signin-failed", "denied", request,
                         reason="locked" if locked else "throttled")
            error = wait_message(wait, locked)
        else:
            factor = await totp.check_second_factor(conn, acct.id, code)
            if factor:
                cookie = await _finish(conn, request, info, acct, factor)
                return _signed_in_redirect(request, cookie, safe_next(info.next_path))
            error = await _failed(conn, request, name=acct.username or acct.id, name_key=name_key,
                                  account_id=acct.id, reason="second-factor")
    return page(request, "identity/signin_totp.html", 429 if wait else 401, pending_csrf=info.csrf_token,
                name=acct.display_name, error=error)


# --------------------------------------------------------------- staff: TOTP enrolment
async def _enrol_page(request: Request, info, acct, error: str | None = None, status: int = 200):
    async with unit_of_work(get_engine()) as conn:
        secret = await totp.pending_secret(conn, acct.id)
    uri = totp.provisioning_uri(secret, acct.username or acct.id)
    spaced = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
    return page(request, "identity/signin_enrol.html", status, pending_csrf=info.csrf_token, qr_svg=totp.qr_svg(uri),
                secret=secret, secret_spaced=spaced, uri=uri, name=acct.display_name, error=error)


@router.get("/signin/enrol")
async def enrol_form(request: Request):
    info, acct = await _pending(request, sessions.ENROL)
    if info is None:
        return _redirect("/signin")
    return await _enrol_page(request, info, acct)


@router.post("/signin/enrol")
async def enrol_submit(request: Request, code: str = Form(""), csrf_token: str = Form("")):
    info, acct = await _pending(request, sessions.ENROL)
    if info is None:
        return _redirect("/signin")
    if not sessions.csrf_matches(info.csrf_token, csrf_token):
        return await _enrol_page(request, info, acct, "页面已过期，请重新提交 (the form expired: submit it again)", 403)
    async with unit_of_work(get_engine(), write=False) as conn:
        wait, locked = await throttled(conn, user_key(acct.username or ""), address_key(client_address(request)))
    if wait:
        return await _enrol_page(request, info, acct, wait_message(wait, locked), 429)
    async with unit_of_work(get_engine()) as conn:
        codes = await totp.confirm_enrolment(conn, acct.id, code)
        if codes is None:
            error = await _failed(conn, request, name=acct.username or acct.id, name_key=user_key(acct.username or ""),
                                  account_id=acct.id, reason="second-factor")
        else:
            await _audit(conn, info.tenant, acct.username, "totp-enrolled", "ok", request, recovery_codes=len(codes))
            cookie = await _finish(conn, request, info, acct, "totp-enrolment")
    if codes is None:
        return await _enrol_page(request, info, acct, error, 401)
    response = page(request, "identity/signin_recovery.html", codes=codes, next=safe_next(info.next_path),
                    name=acct.display_name)
    sessions.set_session_cookie(response, request, cookie)
    response.delete_cookie(PRE_COOKIE, path="/signin")
    return response


# --------------------------------------------------------------- patients
async def patient_tenants(conn: AsyncConnection) -> list[accounts.Tenant]:
    return [t for t in await accounts.list_tenants(conn) if t.kind in ("hospital", "clinic") and t.active]


async def find_patient_record(conn: AsyncConnection, tenant: str, phone: str) -> str | None:
    """`Patient/<id>` of the one Patient of `tenant` with this mobile number (Patient?telecom=),
    or None when there is none or more than one (then the hospital links it at booking)."""
    from yiyun.fhir.repository import FhirRepository

    repo = FhirRepository(conn, RequestContext(tenant=tenant, subject="system", purpose="TREAT"))
    # the store's phone index ignores blanks, dashes and +86, however the number was written
    found = {r.res_id for r in await repo.find("Patient", [("telecom", phone)])}
    return f"Patient/{next(iter(found))}" if len(found) == 1 else None


async def _patient_page(request: Request, *, status: int = 200, error: str | None = None, notice: str | None = None,
                        phone: str = "", tenant: str = "", step: str = "phone", next: str = "/"):
    async with unit_of_work(get_engine(), write=False) as conn:
        tenants = await patient_tenants(conn)
    token = _pre_token(request)
    response = page(request, "identity/signin_patient.html", status, tenants=tenants, error=error, notice=notice,
                    phone=phone, tenant=tenant or (tenants[0].slug if tenants else ""), step=step, next=safe_next(next),
                    pre_token=token, outbox=sms.outbox_enabled())
    return _with_pre(response, request, token)


@router.get("/signin/patient")
async def patient_form(request: Request, next: str = "/", tenant: str = ""):
    if await sessions.current_user(request) is not None:
        return _redirect(safe_next(next))
    return await _patient_page(request, next=next, tenant=tenant)


async def _check_tenant(conn: AsyncConnection, slug: str) -> str:
    if slug not in {t.slug for t in await patient_tenants(conn)}:
        raise BadRequest("请选择就诊机构 (choose a hospital)")
    return slug


@router.post("/signin/patient/code")
async def patient_send_code(request: Request, phone: str = Form(""), tenant: str = Form(""), next: str = Form("/"),
                            csrf_token: str = Form("")):
    form = {"phone": phone[:20], "tenant": tenant, "next": next}
    if not _pre_ok(request, csrf_token):
        return await _patient_page(request, status=403, error="页面已过期，请重新提交 (the form expired: submit it again)", **form)
    try:
        digits = accounts.check_mobile(phone)
        async with unit_of_work(get_engine()) as conn:
            await _check_tenant(conn, tenant)
            issued = await sms.issue_code(conn, digits, client_address=client_address(request))
            await _audit(conn, tenant, "phone:" + sms.mask_phone(digits), "sms-code-issued",
                         "ok" if issued.ok else "denied", request, reason=issued.reason or None)
    except YiyunError as err:
        return await _patient_page(request, status=err.status, error=err.message, **form)
    if not issued.ok:
        message = (f"验证码已发送，请 {issued.wait_s} 秒后再重新获取 (a code was just sent: wait {issued.wait_s} s)"
                   if issued.reason == "cooldown" else
                   "获取验证码太频繁，请一小时后再试 (too many codes requested: try again in an hour)")
        return await _patient_page(request, status=429, error=message, step="code", **form)
    return await _patient_page(request, step="code", notice="验证码已发送，5 分钟内有效 (code sent, valid for 5 minutes)",
                               **form)


async def _patient_signed_in(conn: AsyncConnection, request: Request, digits: str, tenant: str, factor: str,
                             acct: accounts.Account | None) -> str:
    if acct is None:
        ref = await find_patient_record(conn, tenant, digits)
        acct = await accounts.create_patient_account(conn, digits, "", tenant=tenant, fhir_ref=ref)
    elif await accounts.patient_link(conn, acct.id, tenant) is None:
        await accounts.link_patient_account(conn, acct.id, tenant, await find_patient_record(conn, tenant, digits))
    await record_attempt(conn, [user_key(digits), address_key(client_address(request))], True)
    cookie, _ = await sessions.open_session(
        conn, acct.id, tenant, client_address=client_address(request), user_agent=request.headers.get("user-agent"),
        replaces=request.cookies.get(sessions.COOKIE))
    await _audit(conn, tenant, acct.id, "signin", "ok", request, role="patient", factor=factor, kind="patient")
    return cookie


@router.post("/signin/patient")
async def patient_submit(request: Request, phone: str = Form(""), code: str = Form(""), password: str = Form(""),
                         tenant: str = Form(""), next: str = Form("/"), csrf_token: str = Form("")):
    """Phone + SMS code (field `code`), or phone + password (field `password`)."""
    step = "password" if password else "code"
    form = {"phone": phone[:20], "tenant": tenant, "next": next, "step": step}
    if not _pre_ok(request, csrf_token):
        return await _patient_page(request, status=403, error="页面已过期，请重新提交 (the form expired: submit it again)", **form)
    try:
        digits = accounts.check_mobile(phone)
        async with unit_of_work(get_engine(), write=False) as conn:
            await _check_tenant(conn, tenant)
            wait, locked = await throttled(conn, user_key(digits), address_key(client_address(request)))
            acct = await accounts.find_by_phone(conn, digits)
            stored_hash = None
            if acct is not None:
                stored_hash = (await conn.execute(select(account.c.password_hash).where(account.c.id == acct.id))).scalar()
    except YiyunError as err:
        return await _patient_page(request, status=err.status, error=err.message, **form)
    actor = acct.id if acct else "phone:" + sms.mask_phone(digits)
    if wait:
        async with unit_of_work(get_engine()) as conn:
            await _audit(conn, tenant, actor, "signin-failed", "denied", request, reason="locked" if locked else "throttled")
        return await _patient_page(request, status=429, error=wait_message(wait, locked), **form)
    if password:
        ok = verify_password(stored_hash, password)
        result = "ok" if ok else "wrong"
    async with unit_of_work(get_engine()) as conn:
        if not password:
            result = await sms.check_code(conn, digits, code)
        if result == "ok" and acct is not None and acct.status != "active":
            await _audit(conn, tenant, actor, "signin-failed", "denied", request, reason=acct.status)
            return await _patient_page(request, status=403, error="账号已停用，请联系医院 (this account is disabled)", **form)
        if result == "ok":
            cookie = await _patient_signed_in(conn, request, digits, tenant, "password" if password else "sms", acct)
            return _signed_in_redirect(request, cookie, safe_next(next))
        message = await _failed(conn, request, name=actor, name_key=user_key(digits),
                                account_id=acct.id if acct else None, reason="password" if password else "sms-code")
    if password:
        message = message if message != WRONG else "手机号或密码错误 (wrong phone number or password)"
    elif result == "expired":
        message = "验证码已过期或未获取，请重新获取 (the code expired or was never sent: get a new one)"
    elif result == "tries":
        message = "验证码错误次数过多，请重新获取 (too many wrong tries: get a new code)"
    return await _patient_page(request, status=401, error=message, **form)


# --------------------------------------------------------------- sign-out and the account page
async def _require_user(request: Request) -> sessions.SignedIn:
    user = await sessions.current_user(request)
    if user is None:
        raise sessions.SignInRequired(request.url.path)
    return user


@router.post("/signout")
async def signout(request: Request):
    user = await sessions.current_user(request)
    if user is not None:
        await sessions.check_csrf(request, user)
        async with unit_of_work(get_engine()) as conn:
            await sessions.close_session(conn, request.cookies.get(sessions.COOKIE))
            await _audit(conn, user.context.tenant, user.context.subject, "signout", "ok", request,
                         role=",".join(user.context.roles) or None, scope="this")
    response = _redirect("/signin/patient" if user is not None and user.kind == "patient" else "/signin")
    sessions.clear_session_cookie(response, request)
    return response


async def _tenant_names(conn: AsyncConnection, account_id: str) -> list[tuple[str, str, tuple[str, ...]]]:
    rows = await conn.execute(select(membership.c.tenant, membership.c.roles, tenant_table.c.name)
                              .join(tenant_table, tenant_table.c.slug == membership.c.tenant)
                              .where(membership.c.account_id == account_id).order_by(membership.c.tenant))
    return [(r.tenant, r.name, tuple(x for x in r.roles.split(",") if x)) for r in rows]


@router.get("/account")
async def account_page(request: Request, done: str = ""):
    user = await _require_user(request)
    return await _account_page(request, user, done=done)


async def _account_page(request: Request, user: sessions.SignedIn, *, done: str = "", error: str | None = None,
                        status: int = 200) -> HTMLResponse:
    async with unit_of_work(get_engine(), write=False) as conn:
        active = await sessions.list_sessions(conn, user.account_id)
        tenants = await _tenant_names(conn, user.account_id)
        phone = await accounts.account_phone(conn, user.account_id) if user.kind == "patient" else None
        has_password = bool((await conn.execute(select(account.c.password_hash)
                                                 .where(account.c.id == user.account_id))).scalar())
        codes_left = await totp.recovery_codes_left(conn, user.account_id) if user.kind == "staff" else None
    return page(request, "identity/account.html", status, user=user, sessions=active, tenants=tenants,
                phone=sms.mask_phone(phone) if phone else None, has_password=has_password, codes_left=codes_left,
                this_session=user.session.id_hash, done=done, error=error)


@router.post("/account/signout-everywhere")
async def signout_everywhere(request: Request):
    user = await _require_user(request)
    await sessions.check_csrf(request, user)
    async with unit_of_work(get_engine()) as conn:
        count = await sessions.close_all_sessions(conn, user.account_id)
        await _audit(conn, user.context.tenant, user.context.subject, "signout", "ok", request,
                     role=",".join(user.context.roles) or None, scope="everywhere", sessions=count)
    response = _redirect("/signin/patient" if user.kind == "patient" else "/signin")
    sessions.clear_session_cookie(response, request)
    return response


@router.post("/account/tenant")
async def switch_tenant(request: Request, tenant: str = Form("")):
    user = await _require_user(request)
    await sessions.check_csrf(request, user)
    async with unit_of_work(get_engine()) as conn:
        if not await sessions.switch_tenant(conn, request.cookies.get(sessions.COOKIE, ""), tenant):
            return await _account_page(request, user, status=400,
                                       error="您不属于该机构 (you are not a member of that organisation)")
        await _audit(conn, tenant, user.context.subject, "tenant-switched", "ok", request,
                     role=",".join(user.context.roles) or None, previous=user.context.tenant)
    return _redirect("/account?done=tenant")


@router.post("/account/password")
async def change_password(request: Request, password: str = Form(""), password2: str = Form("")):
    """Patients set (or change) a password, to sign in with phone + password."""
    user = await _require_user(request)
    await sessions.check_csrf(request, user)
    if user.kind != "patient":
        return await _account_page(request, user, status=400,
                                   error="医务人员的密码由管理员重置 (staff passwords are reset by an administrator)")
    if password != password2:
        return await _account_page(request, user, status=400, error="两次输入的密码不一致 (the passwords differ)")
    async with unit_of_work(get_engine()) as conn:
        try:
            await accounts.set_password(conn, user.account_id, password)
        except BadRequest as err:
            return await _account_page(request, user, status=400, error=err.message)
        await _audit(conn, user.context.tenant, user.context.subject, "password-changed", "ok", request, role="patient")
    return _redirect("/account?done=password")


@router.post("/account/recovery-codes")
async def new_recovery_codes(request: Request, code: str = Form("")):
    """Staff replace their recovery codes (all old ones stop working); a current TOTP code
    proves the second factor is still in hand (NIST SP 800-63B §6.1.2.3 re-authentication)."""
    user = await _require_user(request)
    await sessions.check_csrf(request, user)
    if user.kind != "staff":
        return await _account_page(request, user, status=400, error="仅工作人员账号使用恢复码 (staff accounts only)")
    name_key = user_key(user.username or "")
    async with unit_of_work(get_engine(), write=False) as conn:
        wait, locked = await throttled(conn, name_key, address_key(client_address(request)))
    if wait:
        return await _account_page(request, user, status=429, error=wait_message(wait, locked))
    async with unit_of_work(get_engine()) as conn:
        factor = await totp.check_second_factor(conn, user.account_id, code) if code.strip().isdigit() else None
        if factor == "totp":
            codes = await totp.new_recovery_codes(conn, user.account_id)
            await _audit(conn, user.context.tenant, user.context.subject, "recovery-codes-issued", "ok", request,
                         role=",".join(user.context.roles) or None, count=len(codes))
        else:
            codes = None
            await record_attempt(conn, [name_key, address_key(client_address(request))], False)
            await _audit(conn, user.context.tenant, user.context.subject, "recovery-codes-issued", "denied", request,
                         role=",".join(user.context.roles) or None, reason="second-factor")
    if codes is None:
        return await _account_page(request, user, status=401, error="验证码错误 (wrong code)")
    return page(request, "identity/signin_recovery.html", codes=codes, next="/account", name=user.display_name)


# --------------------------------------------------------------- development SMS outbox
@router.get("/dev/sms-outbox")
async def sms_outbox(request: Request):
    if not sms.outbox_enabled():
        raise NotFound("未启用开发短信发件箱 (the development SMS outbox is off)")
    async with unit_of_work(get_engine(), write=False) as conn:
        messages = await sms.outbox_messages(conn)
    return page(request, "identity/outbox.html", messages=messages)
