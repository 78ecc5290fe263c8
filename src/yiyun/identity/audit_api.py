"""Reading the audit trail: FHIR AuditEvent (read-only), the auditors' JSON API with CSV
export and chain status, a patient's "who saw my record", and security events.

Who may read what:

- the audit log of a tenant: the roles `auditor` and `privacy-officer`, or a backend token
  with a `system/` scope granting AuditEvent read/search (`system/AuditEvent.rs`);
- a patient's access log: the patient (role `patient` with their own Patient in context),
  and only entries about their own record;
- security events: `privacy-officer`, `admin` and `auditor` read; `privacy-officer` and
  `admin` acknowledge, close and tune the detectors.

Every read of the audit log is itself written to it (`audit-read`, DICOM 110101 "Audit
Log Used"); refused attempts are written with outcome `denied`.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import and_, or_, select, tuple_

from yiyun.core.db import get_engine, is_sqlite, unit_of_work
from yiyun.core.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.fhir.tables import resource as fhir_resource
from yiyun.identity.audit import AuditRecord, as_audit_event, query, verify
from yiyun.identity.audit_tables import audit_chain_head, audit_log
from yiyun.identity.auth import AuthContext, require_subject
from yiyun.identity.policy import compartment_condition, grants_for
from yiyun.identity.security_events import acknowledge, list_events, load_policy, scan, set_policy
from yiyun.identity.tables import account, tenant as tenant_table

FHIR_JSON = "application/fhir+json; charset=utf-8"
AUDIT_ROLES = frozenset({"auditor", "privacy-officer"})
SECURITY_READ_ROLES = frozenset({"privacy-officer", "admin", "auditor"})
SECURITY_WRITE_ROLES = frozenset({"privacy-officer", "admin"})
LOCAL_TZ = ZoneInfo("Asia/Shanghai")  # the region's wall clock for dates typed on pages
MAX_EXPORT_ROWS = 100_000
# Actions that show a patient's record to someone ("who saw my record").
RECORD_ACCESS = ("read", "vread", "search", "history", "create", "update", "patch", "delete", "export",
                 "operation", "break-glass", "consent")

router = APIRouter()


# ------------------------------------------------------------------ access
def may_read_audit(ctx: AuthContext) -> bool:
    if AUDIT_ROLES.intersection(ctx.roles):
        return True
    return any(
        s.context == "system" and s.query is None and (s.allows("AuditEvent", "r") or s.allows("AuditEvent", "s"))
        for s in grants_for(ctx.scopes).scopes
    )


async def _record(request: Request, ctx: RequestContext, action: str, outcome: str, *, res_id: str | None = None,
                  detail: Any = None, res_type: str = "AuditEvent") -> None:
    await request.app.state.policy.recorder.record(None, ctx, action, res_type, res_id, outcome, detail)


async def _record_denial(request: Request, ctx: AuthContext, res_type: str = "AuditEvent") -> None:
    """A refused read of the audit trail. Refusals on `/api` are recorded for every route by
    `yiyun.identity.auditing.AuditGuardMiddleware`; the FHIR API's are recorded here."""
    if request.url.path.startswith("/fhir/"):
        await _record(request, ctx, "audit-read", "denied", res_type=res_type, detail={"path": request.url.path[:200]})


async def require_auditor(request: Request, ctx: AuthContext = Depends(require_subject)) -> AuthContext:
    if not may_read_audit(ctx):
        await _record_denial(request, ctx)
        raise Forbidden("仅审计员或隐私官可以查看审计日志 (auditor or privacy officer only)")
    return ctx


def _role_guard(roles: frozenset[str], message: str):
    async def guard(ctx: AuthContext = Depends(require_subject)) -> AuthContext:
        if not roles.intersection(ctx.roles):
            raise Forbidden(message)
        return ctx

    return guard


require_security_reader = _role_guard(
    SECURITY_READ_ROLES, "仅隐私官、管理员或审计员可以查看安全事件 (privacy officer, admin or auditor only)")
require_security_admin = _role_guard(SECURITY_WRITE_ROLES, "仅隐私官或管理员可以处理安全事件 (privacy officer or admin only)")


