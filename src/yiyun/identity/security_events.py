"""Security events: abuse signals found in the audit log.

Detectors read the tenant's audit chain (`yiyun.identity.audit`), never the modules that
wrote it, so every sign-in page, API and FHIR interaction is covered the same way:

- `failed-signins`: many failed sign-ins or rejected access tokens for one account or from
  one client address in a short window (GB/T 22239-2019 8.1.4.1 b "登录失败处理" and
  8.1.4.4 "入侵防范": detect and act on repeated failed authentication; default 10 in
  15 minutes, as NIST SP 800-63B §5.2.2 allows at most 100 consecutive failures and
  most hospitals lock far earlier);
- `many-patients`: one user reading unusually many distinct patients in a window (HIPAA
  45 CFR §164.308(a)(1)(ii)(D) information system activity review; 《医疗卫生机构网络安全
  管理办法》(国卫规划发〔2022〕29号) 第二十六条 monitoring of abnormal data access; default
  more than 50 patients in 1 hour, tune per tenant);
- `break-glass`: every emergency override (IHE ATNA / DICOM 110127 Emergency Override
  Started), severity high, for the tenant's privacy officers to review;
- `after-hours`: staff access to records outside the tenant's working hours (default
  22:00–07:00 Asia/Shanghai; switch off or exempt roles for emergency departments);
- `second-factor-reset`: every reset of a staff member's lost second factor by an
  administrator (`yiyun.identity.second_factor_reset`), severity high, one event each:
  talking an administrator into a reset is how accounts are taken over (NIST SP 800-63B
  §6.1.2.3; GB/T 22239-2019 8.1.4.1). Always on. The administrator who made the reset may
  not acknowledge or close its event: another privacy officer or administrator reviews it.

Scanning is incremental: `security_scan_state` keeps, per tenant, the last audit `seq`
scanned and where the detection window starts. Events are deduplicated: a repeat of the
same kind for the same subject while its event is not closed and was last seen within
`dedupe_minutes` increments that event's count instead of raising a new one.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.core.errors import BadRequest, Forbidden, NotFound
from yiyun.core.logging import get_logger
from yiyun.fhir.model import now_us
from yiyun.identity import security_alerts
from yiyun.identity.audit_tables import audit_chain_head, audit_log
from yiyun.identity.security_tables import security_event, security_policy, security_scan_state

log = get_logger("yiyun.security")

KINDS = ("failed-signins", "many-patients", "break-glass", "after-hours", "second-factor-reset")
STATUSES = ("open", "acknowledged", "closed")
SEVERITY = {"failed-signins": "medium", "many-patients": "medium", "break-glass": "high", "after-hours": "low",
            "second-factor-reset": "high"}
SECOND_FACTOR_RESET = "second-factor-reset"  # the audit action, `yiyun.identity.second_factor_reset.ACTION`

# Audit actions that count as a failed authentication: the sign-in pages write `signin-failed`
# and `signin-locked` (`login-failed` is the older name), the API writes `token-rejected` for
# a forged or expired token or session (`yiyun.identity.auditing`), the OAuth token endpoint
# `token-refused` for a failed client authentication or grant.
FAILED_ACTIONS = frozenset({"login-failed", "signin-failed", "signin-locked", "token-rejected", "token-refused"})
READ_ACTIONS = frozenset({"read", "vread", "search", "history"})
RECORD_ACTIONS = READ_ACTIONS | frozenset({"create", "update", "patch", "delete", "export", "operation"})

DEFAULT_POLICY: dict[str, Any] = {
    "failed_signins": {"enabled": True, "threshold": 10, "window_minutes": 15},
    "many_patients": {"enabled": True, "threshold": 50, "window_minutes": 60},
    "break_glass": {"enabled": True},
    "after_hours": {
        "enabled": True, "start": "22:00", "end": "07:00", "timezone": "Asia/Shanghai",
        "exempt_roles": [], "exempt_actors": [],
    },
    "dedupe_minutes": 60,
    # kinds that alert the privacy officers at once (`security_alerts`): the high-severity
    # ones, and a user reading unusually many patients, the sign of snooping or of a stolen
    # account, which must be stopped while it happens rather than found in tomorrow's review
    "alerts": {"kinds": ["break-glass", "second-factor-reset", "many-patients"]},
}
MINUTE_US = 60_000_000


# ------------------------------------------------------------------ policy
def _merge(base: dict, changes: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if key not in base:
            raise BadRequest(f"未知的安全策略设置 {path}{key} (unknown security policy setting)")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise BadRequest(f"安全策略设置 {path}{key} 应为对象 (must be an object)")
            out[key] = _merge(base[key], value, f"{path}{key}.")
        else:
            out[key] = value
    return out


def _hhmm(value: Any, name: str) -> int:
    try:
        hh, mm = str(value).split(":")
        minutes = int(hh) * 60 + int(mm)
    except ValueError as exc:
        raise BadRequest(f"{name} 应为 HH:MM (must be HH:MM)") from exc
    if not (0 <= int(hh) < 24 and 0 <= int(mm) < 60):
        raise BadRequest(f"{name} 应为 HH:MM (must be HH:MM)")
    return minutes


def check_policy(policy: dict) -> dict:
    """Validate a merged policy; raise BadRequest on nonsense values."""
    for name in ("failed_signins", "many_patients"):
        sub = policy[name]
        if not isinstance(sub["enabled"], bool):
            raise BadRequest(f"{name}.enabled 应为 true/false")
        for k in ("threshold", "window_minutes"):
            v = sub[k]
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 100_000:
                raise BadRequest(f"{name}.{k} 应为 1–100000 的整数 (must be an integer 1-100000)")
    ah = policy["after_hours"]
    _hhmm(ah["start"], "after_hours.start")
    _hhmm(ah["end"], "after_hours.end")
    try:
        ZoneInfo(str(ah["timezone"]))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadRequest("after_hours.timezone 不是已知时区 (unknown time zone)") from exc
    for k in ("exempt_roles", "exempt_actors"):
        if (not isinstance(ah[k], list) or len(ah[k]) > 500
                or not all(isinstance(x, str) and 0 < len(x) <= 256 for x in ah[k])):
            raise BadRequest(f"after_hours.{k} 应为最多 500 个字符串的列表 (must be a list of at most 500 strings)")
    alert_kinds = policy["alerts"]["kinds"]
    if not isinstance(alert_kinds, list) or not all(k in KINDS for k in alert_kinds):
        raise BadRequest(f"alerts.kinds 应为以下类型的列表: {', '.join(KINDS)} (must be a list of event kinds)")
    d = policy["dedupe_minutes"]
    if not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= 7 * 24 * 60:
        raise BadRequest("dedupe_minutes 应为 1–10080 的整数")
    return policy


async def load_policy(conn: AsyncConnection, tenant: str) -> dict:
    row = (await conn.execute(select(security_policy.c.settings).where(security_policy.c.tenant == tenant))).first()
    if row is None:
        return copy.deepcopy(DEFAULT_POLICY)
    try:
        return _merge(DEFAULT_POLICY, orjson.loads(row.settings))
    except (BadRequest, orjson.JSONDecodeError):
        log.warning("security_policy_unreadable", tenant=tenant)
        return copy.deepcopy(DEFAULT_POLICY)


async def set_policy(conn: AsyncConnection, tenant: str, changes: dict, *, by: str | None = None) -> dict:
    """Merge `changes` into the tenant's stored settings and return the effective policy."""
    row = (await conn.execute(select(security_policy.c.settings).where(security_policy.c.tenant == tenant))).first()
    stored = orjson.loads(row.settings) if row else {}
    merged_stored = _merge(DEFAULT_POLICY, stored)
    effective = check_policy(_merge(merged_stored, changes))
    text = orjson.dumps(effective).decode()
    values = {"settings": text, "updated_by": by, "updated_ts": now_us()}
    if row is None:
        await conn.execute(security_policy.insert().values(tenant=tenant, **values))
    else:
        await conn.execute(update(security_policy).where(security_policy.c.tenant == tenant).values(**values))
    return effective


