"""Pages of the audit trail: the auditors' audit page (filters, paging, chain status, CSV),
security events for privacy officers (with their unread count, and the live alerts socket
`/ws/security-alerts` behind the badge of every staff page), and the patient's "谁看过我的病历"
(mobile).

They read through the same functions as the JSON API (`yiyun.identity.audit_api`) and are
audited the same way: every page view of the log is an `audit-read` entry.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request, WebSocket
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from yiyun.core.db import get_engine, is_sqlite, unit_of_work
from yiyun.core.realtime import get_broker, relay_to_websocket
from yiyun.core.errors import BadRequest, NotFound
from yiyun.identity.audit import query, verify
from yiyun.identity.audit_api import (
    LOCAL_TZ, SECURITY_READ_ROLES, SECURITY_WRITE_ROLES, _filters, access_log, actor_names, may_read_audit,
)
from yiyun.identity.audit_tables import audit_chain_head
from yiyun.identity import security_alerts
from yiyun.identity.auth import AuthContext, require_subject
from yiyun.identity.security_events import KINDS, STATUSES, acknowledge, list_events
from yiyun.identity.sessions import (
    WebSocketUnauthorized, check_csrf, current_user, require_page_user, require_patient_page_user, websocket_context,
)
from yiyun.identity.web import render

router = APIRouter(include_in_schema=False)

FILTER_NAMES = ("since", "until", "actor", "patient", "action", "outcome", "resource_type", "resource_id")
OUTCOMES = ("ok", "denied", "not-found", "gone", "error")
COMMON_ACTIONS = ("read", "search", "create", "update", "delete", "export", "break-glass", "consent", "signin",
                  "signin-failed", "token-rejected", "request-refused", "audit-read")


# Message ids of the security event words (translated in auditing.po); plain "open" or
# "high" would collide with other modules' messages.
EVENT_LABELS = {
    "open": "Awaiting review", "acknowledged": "Acknowledged", "closed": "Closed", "all": "All events",
    "failed-signins": "Repeated failed sign-ins", "many-patients": "Unusually many patients",
    "break-glass": "Emergency access (break-glass)", "after-hours": "Access outside working hours",
    "second-factor-reset": "Two-step verification reset by an administrator",
    "high": "High severity", "medium": "Medium severity", "low": "Low severity",
}


def local_time(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")


def iso_local(text: str) -> str:
    """An ISO UTC instant of the JSON API, on the region's wall clock."""
    d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return d.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


async def _page_audit(request: Request, ctx: AuthContext, outcome: str, detail: dict | None = None) -> None:
    await request.app.state.policy.recorder.record(None, ctx, "audit-read", "AuditEvent", None, outcome,
                                                   {"page": request.url.path, **(detail or {})})


def _forbidden(request: Request, message: str) -> HTMLResponse:
    response = render(request, "identity/audit_forbidden.html", message=message)
    response.status_code = 403
    return response