# ------------------------------------------------------------------ filters
def parse_time(value: str, *, end: bool = False, tz=LOCAL_TZ) -> int:
    """µs since the epoch of an ISO date or date-time; a date (or a time without zone) is
    read on `tz`'s wall clock; with `end`, a bare date means the end of that day."""
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}", text):
            d = datetime(int(text) + (1 if end else 0), 1, 1, tzinfo=tz)
        elif re.fullmatch(r"\d{4}-\d{2}", text):
            y, m = map(int, text.split("-"))
            d = datetime(y, m, 1, tzinfo=tz)
            if end:
                d = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = datetime.combine(date.fromisoformat(text), time(0), tzinfo=tz)
            if end:
                d += timedelta(days=1)
        else:
            d = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if d.tzinfo is None:
                d = d.replace(tzinfo=tz)
        return int(d.timestamp() * 1_000_000)
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"时间格式不正确：{value[:40]!r}，应为 ISO 8601 (invalid date/time)") from exc


class Filters(BaseModel):
    since_us: int | None = None
    until_us: int | None = None
    actor: str | None = None
    patient: list[str] | None = None
    action: list[str] | None = None
    outcome: list[str] | None = None
    resource: str | None = None

    def as_query(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None}


_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


def patient_forms(value: str) -> list[str]:
    """Entries name a patient as `Patient/<id>` or a bare id: match either."""
    pid = value.split("/", 1)[1] if value.startswith("Patient/") else value
    if not _ID.match(pid):
        raise BadRequest("患者标识不合法 (invalid patient id)")
    return [pid, f"Patient/{pid}"]


def _resource(rtype: str | None, rid: str | None) -> str | None:
    if rtype and not _TYPE.match(rtype):
        raise BadRequest("资源类型不合法 (invalid resource type)")
    if rid and not _ID.match(rid):
        raise BadRequest("资源标识不合法 (invalid resource id)")
    if rid and not rtype:
        raise BadRequest("指定资源标识时需同时指定资源类型 (resource_id needs resource_type)")
    return f"{rtype}/{rid}" if rid else rtype


# ------------------------------------------------------------------ JSON models
class AuditEntryOut(BaseModel):
    seq: int
    time: str = Field(description="ISO 8601, UTC")
    actor: str
    actor_name: str | None = None
    role: str | None = None
    action: str
    resource_type: str | None = None
    resource_id: str | None = None
    patient: str | None = None
    purpose: str | None = None
    outcome: str
    client_address: str | None = None
    detail: Any = None


class AuditPage(BaseModel):
    tenant: str
    entries: list[AuditEntryOut]
    next_before: int | None = Field(None, description="pass as `before` for the next (older) page")


class ChainProblem(BaseModel):
    seq: int
    kind: str
    message: str


class ChainStatus(BaseModel):
    tenant: str
    ok: bool
    checked: int
    head_seq: int
    head_hash: str | None = None
    problems: list[ChainProblem]
    more_problems: int = 0


class AccessEntry(BaseModel):
    time: str
    who: str
    who_role: str | None = None
    organisation: str | None = None
    action: str
    action_label: str
    resource_type: str | None = None
    resource_label: str | None = None
    purpose: str | None = None
    purpose_label: str | None = None
    break_glass: bool = False


class AccessLog(BaseModel):
    patient: str
    entries: list[AccessEntry]
    next_before: int | None = None


class SecurityEventOut(BaseModel):
    id: str
    kind: str
    severity: str
    subject: str
    detail: dict[str, Any]
    first_seen: str
    last_seen: str
    count: int
    first_seq: int
    last_seq: int
    status: str
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None


class SecurityEventList(BaseModel):
    events: list[SecurityEventOut]


class AcknowledgeIn(BaseModel):
    status: Literal["acknowledged", "closed"] = "acknowledged"


class ScanOut(BaseModel):
    tenants: int
    scanned: int
    raised: int
    repeated: int
    by_kind: dict[str, int]


ERRORS = {400: {"description": "Bad request"}, 401: {"description": "Not signed in"},
          403: {"description": "Not allowed"}}


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _entry_out(r: AuditRecord, names: dict[str, str] | None = None) -> AuditEntryOut:
    return AuditEntryOut(
        seq=r.seq, time=_iso(r.ts), actor=r.actor, actor_name=(names or {}).get(r.actor), role=r.role,
        action=r.action, resource_type=r.resource_type, resource_id=r.resource_id, patient=r.patient,
        purpose=r.purpose, outcome=r.outcome, client_address=r.client_address, detail=r.detail_value,
    )