def in_after_hours(ts_us: int, policy: dict) -> bool:
    ah = policy["after_hours"]
    start, end = _hhmm(ah["start"], "start"), _hhmm(ah["end"], "end")
    local = datetime.fromtimestamp(ts_us / 1e6, tz=timezone.utc).astimezone(ZoneInfo(ah["timezone"]))
    minute = local.hour * 60 + local.minute
    if start == end:
        return False
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


# ---------------------------------------------------------------- detection
@dataclass
class Trigger:
    kind: str
    subject: str
    ts: int
    seq: int
    detail: dict
    dedupe: bool = True


@dataclass
class ScanReport:
    tenants: int = 0
    scanned: int = 0
    raised: int = 0
    repeated: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    # events raised by this scan, for the alerts sent once their transaction has committed
    new_events: list[dict] = field(default_factory=list)
    alert_kinds: dict[str, list[str]] = field(default_factory=dict)  # per tenant, from its policy

    def as_dict(self) -> dict:
        return {"tenants": self.tenants, "scanned": self.scanned, "raised": self.raised, "repeated": self.repeated,
                "by_kind": self.by_kind}


def _patient_of(row) -> str | None:
    if row.patient:
        return row.patient if row.patient.startswith("Patient/") else f"Patient/{row.patient}"
    if row.resource_type == "Patient" and row.resource_id:
        return f"Patient/{row.resource_id}"
    return None