@router.get("/audit")
async def audit_page(request: Request, ctx: AuthContext = Depends(require_page_user)) -> Response:
    if not may_read_audit(ctx):
        await _page_audit(request, ctx, "denied")
        return _forbidden(request, "仅审计员或隐私官可以查看审计日志 (auditor or privacy officer only)")
    params = {k: (request.query_params.get(k) or "").strip()[:256] for k in FILTER_NAMES}
    before_raw = request.query_params.get("before") or ""
    before = int(before_raw) if before_raw.isdigit() and len(before_raw) < 19 else None
    error = None
    try:
        q = _filters(**{k: v or None for k, v in params.items()})
    except BadRequest as exc:
        q, error = None, exc.message
    records, names, more = [], {}, False
    engine = get_engine()
    async with unit_of_work(engine, write=False) as conn:
        if q is not None:
            records = await query(conn, tenant=ctx.tenant, limit=51, before_seq=before, **q)
            more = len(records) > 50
            records = records[:50]
            names = await actor_names(conn, {r.actor for r in records}, ctx.tenant)
        head = (await conn.execute(select(audit_chain_head).where(audit_chain_head.c.tenant == ctx.tenant))).first()
    chain = None
    if request.query_params.get("verify") == "1":
        conn = await engine.connect()
        try:
            if not is_sqlite(engine):
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                chain = await verify(conn, tenant=ctx.tenant, max_problems=20)
        finally:
            await conn.close()
    await _page_audit(request, ctx, "ok", {k: v for k, v in params.items() if v} or None)
    shown = {k: v for k, v in params.items() if v}
    rows = [{
        "seq": r.seq, "time": local_time(r.ts), "actor": r.actor, "actor_name": names.get(r.actor), "role": r.role,
        "action": r.action, "resource": r.resource, "patient": r.patient, "purpose": r.purpose, "outcome": r.outcome,
        "client_address": r.client_address, "detail": r.detail,
    } for r in records]
    return render(
        request, "identity/audit.html", params=params, rows=rows, error=error, chain=chain,
        head_seq=int(head.seq) if head else 0, head_hash=head.hash if head else None, tenant=ctx.tenant,
        next_url=("/audit?" + urlencode({**shown, "before": records[-1].seq})) if more and records else None,
        export_url="/api/audit/export.csv" + ("?" + urlencode(shown) if shown else ""),
        verify_url="/audit?" + urlencode({**shown, "verify": "1"}), outcomes=OUTCOMES, actions=COMMON_ACTIONS,
        can_see_events=bool(SECURITY_READ_ROLES.intersection(ctx.roles)),
    )


@router.get("/audit/security-events")
async def security_events_page(request: Request, ctx: AuthContext = Depends(require_page_user)) -> Response:
    if not SECURITY_READ_ROLES.intersection(ctx.roles):
        await _page_audit(request, ctx, "denied")
        return _forbidden(request, "仅隐私官、管理员或审计员可以查看安全事件 (privacy officer, admin or auditor only)")
    status = request.query_params.get("status", "open")
    status = status if status in (*STATUSES, "all") else "open"
    kind = request.query_params.get("kind") or None
    kind = kind if kind in KINDS else None
    page = request.query_params.get("page", "1")
    page_no = int(page) if page.isdigit() and 0 < int(page) < 10_000 else 1
    officer = security_alerts.OFFICER_ROLE in ctx.roles
    async with unit_of_work(get_engine(), write=officer) as conn:
        events = await list_events(conn, ctx.tenant, status=None if status == "all" else status, kind=kind,
                                   limit=51, offset=(page_no - 1) * 50)
        # what was new since the officer's last visit is counted, then this visit reads it
        unread = await security_alerts.unread_count(conn, ctx.tenant, _recipient(ctx)) if officer else None
        if officer:
            await security_alerts.mark_seen(conn, ctx.tenant, _recipient(ctx))
    more = len(events) > 50
    for ev in events:
        ev["first_local"], ev["last_local"] = iso_local(ev["first_seen"]), iso_local(ev["last_seen"])
    await _page_audit(request, ctx, "ok", {"security_events": status})
    query_base = {"status": status, **({"kind": kind} if kind else {})}
    return render(
        request, "identity/security_events.html", events=events[:50], status=status, kind=kind, kinds=KINDS,
        labels=EVENT_LABELS,
        statuses=(*STATUSES, "all"), can_acknowledge=bool(SECURITY_WRITE_ROLES.intersection(ctx.roles)),
        next_url="/audit/security-events?" + urlencode({**query_base, "page": page_no + 1}) if more else None,
        done=request.query_params.get("done"), unread=unread,
    )


def _recipient(ctx: AuthContext) -> str:
    """The officer's account (sessions), or the token's subject."""
    return (ctx.account_id or ctx.subject)[:36]