_PERSON_REF = re.compile(r"^(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$")


async def actor_names(conn, actors: set[str], tenant: str) -> dict[str, str]:
    """Display names of the actors: their account (by username, id or FHIR reference), else
    the Practitioner/Patient resource they name."""
    actors = {a for a in actors if a and a != "anonymous"}
    if not actors:
        return {}
    rows = (await conn.execute(select(account.c.id, account.c.username, account.c.display_name, account.c.fhir_ref)
                               .where(or_(account.c.username.in_(actors), account.c.id.in_(actors),
                                          account.c.fhir_ref.in_(actors))))).all()
    names: dict[str, str] = {}
    for r in rows:
        for key in (r.username, r.id, r.fhir_ref):
            if key in actors:
                names[key] = r.display_name
    missing = [a for a in actors - set(names) if _PERSON_REF.match(a)]
    if missing:
        repo = FhirRepository(conn, RequestContext(tenant=tenant), validate=False)
        for ref in missing[:200]:
            rtype, rid = ref.split("/", 1)
            try:
                res = (await repo.read(rtype, rid)).resource
            except Exception:  # gone, deleted or unreadable: show the reference
                continue
            name = _human_name(res.get("name"))
            if name:
                names[ref] = name
    return names


def _human_name(names: Any) -> str | None:
    if not isinstance(names, list):
        return None
    for n in names:
        if not isinstance(n, dict):
            continue
        if n.get("text"):
            return str(n["text"])
        family, given = n.get("family") or "", "".join(n.get("given") or [])
        if family or given:
            if re.search(r"[\u4e00-\u9fff]", family + given):
                return f"{family}{given}"  # Chinese names: family name first, no space
            return f"{' '.join(n.get('given') or [])} {family}".strip()
    return None


# ------------------------------------------------------------------ FHIR AuditEvent
FHIR_PARAMS = {"date", "agent", "who", "entity", "patient", "action", "subtype", "outcome", "type", "_count",
               "_cursor", "_format", "_pretty", "_id"}
_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.+)$")
_CRUD = {"C": ["create", "import"], "R": ["read", "vread", "history", "export", "audit-read"],
         "U": ["update", "patch", "consent", "password-changed", "account-changed", "second-factor-reset"], "D": ["delete"],
         "E": ["search", "transaction", "batch", "operation", "login", "login-failed", "signin", "signin-failed",
               "signin-locked", "logout", "signout", "break-glass", "break-glass-end", "token-issued",
               "token-refused", "token-revoked", "token-rejected", "session-rejected", "request-refused"]}
_OUTCOME = {"0": ["ok"], "4": ["denied", "not-found", "gone"], "8": ["error"]}


def _token(value: str) -> str:
    return value.split("|", 1)[1] if "|" in value else value


