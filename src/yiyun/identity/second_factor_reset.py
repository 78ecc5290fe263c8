"""Lost second factor: a hospital administrator resets a staff member's two-step verification.

A staff member whose phone (authenticator app) and recovery codes are both gone cannot sign
in. After checking who they are (in person, with their staff card: NIST SP 800-63B §6.1.2.3
"replacement of a lost authenticator" requires the same identity proofing as enrolment), an
administrator of their organisation resets the factor:

- the administrator gives a reason (4 to 500 characters), written to the audit chain with
  the reset (action `second-factor-reset`, resource `Account/<id>`), in the same transaction;
- the TOTP secret and every recovery code are deleted, so the next sign-in asks to enrol
  a new authenticator (`yiyun.identity.signin`: no confirmed factor → the enrolment stage);
- every web session of the account ends and every app authorisation (OAuth grant, its
  refresh and access tokens) is revoked: whoever held the lost phone is signed out
  everywhere (GB/T 22239-2019 8.1.4.1 "身份鉴别", 8.1.4.2 "访问控制");
- a security event `second-factor-reset` (severity high) is raised for the organisation's
  privacy officers from that audit entry (`yiyun.identity.security_events`): a reset is the
  usual way to take over an account by talking an administrator into it.

Only an administrator (role `admin`) of an organisation the account belongs to may reset it;
nobody resets their own (the second factor exists to stop one person holding a password
from acting alone). Another organisation's account answers 404, as an unknown one does.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, Conflict, Forbidden, NotFound, YiyunError
from yiyun.core.logging import get_logger
from yiyun.core.templating import render
from yiyun.fhir.model import now_us
from yiyun.identity import sessions, totp
from yiyun.identity.audit import AuditEntry, append
from yiyun.identity.auth import AuthContext, require_subject
from yiyun.identity.oauth_tables import oauth_grant
from yiyun.identity.signin_tables import recovery_code
from yiyun.identity.signin_tables import totp as totp_table
from yiyun.identity.tables import account, membership

log = get_logger("yiyun.signin")

ACTION = "second-factor-reset"
ADMIN_ROLE = "admin"
MIN_REASON, MAX_REASON = 4, 500  # "手机丢失" is a reason; an empty click is not
ADMINS_ONLY = "仅医院管理员可以重置两步验证 (hospital administrators only)"
NOT_FOUND = "未找到该工作人员账号 (staff account not found)"


@dataclass(frozen=True)
class StaffFactor:
    """A staff account of the tenant and the state of its second factor."""

    account_id: str
    username: str | None
    name: str
    roles: tuple[str, ...]
    status: str
    second_factor: bool
    recovery_codes_left: int

    def as_json(self) -> dict:
        return {"id": self.account_id, "username": self.username, "name": self.name, "roles": list(self.roles),
                "status": self.status, "second_factor": self.second_factor,
                "recovery_codes_left": self.recovery_codes_left}


@dataclass(frozen=True)
class ResetOutcome:
    account_id: str
    username: str | None
    sessions_closed: int
    grants_revoked: int
    reset_ts: int
    grant_ids: tuple[str, ...] = ()

    def as_json(self) -> dict:
        return {"id": self.account_id, "username": self.username, "sessions_closed": self.sessions_closed,
                "grants_revoked": self.grants_revoked, "reset_ts": self.reset_ts, "must_enrol": True}


def require_admin(ctx: AuthContext) -> None:
    if ADMIN_ROLE not in ctx.roles:
        raise Forbidden(ADMINS_ONLY)


def check_reason(reason: object) -> str:
    text = " ".join(reason.split()) if isinstance(reason, str) else ""
    if not MIN_REASON <= len(text) <= MAX_REASON:
        raise BadRequest(f"请填写重置理由（{MIN_REASON}–{MAX_REASON} 个字），例如“手机丢失，已核验工作证” "
                         f"(give the reason, {MIN_REASON}-{MAX_REASON} characters)")
    return text


def _is_self(ctx: AuthContext, row) -> bool:
    return row.id == getattr(ctx, "account_id", None) or (row.username is not None and row.username == ctx.subject)


async def list_staff(conn: AsyncConnection, tenant: str) -> list[StaffFactor]:
    """The tenant's staff accounts with their second-factor state (two queries)."""
    rows = (await conn.execute(
        select(account.c.id, account.c.username, account.c.display_name, account.c.status, membership.c.roles,
               totp_table.c.confirmed_ts)
        .select_from(membership.join(account, account.c.id == membership.c.account_id)
                     .outerjoin(totp_table, totp_table.c.account_id == account.c.id))
        .where(membership.c.tenant == tenant, account.c.kind == "staff")
        .order_by(account.c.display_name, account.c.username).limit(2000)
    )).all()
    left: dict[str, int] = {}
    ids = [r.id for r in rows]
    for i in range(0, len(ids), 500):
        for code in await conn.execute(select(recovery_code.c.account_id).where(
                recovery_code.c.account_id.in_(ids[i:i + 500]), recovery_code.c.used_ts.is_(None))):
            left[code.account_id] = left.get(code.account_id, 0) + 1
    return [StaffFactor(r.id, r.username, r.display_name, tuple(x for x in r.roles.split(",") if x), r.status,
                        r.confirmed_ts is not None, left.get(r.id, 0)) for r in rows]