@router.get("/api/security/alerts")
async def security_alerts_unread(ctx: AuthContext = Depends(require_subject)) -> dict:
    """{"unread": n}: open events raised since the officer last opened the events page."""
    if security_alerts.OFFICER_ROLE not in ctx.roles:
        from yiyun.core.errors import Forbidden

        raise Forbidden("仅隐私保护负责人接收安全告警 (for privacy officers)")
    async with unit_of_work(get_engine(), write=False) as conn:
        return {"unread": await security_alerts.unread_count(conn, ctx.tenant, _recipient(ctx))}


@router.websocket("/ws/security-alerts")
async def security_alerts_socket(websocket: WebSocket) -> None:
    """Live alerts for a signed-in privacy officer: `{"type": "hello", "unread": n}`, then one
    `{"type": "security-events", "events": [...], "unread": n}` per scan that raised an
    event the tenant alerts on (`security_alerts`). Others are closed with 4403."""
    try:
        ctx = await websocket_context(websocket)
    except WebSocketUnauthorized:
        return
    await websocket.accept()
    if security_alerts.OFFICER_ROLE not in ctx.roles:
        await websocket.close(code=4403)
        return
    async def send(message: dict) -> None:
        await websocket.send_json({**message, "unread": await _unread(ctx)})

    async with get_broker().subscribe(security_alerts.channel(ctx.tenant)) as sub:
        await websocket.send_json({"type": "hello", "unread": await _unread(ctx)})
        await relay_to_websocket(websocket, sub, send)


async def _unread(ctx: AuthContext) -> int:
    async with unit_of_work(get_engine(), write=False) as conn:
        return await security_alerts.unread_count(conn, ctx.tenant, _recipient(ctx))


@router.post("/audit/security-events/{event_id}/acknowledge")
async def security_event_acknowledge_form(
    event_id: str, request: Request, status: str = Form("acknowledged"), csrf_token: str = Form(""),
    ctx: AuthContext = Depends(require_page_user),
) -> Response:
    user = await current_user(request)
    await check_csrf(request, user)  # 403 without the session's token
    if not SECURITY_WRITE_ROLES.intersection(ctx.roles):
        await _page_audit(request, ctx, "denied", {"acknowledge": event_id[:40]})
        return _forbidden(request, "仅隐私官或管理员可以处理安全事件 (privacy officer or admin only)")
    if not re.fullmatch(r"[0-9a-f]{32}", event_id):
        raise NotFound("安全事件不存在 (security event not found)")
    async with unit_of_work(get_engine()) as conn:
        await acknowledge(conn, ctx.tenant, event_id, by=ctx.subject,
                          status="closed" if status == "closed" else "acknowledged")
    await request.app.state.policy.recorder.record(None, ctx, "account-changed", "SecurityEvent", event_id, "ok",
                                                   {"status": status})
    return RedirectResponse("/audit/security-events?done=" + ("closed" if status == "closed" else "acknowledged"),
                            status_code=303)


@router.get("/me/access-log")
async def my_access_log_page(request: Request, ctx: AuthContext = Depends(require_patient_page_user)) -> Response:
    if "patient" not in ctx.roles or not ctx.patient:
        return _forbidden(request, "仅患者本人可以查看自己的访问记录 (patients only, for their own record)")
    before_raw = request.query_params.get("before") or ""
    before = int(before_raw) if before_raw.isdigit() and len(before_raw) < 19 else None
    async with unit_of_work(get_engine(), write=False) as conn:
        log = await access_log(conn, ctx, limit=30, before=before)
    await request.app.state.policy.recorder.record(None, ctx, "audit-read", "AuditEvent", None, "ok",
                                                   {"access_log": True, "page": "/me/access-log"})
    entries = []
    for e in log.entries:
        d = e.model_dump()
        d["local_time"] = iso_local(e.time)
        entries.append(d)
    return render(request, "identity/who_saw.html", entries=entries,
                  next_url=f"/me/access-log?before={log.next_before}" if log.next_before else None)