def fhir_filters(params: list[tuple[str, str]], strict: bool) -> tuple[dict, int, int | None, list[str]]:
    q: dict[str, Any] = {}
    count, cursor, ignored = 50, None, []
    for name, value in params:
        base = name.split(":", 1)[0]
        if base not in FHIR_PARAMS or (":" in name and base not in ("agent", "entity", "patient", "who")):
            if strict:
                raise BadRequest(f"不支持的查询参数 {name[:40]} (unknown search parameter)")
            ignored.append(name[:40])
            continue
        if base in ("_format", "_pretty") or value == "":
            continue
        if base == "date":
            m = _PREFIX.match(value)
            prefix, text = (m.group(1) or "eq"), m.group(2)
            if prefix not in ("eq", "gt", "lt", "ge", "le"):
                raise BadRequest(f"date 不支持前缀 {prefix} (unsupported date prefix)")
            low, high = parse_time(text, tz=timezone.utc), parse_time(text, end=True, tz=timezone.utc)
            if re.search(r"T\d", text) and not re.search(r"\.\d", text):
                high = low + (1_000_000 if re.search(r"T\d\d:\d\d:\d\d", text) else 60_000_000)
            if prefix in ("eq", "ge"):
                q["since_us"] = max(q.get("since_us", low), low)
            if prefix == "gt":
                q["since_us"] = max(q.get("since_us", high), high)
            if prefix in ("eq", "le"):
                q["until_us"] = min(q.get("until_us", high), high)
            if prefix == "lt":
                q["until_us"] = min(q.get("until_us", low), low)
        elif base in ("agent", "who"):
            q["actor"] = value[:256]
        elif base == "entity":
            rtype, _, rid = value.partition("/")
            q["resource"] = _resource(rtype, rid or None)
        elif base == "patient":
            q["patient"] = patient_forms(value)
        elif base == "subtype":
            q["action"] = [_token(v)[:32] for v in value.split(",")]
        elif base == "action":
            acts = [a for v in value.split(",") for a in _CRUD.get(v.strip().upper(), [])]
            if not acts:
                raise BadRequest("action 应为 C、R、U、D 或 E (action must be C, R, U, D or E)")
            q["action"] = sorted(set(acts) & set(q["action"])) if "action" in q else acts
        elif base == "outcome":
            outs = [o for v in value.split(",") for o in _OUTCOME.get(_token(v).strip(), [_token(v).strip()])]
            q["outcome"] = outs
        elif base == "type":
            code = _token(value)
            q["action"] = (["read", "vread", "search", "history", "create", "update", "patch", "delete",
                            "transaction", "batch", "operation"] if code == "rest" else [code])
        elif base == "_count":
            if not value.isdigit():
                raise BadRequest("_count 应为非负整数 (_count must be a non-negative integer)")
            count = min(int(value), 1000)
        elif base == "_cursor":
            if not value.isdigit():
                raise BadRequest("_cursor 不合法 (invalid _cursor)")
            cursor = int(value)
        elif base == "_id":
            q["_id"] = value
    return q, count, cursor, ignored