async def _target(conn: AsyncConnection, tenant: str, account_id: str):
    """The staff account `account_id` if it belongs to `tenant` (else 404: its existence elsewhere
    is not disclosed)."""
    row = (await conn.execute(
        select(account.c.id, account.c.username, account.c.display_name, account.c.kind)
        .select_from(account.join(membership, membership.c.account_id == account.c.id))
        .where(account.c.id == account_id, membership.c.tenant == tenant)
    )).first()
    if row is None or row.kind != "staff":
        raise NotFound(NOT_FOUND)
    return row


async def _revoke_app_grants(conn: AsyncConnection, account_id: str) -> list[str]:
    from yiyun.identity.oauth import grants

    ids = list((await conn.execute(select(oauth_grant.c.grant_id).where(
        oauth_grant.c.account_id == account_id, oauth_grant.c.revoked_ts.is_(None)))).scalars())
    for grant_id in ids:
        await grants.revoke_grant(conn, grant_id)
    return ids


async def reset_second_factor(conn: AsyncConnection, ctx: AuthContext, account_id: str, reason: object) -> ResetOutcome:
    """Reset the second factor of the tenant's staff account `account_id` (in `conn`'s write
    transaction, audit entry included). Call `after_reset` once it has committed."""
    require_admin(ctx)
    text = check_reason(reason)
    target = await _target(conn, ctx.tenant, (account_id or "")[:36])
    if _is_self(ctx, target):
        raise Forbidden("不能重置自己的两步验证，请联系其他管理员 (you cannot reset your own second factor: "
                        "ask another administrator)")
    enrolled = (await conn.execute(select(totp_table.c.account_id).where(totp_table.c.account_id == target.id))).first()
    codes = (await conn.execute(select(recovery_code.c.account_id).where(recovery_code.c.account_id == target.id)
                                .limit(1))).first()
    if enrolled is None and codes is None:
        raise Conflict("该账号尚未设置两步验证，下次登录时会要求设置 (no second factor to reset: it is set up at "
                       "the next sign-in)")
    await totp.remove_second_factor(conn, target.id)
    closed = await sessions.close_all_sessions(conn, target.id)
    revoked = await _revoke_app_grants(conn, target.id)
    # a lost phone may have been used to guess: the next sign-in starts with a clean count
    await conn.execute(update(account).where(account.c.id == target.id).values(failed_logins=0, locked_until=None))
    now = now_us()
    await append(conn, [AuditEntry(
        tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action=ACTION,
        resource_type="Account", resource_id=target.id, outcome="ok", purpose="SYSADMIN",
        client_address=ctx.client_address, ts=now,
        detail={"reason": text, "account": target.username or target.id, "name": target.display_name,
                "sessions_closed": closed, "grants_revoked": len(revoked)},
    )])
    return ResetOutcome(target.id, target.username, closed, len(revoked), now, tuple(revoked))


async def record_refusal(ctx: AuthContext, account_id: str, error: YiyunError) -> None:
    """A refused reset is in the audit chain too (who tried, on which account, why refused)."""
    async with unit_of_work(get_engine()) as conn:
        await append(conn, [AuditEntry(
            tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action=ACTION,
            resource_type="Account", resource_id=(account_id or "")[:64] or None, outcome="denied",
            purpose="SYSADMIN", client_address=ctx.client_address, detail={"reason": error.message[:200]},
        )])