def _is_staff(row) -> bool:
    roles = set((row.role or "").split(",")) - {""}
    return bool(roles) and roles != {"patient"} and row.actor != "anonymous"


_COLS = [audit_log.c[n] for n in ("seq", "ts", "actor", "role", "action", "resource_type", "resource_id", "patient",
                                   "outcome", "client_address", "purpose", "detail")]


def _sliding(rows: list, window_us: int, last_seq: int, value, on_new) -> None:
    """Walk `rows` (old and new, by ts) keeping the window's values; call `on_new(row, counter)`
    for each row newer than `last_seq`."""
    window: deque = deque()
    counter: Counter = Counter()
    for r in sorted(rows, key=lambda r: (r.ts, r.seq)):
        window.append(r)
        counter[value(r)] += 1
        while window and window[0].ts <= r.ts - window_us:
            old = window.popleft()
            counter[value(old)] -= 1
            if counter[value(old)] <= 0:
                del counter[value(old)]
        if r.seq > last_seq:
            on_new(r, counter, len(window))


async def _failed_signins(conn, tenant, rows, state, policy) -> list[Trigger]:
    cfg = policy["failed_signins"]
    new = [r for r in rows if r.action in FAILED_ACTIONS]
    if not cfg["enabled"] or not new:
        return []
    window_us = cfg["window_minutes"] * MINUTE_US
    actors = sorted({r.actor for r in new if r.actor != "anonymous"})
    addresses = sorted({r.client_address for r in new if r.client_address})
    old: list = []
    if state["last_seq"] >= state["window_seq"] and (actors or addresses):
        keys = []
        if actors:
            keys.append(audit_log.c.actor.in_(actors))
        if addresses:
            keys.append(audit_log.c.client_address.in_(addresses))
        old = (await conn.execute(select(*_COLS).where(
            audit_log.c.tenant == tenant, audit_log.c.seq >= state["window_seq"], audit_log.c.seq <= state["last_seq"],
            audit_log.c.action.in_(sorted(FAILED_ACTIONS)), or_(*keys),
        ))).all()
    triggers: list[Trigger] = []
    keyed = (("account", lambda r: r.actor, actors), ("address", lambda r: r.client_address, addresses))
    for by, key_of, keys in keyed:
        grouped: dict[str, list] = {}
        for r in (*old, *new):
            grouped.setdefault(key_of(r), []).append(r)
        for key in keys:
            mine = grouped.get(key, [])

            def hit(r, counter, n, key=key, by=by):
                if n >= cfg["threshold"]:
                    subject = key if by == "account" else f"address:{key}"
                    triggers.append(Trigger("failed-signins", subject, r.ts, r.seq, {
                        "by": by, "failures": n, "window_minutes": cfg["window_minutes"],
                        "threshold": cfg["threshold"], "last_action": r.action,
                        "client_address": r.client_address, "actor": r.actor}))

            _sliding(mine, window_us, state["last_seq"], lambda r: r.seq, hit)
    return triggers