def _fhir(body: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


def _event_id_seq(event_id: str, tenant: str) -> int | None:
    from yiyun.identity.audit import _ID_SAFE

    prefix = _ID_SAFE.sub("-", tenant) + "-"
    if not event_id.startswith(prefix):
        return None
    rest = event_id[len(prefix):]
    return int(rest) if rest.isdigit() and len(rest) < 19 else None


async def _fhir_search(request: Request, ctx: AuthContext, params: list[tuple[str, str]]) -> Response:
    strict = "handling=strict" in request.headers.get("prefer", "").replace(" ", "")
    q, count, cursor, ignored = fhir_filters(params, strict)
    base = str(request.base_url).rstrip("/") + "/fhir/R4"
    records: list[AuditRecord] = []
    event_id = q.pop("_id", None)
    seq = _event_id_seq(event_id, ctx.tenant) if event_id is not None else None
    if count > 0 and (event_id is None or seq is not None):
        async with unit_of_work(get_engine(), write=False) as conn:
            if seq is not None:
                records = [r for r in await query(conn, tenant=ctx.tenant, before_seq=seq + 1, limit=1, **q)
                           if r.seq == seq]
            else:
                records = await query(conn, tenant=ctx.tenant, limit=count + 1, before_seq=cursor, **q)
    more = len(records) > count
    records = records[:count]
    kept = [(k, v) for k, v in params if k != "_cursor" and k.split(":", 1)[0] in FHIR_PARAMS]
    links = [{"relation": "self", "url": f"{base}/AuditEvent" + ("?" + urlencode(params) if params else "")}]
    if more and records:
        nxt = urlencode([*kept, ("_cursor", str(records[-1].seq))])
        links.append({"relation": "next", "url": f"{base}/AuditEvent?{nxt}"})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": []}
    for r in records:
        ev = as_audit_event(r)
        bundle["entry"].append({"fullUrl": f"{base}/AuditEvent/{ev['id']}", "resource": ev,
                                "search": {"mode": "match"}})
    if ignored:
        bundle["entry"].append({"resource": {"resourceType": "OperationOutcome", "issue": [{
            "severity": "warning", "code": "not-supported",
            "diagnostics": "已忽略不支持的参数 (ignored unknown parameters): " + ", ".join(ignored)}]},
            "search": {"mode": "outcome"}})
    await _record(request, ctx, "audit-read", "ok", detail=params[:50] or None)
    return _fhir(bundle)


@router.get("/fhir/R4/AuditEvent", include_in_schema=False)
async def fhir_audit_search(request: Request, ctx: AuthContext = Depends(require_auditor)) -> Response:
    return await _fhir_search(request, ctx, parse_qsl(request.url.query, keep_blank_values=True))


@router.post("/fhir/R4/AuditEvent/_search", include_in_schema=False)
async def fhir_audit_search_post(request: Request, ctx: AuthContext = Depends(require_auditor)) -> Response:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if len(raw) > 64 * 1024:
        from yiyun.core.errors import TooLarge

        raise TooLarge("查询参数过长 (search parameters too large)")
    if raw and ctype != "application/x-www-form-urlencoded":
        raise BadRequest("POST _search 需要 application/x-www-form-urlencoded (form body expected)")
    params = parse_qsl(request.url.query, keep_blank_values=True) + parse_qsl(raw.decode("utf-8", "replace"),
                                                                              keep_blank_values=True)
    return await _fhir_search(request, ctx, params)


@router.get("/fhir/R4/AuditEvent/{event_id}", include_in_schema=False)
async def fhir_audit_read(event_id: str, request: Request, ctx: AuthContext = Depends(require_auditor)) -> Response:
    seq = _event_id_seq(event_id, ctx.tenant)
    records: list[AuditRecord] = []
    if seq is not None:
        async with unit_of_work(get_engine(), write=False) as conn:
            records = [r for r in await query(conn, tenant=ctx.tenant, before_seq=seq + 1, limit=1) if r.seq == seq]
    if not records:
        await _record(request, ctx, "audit-read", "not-found", res_id=event_id[:64])
        raise NotFound(f"AuditEvent/{event_id[:64]} 不存在 (not found)")
    await _record(request, ctx, "audit-read", "ok", res_id=event_id[:64])
    return _fhir(as_audit_event(records[0]))


_READ_ONLY = "审计事件只读，不能新建、修改或删除 (AuditEvent is read-only)"


async def _refuse_write(request: Request) -> Response:
    """405 for any write to AuditEvent (the log is written by the server alone); the refusal
    is recorded by `yiyun.identity.auditing.AuditGuardMiddleware`."""
    raise MethodNotAllowed(_READ_ONLY, headers={"Allow": "GET"})


@router.api_route("/fhir/R4/AuditEvent", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def fhir_audit_write(request: Request) -> Response:
    return await _refuse_write(request)


@router.api_route("/fhir/R4/AuditEvent/{event_id}", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def fhir_audit_write_one(event_id: str, request: Request) -> Response:
    return await _refuse_write(request)


async def refuse_audit_event_writes(repo, plans) -> None:
    """Write hook: no door of the FHIR store (transactions, batches, in-process) stores AuditEvents."""
    raise MethodNotAllowed(_READ_ONLY)


# ------------------------------------------------------------------ auditors' JSON API
def _filters(
    since: str | None, until: str | None, actor: str | None, patient: str | None, action: str | None,
    outcome: str | None, resource_type: str | None, resource_id: str | None,
) -> dict:
    q: dict[str, Any] = {}
    if since:
        q["since_us"] = parse_time(since)
    if until:
        q["until_us"] = parse_time(until, end=True)
    if actor:
        q["actor"] = actor[:256]
    if patient:
        q["patient"] = patient_forms(patient)
    if action:
        q["action"] = [a.strip()[:32] for a in action.split(",") if a.strip()]
    if outcome:
        q["outcome"] = [o.strip()[:16] for o in outcome.split(",") if o.strip()]
    res = _resource(resource_type or None, resource_id or None)
    if res:
        q["resource"] = res
    return q


class _FilterParams:
    def __init__(
        self,
        since: str | None = Query(None, max_length=40,
                                  description="from (ISO date or date-time; Asia/Shanghai when no zone)"),
        until: str | None = Query(None, max_length=40, description="to, inclusive of that day when a date"),
        actor: str | None = Query(None, max_length=256, description="who acted (account, Practitioner/…, service:…)"),
        patient: str | None = Query(None, max_length=80, description="Patient/<id> or <id>"),
        action: str | None = Query(None, max_length=200, description="comma-separated actions"),
        outcome: str | None = Query(None, max_length=100,
                                    description="comma-separated: ok, denied, not-found, gone, error"),
        resource_type: str | None = Query(None, max_length=64),
        resource_id: str | None = Query(None, max_length=64),
    ) -> None:
        self.raw = {k: v for k, v in dict(since=since, until=until, actor=actor, patient=patient, action=action,
                                            outcome=outcome, resource_type=resource_type,
                                            resource_id=resource_id).items() if v}
        self.query = _filters(since, until, actor, patient, action, outcome, resource_type, resource_id)


@router.get("/api/audit/entries", response_model=AuditPage, responses=ERRORS, tags=["audit"])
async def audit_entries(
    request: Request,
    f: _FilterParams = Depends(),
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=1, le=2**62, description="seq: entries older than this"),
    ctx: AuthContext = Depends(require_auditor),
) -> AuditPage:
    """The tenant's audit log, newest first, with filters and paging."""
    async with unit_of_work(get_engine(), write=False) as conn:
        records = await query(conn, tenant=ctx.tenant, limit=limit + 1, before_seq=before, **f.query)
        names = await actor_names(conn, {r.actor for r in records[:limit]}, ctx.tenant)
    more = len(records) > limit
    records = records[:limit]
    await _record(request, ctx, "audit-read", "ok", detail={**f.raw, "before": before} if f.raw or before else None)
    return AuditPage(tenant=ctx.tenant, entries=[_entry_out(r, names) for r in records],
                     next_before=records[-1].seq if more and records else None)


CSV_FIELDS = ("seq", "time", "actor", "actor_name", "role", "action", "resource_type", "resource_id", "patient",
              "purpose", "outcome", "client_address", "detail")


def _csv_safe(value: Any) -> str:
    """Spreadsheets run cells starting with = + - @ as formulas (OWASP CSV injection): quote them."""
    text = "" if value is None else (value if isinstance(value, str) else orjson.dumps(value).decode())
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/api/audit/export.csv", responses={200: {"content": {"text/csv": {}}}, **ERRORS}, tags=["audit"],
            response_class=Response)
async def audit_export(request: Request, f: _FilterParams = Depends(), ctx: AuthContext = Depends(require_auditor)):
    """The filtered log as CSV (UTF-8 with BOM for spreadsheet programs), at most 100,000 rows."""
    engine = get_engine()
    await _record(request, ctx, "export", "ok", detail={**f.raw, "format": "csv"})

    async def rows():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_FIELDS)
        yield "\ufeff" + buf.getvalue()
        before, sent = None, 0
        while sent < MAX_EXPORT_ROWS:
            async with unit_of_work(engine, write=False) as conn:
                page = await query(conn, tenant=ctx.tenant, limit=1000, before_seq=before, **f.query)
                names = await actor_names(conn, {r.actor for r in page}, ctx.tenant)
            if not page:
                break
            buf = io.StringIO()
            writer = csv.writer(buf)
            for r in page[:MAX_EXPORT_ROWS - sent]:
                d = _entry_out(r, names).model_dump()
                writer.writerow([_csv_safe(d[k]) for k in CSV_FIELDS])
            sent += len(page)
            before = page[-1].seq
            yield buf.getvalue()
            if len(page) < 1000:
                break

    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="audit-{ctx.tenant}.csv"'})