async def after_reset(outcome: ResetOutcome, tenant: str) -> None:
    """Once committed: this process refuses the revoked tokens at once (the others within a
    second, `yiyun.identity.oauth.revocation`), and the security event is raised now rather
    than at the next periodic scan."""
    from yiyun.identity.oauth import grants, revocation
    from yiyun.identity.security_events import scan

    until = now_us() + grants.access_lifetime_us() + 300 * grants.SECOND
    for grant_id in outcome.grant_ids:
        revocation.remember(grant_id, until)
    try:
        await scan(get_engine(), tenant=tenant)
    except Exception:  # the periodic scan raises it from the audit entry, which is committed
        log.exception("second_factor_reset_scan_failed", tenant=tenant)


async def reset(ctx: AuthContext, account_id: str, reason: object) -> ResetOutcome:
    """The whole reset, committed, with its follow-ups; refusals are audited."""
    try:
        async with unit_of_work(get_engine()) as conn:
            outcome = await reset_second_factor(conn, ctx, account_id, reason)
    except (BadRequest, Forbidden, NotFound, Conflict) as exc:
        await record_refusal(ctx, account_id, exc)
        raise
    await after_reset(outcome, ctx.tenant)
    return outcome


# ------------------------------------------------------------------ JSON API
class ResetIn(BaseModel):
    reason: str = Field(default="", max_length=2000)


api = APIRouter(prefix="/api/identity", tags=["identity"])


@api.get("/staff/second-factors")
async def get_staff_factors(ctx: AuthContext = Depends(require_subject)) -> dict:
    """The organisation's staff accounts and whether each has a second factor (admins)."""
    require_admin(ctx)
    async with unit_of_work(get_engine(), write=False) as conn:
        staff = await list_staff(conn, ctx.tenant)
    return {"accounts": [s.as_json() for s in staff]}


@api.post("/staff/{account_id}/second-factor/reset")
async def post_reset(account_id: str, body: ResetIn, ctx: AuthContext = Depends(require_subject)) -> dict:
    """Reset a staff member's lost second factor (admins of the account's organisation)."""
    return (await reset(ctx, account_id, body.reason)).as_json()


# ------------------------------------------------------------------ pages
pages = APIRouter(include_in_schema=False)


async def _admin_page_user(request: Request) -> AuthContext:
    ctx = await sessions.require_page_user(request)
    if request.method == "POST":
        await sessions.check_csrf(request, await sessions.current_user(request))
    if ADMIN_ROLE not in ctx.roles:
        raise Forbidden(ADMINS_ONLY)
    return ctx


async def _page(request: Request, ctx: AuthContext, *, error: str | None = None, done: str | None = None,
                status: int = 200, form: dict | None = None):
    async with unit_of_work(get_engine(), write=False) as conn:
        staff = await list_staff(conn, ctx.tenant)
    response = render(request, "identity/second_factor.html", staff=staff, error=error, done=done,
                      me=getattr(ctx, "account_id", None), form=form or {})
    response.status_code = status
    return response


@pages.get("/admin/second-factor")
async def second_factor_page(request: Request):
    ctx = await _admin_page_user(request)
    return await _page(request, ctx, done=request.query_params.get("done"))


@pages.post("/admin/second-factor/{account_id}/reset")
async def second_factor_reset_form(request: Request, account_id: str):
    ctx = await _admin_page_user(request)
    form = await request.form()
    reason = form.get("reason")
    try:
        outcome = await reset(ctx, account_id, reason if isinstance(reason, str) else "")
    except YiyunError as exc:
        return await _page(request, ctx, error=exc.message, status=exc.status,
                           form={"account": account_id, "reason": reason if isinstance(reason, str) else ""})
    return RedirectResponse(f"/admin/second-factor?done={outcome.username or outcome.account_id}", status_code=303)


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (done by `yiyun.identity.web.install`)."""
    app.include_router(api)
    app.include_router(pages)


__all__ = ["ACTION", "ResetOutcome", "StaffFactor", "check_reason", "list_staff", "reset", "reset_second_factor"]