_QUERY_PATIENT = ("patient", "subject", "subject:Patient", "patient:Patient", "beneficiary")


def _query_patient(detail: str | None) -> str | None:
    """The patient a search was limited to (`subject=Patient/x`, `patient=x`), if any."""
    try:
        value = orjson.loads(detail) if detail else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("query"), str):
        return None
    from urllib.parse import parse_qsl

    for name, v in parse_qsl(value["query"]):
        if name in _QUERY_PATIENT and v and "," not in v:
            pid = v.split("/", 1)[1] if v.startswith("Patient/") else v
            if "/" not in pid:
                return f"Patient/{pid}"
    return None


async def _record_patients(conn, tenant: str, rows: list) -> dict[tuple[str, str], str]:
    """Whose record each read resource belongs to, from the FHIR store's reference index
    (the Patient compartment: https://hl7.org/fhir/R4/compartmentdefinition-patient.html),
    for entries that do not name the patient themselves (staff reading an Observation)."""
    from sqlalchemy import tuple_

    from yiyun.fhir.bulk import patient_compartment
    from yiyun.fhir.search.tables import idx_reference
    from yiyun.fhir.tables import resource as fhir_resource

    wanted = sorted({(r.resource_type, r.resource_id) for r in rows
                     if not r.patient and r.resource_id and r.resource_type not in (None, "Patient")})
    if not wanted:
        return {}
    pairs = [(t, p) for t, params in patient_compartment().items() for p in params]
    found: dict[tuple[str, str], str] = {}
    for i in range(0, len(wanted), 500):
        part = wanted[i:i + 500]
        q = (select(fhir_resource.c.res_type, fhir_resource.c.res_id, idx_reference.c.target_id)
             .select_from(fhir_resource.join(idx_reference, idx_reference.c.rid == fhir_resource.c.rid))
             .where(fhir_resource.c.tenant == tenant,
                    tuple_(fhir_resource.c.res_type, fhir_resource.c.res_id).in_(part),
                    idx_reference.c.target_type == "Patient", idx_reference.c.url.is_(None),
                    tuple_(idx_reference.c.res_type, idx_reference.c.param).in_(pairs)))
        for rt, rid, target in (await conn.execute(q)).all():
            found.setdefault((rt, rid), f"Patient/{target}")
    return found


async def _many_patients(conn, tenant, rows, state, policy) -> list[Trigger]:
    cfg = policy["many_patients"]
    new = [r for r in rows if r.action in READ_ACTIONS and r.outcome == "ok" and r.actor != "anonymous"]
    if not cfg["enabled"] or not new:
        return []
    window_us = cfg["window_minutes"] * MINUTE_US
    actors = sorted({r.actor for r in new})
    old: list = []
    if state["last_seq"] >= state["window_seq"]:
        old = (await conn.execute(select(*_COLS).where(
            audit_log.c.tenant == tenant, audit_log.c.actor.in_(actors),
            audit_log.c.seq >= state["window_seq"], audit_log.c.seq <= state["last_seq"],
            audit_log.c.action.in_(sorted(READ_ACTIONS)), audit_log.c.outcome == "ok",
        ))).all()
    resolved = await _record_patients(conn, tenant, [*old, *new])

    def patient(r) -> str | None:
        return _patient_of(r) or resolved.get((r.resource_type, r.resource_id)) or (
            _query_patient(r.detail) if r.action == "search" else None)

    by_actor: dict[str, list] = {}
    whose: dict[int, str] = {}
    for r in (*old, *new):
        pid = patient(r)
        if pid:
            by_actor.setdefault(r.actor, []).append(r)
            whose[r.seq] = pid
    triggers: list[Trigger] = []
    for actor in actors:
        mine = by_actor.get(actor, [])

        def hit(r, counter, n, actor=actor):
            if len(counter) > cfg["threshold"]:
                triggers.append(Trigger("many-patients", actor, r.ts, r.seq, {
                    "distinct_patients": len(counter), "window_minutes": cfg["window_minutes"],
                    "threshold": cfg["threshold"], "role": r.role}))

        _sliding(mine, window_us, state["last_seq"], lambda r: whose[r.seq], hit)
    return triggers