@router.get("/api/audit/chain", response_model=ChainStatus, responses=ERRORS, tags=["audit"])
async def audit_chain(request: Request, ctx: AuthContext = Depends(require_auditor)) -> ChainStatus:
    """Verify the tenant's hash chain now (one consistent snapshot) and give its head."""
    engine = get_engine()
    conn = await engine.connect()
    try:
        if not is_sqlite(engine):
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            report = await verify(conn, tenant=ctx.tenant, max_problems=50)
            head = (await conn.execute(select(audit_chain_head).where(audit_chain_head.c.tenant == ctx.tenant))).first()
    finally:
        await conn.close()
    await _record(request, ctx, "audit-read", "ok", detail={"verify": "ok" if report.ok else "problems"})
    return ChainStatus(
        tenant=ctx.tenant, ok=report.ok, checked=report.checked, head_seq=int(head.seq) if head else 0,
        head_hash=head.hash if head else None, more_problems=report.more_problems,
        problems=[ChainProblem(seq=p.seq, kind=p.kind, message=p.message) for p in report.problems],
    )


# ------------------------------------------------------------------ who saw my record
ROLE_LABELS = {"doctor": "医生", "nurse": "护士", "pharmacist": "药师", "admin": "管理员", "auditor": "审计员",
               "cdc-officer": "疾控人员", "regional-admin": "区域管理员", "privacy-officer": "隐私保护专员",
               "patient": "患者"}
ACTION_LABELS = {"read": "查看", "vread": "查看历史版本", "history": "查看修改历史", "search": "查询", "create": "新建",
                 "update": "修改", "patch": "修改", "delete": "删除", "export": "导出", "operation": "处理",
                 "break-glass": "紧急调阅", "consent": "授权变更", "free-text-masked": "隐去文本中的证件号或手机号"}
RESOURCE_LABELS = {
    "Patient": "基本信息", "Observation": "检查检验结果", "Condition": "诊断", "Encounter": "就诊记录",
    "MedicationRequest": "处方", "MedicationDispense": "发药记录", "MedicationStatement": "用药记录",
    "DiagnosticReport": "检查报告", "AllergyIntolerance": "过敏史", "Immunization": "疫苗接种",
    "Procedure": "手术与操作", "DocumentReference": "病历文书", "ImagingStudy": "影像检查", "Appointment": "预约",
    "Consent": "授权同意", "CarePlan": "诊疗计划", "ServiceRequest": "检查申请", "Coverage": "医保信息",
    "Claim": "费用结算", "Communication": "咨询消息", "QuestionnaireResponse": "问卷", "Composition": "病历",
    "EpisodeOfCare": "诊疗经过", "FamilyMemberHistory": "家族史", "Specimen": "标本", "Task": "任务",
    "RelatedPerson": "联系人", "Media": "图片资料", "Binary": "附件", "Bundle": "记录汇总",
}
PURPOSE_LABELS = {"TREAT": "诊疗", "ETREAT": "紧急诊疗", "BTG": "紧急调阅", "HPAYMT": "医保结算", "PUBHLTH": "公共卫生",
                  "HOPERAT": "医院管理", "PATRQT": "本人申请", "HRESCH": "医学研究", "HMARKT": "市场推广",
                  "COC": "连续诊疗", "CAREMGT": "诊疗管理", "HLEGAL": "法律要求"}


def _tenant_names_query(tenants: set[str]):
    return select(tenant_table.c.slug, tenant_table.c.name).where(tenant_table.c.slug.in_(tenants))