def _break_glass(rows, policy) -> list[Trigger]:
    if not policy["break_glass"]["enabled"]:
        return []
    return [Trigger("break-glass", r.actor, r.ts, r.seq, {
        "resource": f"{r.resource_type}/{r.resource_id}" if r.resource_id else r.resource_type,
        "patient": _patient_of(r), "purpose": r.purpose, "role": r.role, "outcome": r.outcome,
        "reason": _reason(r.detail),
    }, dedupe=False) for r in rows if r.action == "break-glass"]


def _second_factor_resets(rows) -> list[Trigger]:
    out = []
    for r in rows:
        if r.action != SECOND_FACTOR_RESET or r.outcome != "ok":
            continue
        detail = _detail(r.detail)
        out.append(Trigger("second-factor-reset", str(detail.get("account") or r.resource_id or "?"), r.ts, r.seq, {
            "account": f"Account/{r.resource_id}" if r.resource_id else None, "name": detail.get("name"),
            "by": r.actor, "role": r.role, "reason": _reason(r.detail), "client_address": r.client_address,
            "sessions_closed": detail.get("sessions_closed"), "grants_revoked": detail.get("grants_revoked"),
        }, dedupe=False))
    return out


def _detail(detail: str | None) -> dict:
    try:
        value = orjson.loads(detail) if detail else None
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _reason(detail: str | None) -> str | None:
    """The reason the user gave for an emergency override (`detail.reason`), if any."""
    try:
        value = orjson.loads(detail) if detail else None
    except orjson.JSONDecodeError:
        return None
    return str(value["reason"])[:500] if isinstance(value, dict) and value.get("reason") else None


def _after_hours(rows, policy) -> list[Trigger]:
    ah = policy["after_hours"]
    if not ah["enabled"]:
        return []
    exempt_roles, exempt_actors = set(ah["exempt_roles"]), set(ah["exempt_actors"])
    out = []
    for r in rows:
        if r.action not in RECORD_ACTIONS or r.outcome != "ok" or not _is_staff(r) or r.actor in exempt_actors:
            continue
        if set((r.role or "").split(",")) & exempt_roles:
            continue
        if in_after_hours(r.ts, policy):
            out.append(Trigger("after-hours", r.actor, r.ts, r.seq, {
                "action": r.action, "resource_type": r.resource_type, "patient": _patient_of(r), "role": r.role,
                "hours": f"{ah['start']}-{ah['end']} {ah['timezone']}"}))
    return out


async def _record(conn, tenant: str, triggers: list[Trigger], policy: dict, report: ScanReport) -> None:
    dedupe_us = policy["dedupe_minutes"] * MINUTE_US
    current: dict[tuple[str, str], dict] = {}
    changed: dict[str, dict] = {}
    created: set[str] = set()
    for t in sorted(triggers, key=lambda t: t.seq):
        ev = None
        if t.dedupe:
            key = (t.kind, t.subject)
            if key not in current:
                row = (await conn.execute(
                    select(security_event).where(
                        security_event.c.tenant == tenant, security_event.c.kind == t.kind,
                        security_event.c.subject == t.subject[:256], security_event.c.status != "closed",
                    ).order_by(security_event.c.last_seen.desc()).limit(1)
                )).mappings().first()
                current[key] = dict(row) if row else None
            ev = current[key]
            if ev is not None and ev["last_seen"] < t.ts - dedupe_us:
                ev = None
        if ev is not None:
            ev.update(last_seen=max(ev["last_seen"], t.ts), last_seq=max(ev["last_seq"], t.seq), count=ev["count"] + 1,
                      detail=orjson.dumps(t.detail).decode())
            changed[ev["id"]] = ev
            report.repeated += 1
            continue
        ev = {"id": uuid.uuid4().hex, "tenant": tenant, "kind": t.kind, "severity": SEVERITY[t.kind],
              "subject": t.subject[:256], "detail": orjson.dumps(t.detail).decode(), "first_seen": t.ts,
              "last_seen": t.ts, "count": 1, "first_seq": t.seq, "last_seq": t.seq, "status": "open",
              "acknowledged_by": None, "acknowledged_ts": None}
        if t.dedupe:
            current[(t.kind, t.subject)] = ev
        changed[ev["id"]] = ev
        created.add(ev["id"])
        report.new_events.append(ev)
        report.raised += 1
        report.by_kind[t.kind] = report.by_kind.get(t.kind, 0) + 1
        log.warning("security_event", tenant=tenant, kind=t.kind, subject=t.subject, seq=t.seq,
                    severity=SEVERITY[t.kind])
    for ev_id, ev in changed.items():
        if ev_id in created:
            await conn.execute(security_event.insert().values(**ev))
        else:
            await conn.execute(update(security_event).where(security_event.c.id == ev_id).values(
                last_seen=ev["last_seen"], last_seq=ev["last_seq"], count=ev["count"], detail=ev["detail"]))


async def _lock_state(conn: AsyncConnection, tenant: str) -> dict:
    q = select(security_scan_state).where(security_scan_state.c.tenant == tenant)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        await conn.execute(insert(security_scan_state).values(tenant=tenant, last_seq=0, window_seq=1, ts=now_us())
                           .on_conflict_do_nothing(index_elements=["tenant"]))
        q = q.with_for_update()
    else:
        from sqlalchemy.dialects.sqlite import insert

        await conn.execute(insert(security_scan_state).values(tenant=tenant, last_seq=0, window_seq=1, ts=now_us())
                           .on_conflict_do_nothing(index_elements=["tenant"]))
    row = (await conn.execute(q)).mappings().first()
    return dict(row)


async def scan_tenant(
    conn: AsyncConnection, tenant: str, *, chunk: int = 5000, report: ScanReport | None = None,
) -> ScanReport:
    """Scan the tenant's new audit entries (one chunk) in the caller's write transaction."""
    report = report or ScanReport()
    state = await _lock_state(conn, tenant)
    rows = (await conn.execute(
        select(*_COLS).where(audit_log.c.tenant == tenant, audit_log.c.seq > state["last_seq"])
        .order_by(audit_log.c.seq).limit(chunk)
    )).all()
    if not rows:
        return report
    policy = await load_policy(conn, tenant)
    report.alert_kinds[tenant] = list(policy["alerts"]["kinds"])
    triggers = [
        *await _failed_signins(conn, tenant, rows, state, policy),
        *await _many_patients(conn, tenant, rows, state, policy),
        *_break_glass(rows, policy),
        *_after_hours(rows, policy),
        *_second_factor_resets(rows),
    ]
    await _record(conn, tenant, triggers, policy, report)
    newest = max(r.ts for r in rows)
    longest = max(policy["failed_signins"]["window_minutes"], policy["many_patients"]["window_minutes"]) * MINUTE_US
    window_seq = (await conn.execute(select(func.min(audit_log.c.seq)).where(
        audit_log.c.tenant == tenant, audit_log.c.seq >= state["window_seq"], audit_log.c.ts > newest - longest,
    ))).scalar()
    last = rows[-1].seq
    await conn.execute(update(security_scan_state).where(security_scan_state.c.tenant == tenant).values(
        last_seq=last, window_seq=window_seq or last + 1, ts=now_us()))
    report.scanned += len(rows)
    return report