async def access_log(conn, ctx: AuthContext, *, limit: int = 50, before: int | None = None) -> AccessLog:
    """Entries about the patient's own record made by anyone but themselves, newest first."""
    pid = ctx.patient or ""
    c = audit_log.c
    compartment = select(fhir_resource.c.res_type, fhir_resource.c.res_id).where(
        fhir_resource.c.tenant == ctx.tenant, compartment_condition(fhir_resource, ctx.tenant, None, pid))
    conds = [
        c.tenant == ctx.tenant, c.action.in_(RECORD_ACCESS), c.outcome == "ok", c.actor != ctx.subject,
        or_(c.patient.in_([pid, f"Patient/{pid}"]), tuple_(c.resource_type, c.resource_id).in_(compartment)),
    ]
    if getattr(ctx, "account_id", None):
        conds.append(c.actor != ctx.account_id)
    if before is not None:
        conds.append(c.seq < before)
    rows = (await conn.execute(select(c.seq, c.ts, c.actor, c.role, c.action, c.resource_type, c.purpose, c.tenant)
                               .where(and_(*conds)).order_by(c.seq.desc()).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    names = await actor_names(conn, {r.actor for r in rows}, ctx.tenant)
    orgs = dict((await conn.execute(_tenant_names_query({ctx.tenant}))).all())
    out = []
    for r in rows:
        roles = [x for x in (r.role or "").split(",") if x]
        if r.actor.startswith("service:") or (not roles and r.actor not in names):
            who, role_label = "系统服务", None
        else:
            who = names.get(r.actor) or r.actor
            role_label = "、".join(ROLE_LABELS.get(x, x) for x in roles) or None
        out.append(AccessEntry(
            time=_iso(r.ts), who=who, who_role=role_label, organisation=orgs.get(r.tenant, r.tenant),
            action=r.action, action_label=ACTION_LABELS.get(r.action, r.action), resource_type=r.resource_type,
            resource_label=RESOURCE_LABELS.get(r.resource_type or "", r.resource_type or "病历"),
            purpose=r.purpose, purpose_label=PURPOSE_LABELS.get(r.purpose or "", r.purpose),
            break_glass=r.action == "break-glass" or r.purpose in ("ETREAT", "BTG"),
        ))
    return AccessLog(patient=f"Patient/{pid}", entries=out, next_before=rows[-1].seq if more and rows else None)


async def require_patient(ctx: AuthContext = Depends(require_subject)) -> AuthContext:
    if "patient" not in ctx.roles or not ctx.patient:
        raise Forbidden("仅患者本人可以查看自己的访问记录 (patients only, for their own record)")
    return ctx


@router.get("/api/me/access-log", response_model=AccessLog, responses=ERRORS, tags=["audit"])
async def my_access_log(
    request: Request,
    limit: int = Query(50, ge=1, le=200),
    before: int | None = Query(None, ge=1, le=2**62),
    ctx: AuthContext = Depends(require_patient),
) -> AccessLog:
    """Who saw my record: staff and services that read or changed the patient's own record."""
    async with unit_of_work(get_engine(), write=False) as conn:
        log = await access_log(conn, ctx, limit=limit, before=before)
    await _record(request, ctx, "audit-read", "ok", detail={"access_log": True})
    return log


# ------------------------------------------------------------------ security events
@router.get("/api/security/events", response_model=SecurityEventList, responses=ERRORS, tags=["security"])
async def security_events(
    request: Request,
    status: Literal["open", "acknowledged", "closed"] | None = Query(None),
    kind: Literal["failed-signins", "many-patients", "break-glass", "after-hours", "second-factor-reset"] | None = Query(
        None),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=100_000),
    ctx: AuthContext = Depends(require_security_reader),
) -> SecurityEventList:
    """Security events of the tenant, most recently seen first."""
    async with unit_of_work(get_engine(), write=False) as conn:
        evs = await list_events(conn, ctx.tenant, status=status, kind=kind, limit=limit, offset=offset)
    await _record(request, ctx, "audit-read", "ok", res_type="SecurityEvent",
                  detail={"status": status, "kind": kind} if status or kind else None)
    return SecurityEventList(events=[SecurityEventOut(**e) for e in evs])


@router.post("/api/security/events/{event_id}/acknowledge", response_model=SecurityEventOut,
             responses={**ERRORS, 404: {"description": "No such event"}}, tags=["security"])
async def security_event_acknowledge(
    event_id: str, request: Request, body: AcknowledgeIn | None = Body(None),
    ctx: AuthContext = Depends(require_security_admin),
) -> SecurityEventOut:
    """Acknowledge (or close) a security event."""
    if not re.fullmatch(r"[0-9a-f]{32}", event_id):
        raise NotFound("安全事件不存在 (security event not found)")
    status = body.status if body else "acknowledged"
    async with unit_of_work(get_engine()) as conn:
        ev = await acknowledge(conn, ctx.tenant, event_id, by=ctx.subject, status=status)
    await _record(request, ctx, "account-changed", "ok", res_type="SecurityEvent", res_id=event_id,
                  detail={"status": status})
    return SecurityEventOut(**ev)


@router.get("/api/security/policy", response_model=dict[str, Any], responses=ERRORS, tags=["security"])
async def security_policy_get(ctx: AuthContext = Depends(require_security_reader)) -> dict[str, Any]:
    """The tenant's detector settings (thresholds, working hours)."""
    async with unit_of_work(get_engine(), write=False) as conn:
        return await load_policy(conn, ctx.tenant)


@router.put("/api/security/policy", response_model=dict[str, Any], responses=ERRORS, tags=["security"])
async def security_policy_put(
    request: Request, changes: dict[str, Any] = Body(...), ctx: AuthContext = Depends(require_security_admin),
) -> dict[str, Any]:
    """Change some detector settings (a partial object over the current ones)."""
    async with unit_of_work(get_engine()) as conn:
        policy = await set_policy(conn, ctx.tenant, changes, by=ctx.subject)
    await _record(request, ctx, "account-changed", "ok", res_type="SecurityPolicy", detail=changes)
    return policy


@router.post("/api/security/scan", response_model=ScanOut, responses=ERRORS, tags=["security"])
async def security_scan(ctx: AuthContext = Depends(require_security_admin)) -> ScanOut:
    """Scan the tenant's new audit entries now (the server also does it periodically)."""
    report = await scan(get_engine(), tenant=ctx.tenant)
    return ScanOut(**report.as_dict())