async def scan(engine: AsyncEngine, *, tenant: str | None = None, chunk: int = 5000) -> ScanReport:
    """Scan every tenant's chain (or one) from where the last scan stopped, chunk by chunk,
    each chunk in its own write transaction."""
    report = ScanReport()
    if tenant is None:
        async with unit_of_work(engine, write=False) as conn:
            tenants = list((await conn.execute(select(audit_chain_head.c.tenant).order_by(audit_chain_head.c.tenant)))
                           .scalars())
    else:
        tenants = [tenant]
    for t in tenants:
        report.tenants += 1
        while True:
            raised_before = len(report.new_events)
            async with unit_of_work(engine, write=True) as conn:
                scanned_before = report.scanned
                await scan_tenant(conn, t, chunk=chunk, report=report)
            # committed: now the privacy officers may be told (published messages cannot be taken back)
            await security_alerts.notify(engine, t, report.new_events[raised_before:], report.alert_kinds.get(t))
            if report.scanned - scanned_before < chunk:
                break
    return report


async def run_periodically(engine_fn, seconds: float) -> None:
    """The server's background task: scan every `seconds` until cancelled."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await scan(engine_fn())
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is away: try again next round
            log.exception("security_scan_failed")


# ------------------------------------------------------------------- reading
def event_dict(row) -> dict:
    r = dict(row)
    detail = orjson.loads(r["detail"]) if r.get("detail") else {}
    return {
        "id": r["id"], "kind": r["kind"], "severity": r["severity"], "subject": r["subject"], "detail": detail,
        "first_seen": _iso(r["first_seen"]), "last_seen": _iso(r["last_seen"]), "count": r["count"],
        "first_seq": r["first_seq"], "last_seq": r["last_seq"], "status": r["status"],
        "acknowledged_by": r["acknowledged_by"],
        "acknowledged_at": _iso(r["acknowledged_ts"]) if r["acknowledged_ts"] else None,
    }


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat().replace("+00:00", "Z")


async def list_events(
    conn: AsyncConnection, tenant: str, *, status: str | None = None, kind: str | None = None,
    limit: int = 50, offset: int = 0,
) -> list[dict]:
    conds = [security_event.c.tenant == tenant]
    if status is not None:
        conds.append(security_event.c.status == status)
    if kind is not None:
        conds.append(security_event.c.kind == kind)
    q = (select(security_event).where(and_(*conds))
         .order_by(security_event.c.last_seen.desc(), security_event.c.id).limit(limit).offset(offset))
    return [event_dict(r) for r in (await conn.execute(q)).mappings().all()]


async def acknowledge(
    conn: AsyncConnection, tenant: str, event_id: str, *, by: str, status: str = "acknowledged",
) -> dict:
    if status not in ("acknowledged", "closed"):
        raise BadRequest("状态只能是 acknowledged 或 closed (status must be acknowledged or closed)")
    row = (await conn.execute(select(security_event).where(
        security_event.c.tenant == tenant, security_event.c.id == event_id))).mappings().first()
    if row is None:
        raise NotFound("安全事件不存在 (security event not found)")
    if row["kind"] == "second-factor-reset" and _detail(row["detail"]).get("by") == by:
        # separation of duties: the reset is reviewed by someone other than who made it
        raise Forbidden("不能审核自己执行的两步验证重置，请由其他隐私保护专员或管理员处理 "
                        "(someone else must review a reset you made)")
    await conn.execute(update(security_event).where(security_event.c.id == event_id).values(
        status=status, acknowledged_by=by[:256], acknowledged_ts=now_us()))
    row = (await conn.execute(select(security_event).where(security_event.c.id == event_id))).mappings().first()
    return event_dict(row)
