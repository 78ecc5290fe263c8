"""Booking: one service whatever the door (patient pages, JSON API, FHIR `$book`/`$cancel`,
plain FHIR writes of Appointment).

The rules that must hold on every path live in the Appointment write hook
(`appointment_write_hook`, registered by `yiyun.hospital.api.install`):

- one booking per Slot: an active Appointment (proposed, pending, booked, arrived,
  checked-in, waitlist) that references a Slot locks the Slot's row (PostgreSQL
  `SELECT … FOR UPDATE`; SQLite writers are serialised by `BEGIN IMMEDIATE`), is refused
  with 409 "号源已被预约 (slot already booked)" when the Slot is not free or another active
  Appointment holds it, and marks the Slot busy in the same unit of work; leaving the
  active states (cancelled, noshow, entered-in-error, fulfilled) or deleting frees it;
- a queue number (就诊序号) per schedule and local day, sequential, assigned atomically;
- reminders due 24 h and 2 h before the start;
- for patients acting themselves: the hospital's booking rules (booking window, daily
  limits, no-show block, cancellation cut-off).

Service API for pages and the JSON API (all take a `FhirRepository` inside a unit of work
and an `Actor`, never commit):

    actor = actor_from_context(ctx)                       # who acts: patient, staff, system
    rules = await get_rules(repo.conn, tenant)            # BookingRules
    await set_rules(repo.conn, tenant, **changes)
    stored = await book(repo, actor, slot_id, patient_id)  # the booked Appointment
    stored = await book_appointment(repo, actor, appointment_dict)   # what $book does
    stored = await cancel(repo, actor, appointment_id, reason="…")
    stored = await reschedule(repo, actor, appointment_id, new_slot_id)
    stored = await mark_noshow(repo, actor, appointment_id)
    items  = await appointments_of(repo, patient_id)      # newest first
    await block_status(repo.conn, tenant, patient_id)     # None or (until_us, reason)
    await due_reminders(conn, now_us=...)                  # reminders to send

`summarise(appointment)` gives the dict the API and pages show.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.db import is_sqlite
from yiyun.core.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from yiyun.fhir.model import RequestContext, StoredResource, now_us
from yiyun.fhir.repository import FhirRepository, PlannedWrite, check_resource_body
from yiyun.hospital.codes import (
    ACTIVE_STATUSES,
    CANCEL_REASON,
    CHINA_TZ,
    QUEUE_NUMBER_SYSTEM,
    consultation_type_of,
    from_us,
    local_day,
    local_moment,
    parse_instant,
    ref_id,
    to_us,
)
from yiyun.hospital.models import booking_block, booking_rule, queue_number, reminder

STAFF_ROLES = frozenset({"doctor", "nurse", "admin", "regional-admin"})
US_PER_MIN = 60_000_000


# ------------------------------------------------------------------ rules
@dataclass
class BookingRules:
    """A hospital's booking rules. Defaults are conservative and configurable per tenant.

    - Slots are bookable up to `booking_window_days` ahead: hospitals publish 7 to 14 days
      of timed slots (分时段预约, 国卫办医函〔2020〕405号《关于进一步完善预约诊疗制度加强
      智慧医院建设的通知》).
    - Cancellation online closes `cancel_cutoff_minutes` before the start (hospitals set
      their own 退号 deadline; 2 h is a common and lenient one).
    - One patient holds at most `max_active_per_department_day` bookings in one department
      and `max_active_per_day` bookings in all on one day: the usual guard against
      number touting (号贩子), e.g. 同一就诊人同日同科限挂一个号.
    - `noshow_threshold` no-shows within `noshow_window_days` suspend online booking for
      `block_days` (爽约 rules of regional booking platforms, e.g. 北京市预约挂号统一平台;
      3 in 90 days → 30 days here, deliberately mild).
    - A booked visit nobody checked in or started is marked a no-show automatically
      `noshow_grace_minutes` after its end (`yiyun.hospital.tasks`): the grace covers a
      late-running clinic and a late check-in at the desk.
    """

    cancel_cutoff_minutes: int = 120
    booking_window_days: int = 14
    max_active_per_day: int = 3
    max_active_per_department_day: int = 1
    noshow_threshold: int = 3
    noshow_window_days: int = 90
    block_days: int = 30
    noshow_grace_minutes: int = 30

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_RULES = BookingRules()
RULE_LIMITS = {
    "cancel_cutoff_minutes": (0, 7 * 24 * 60),
    "booking_window_days": (1, 90),
    "max_active_per_day": (1, 20),
    "max_active_per_department_day": (1, 20),
    "noshow_threshold": (1, 50),
    "noshow_window_days": (1, 365),
    "block_days": (0, 365),
    "noshow_grace_minutes": (0, 24 * 60),
}


# Rules change rarely and are read on every patient booking: kept in process for a few
# seconds (another process sees a change within RULES_CACHE_SECONDS).
RULES_CACHE_SECONDS = 5.0
_rules_cache: dict[tuple[str, str], tuple[float, BookingRules]] = {}


async def get_rules(conn: AsyncConnection, tenant: str) -> BookingRules:
    key = (str(conn.engine.url), tenant)
    hit = _rules_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < RULES_CACHE_SECONDS:
        return BookingRules(**hit[1].as_dict())
    row = (await conn.execute(select(booking_rule).where(booking_rule.c.tenant == tenant))).first()
    rules = BookingRules() if row is None else BookingRules(**{k: getattr(row, k) for k in RULE_LIMITS})
    _rules_cache[key] = (time.monotonic(), rules)
    return BookingRules(**rules.as_dict())


async def set_rules(conn: AsyncConnection, tenant: str, **changes) -> BookingRules:
    """Change some rules of `tenant`; values are checked against `RULE_LIMITS`."""
    rules = await get_rules(conn, tenant)
    for key, value in changes.items():
        if value is None:
            continue
        if key not in RULE_LIMITS:
            raise BadRequest(f"未知的预约规则 {key} (unknown booking rule)")
        lo, hi = RULE_LIMITS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise BadRequest(f"预约规则 {key} 须为 {lo}–{hi} 的整数 (out of range)")
        setattr(rules, key, value)
    values = {**rules.as_dict(), "updated_ts": now_us()}
    _rules_cache.pop((str(conn.engine.url), tenant), None)
    exists = (await conn.execute(select(booking_rule.c.tenant).where(booking_rule.c.tenant == tenant))).first()
    if exists:
        await conn.execute(update(booking_rule).where(booking_rule.c.tenant == tenant).values(**values))
    else:
        await conn.execute(insert(booking_rule).values(tenant=tenant, **values))
    return rules


# ------------------------------------------------------------------ actors
@dataclass(frozen=True)
class Actor:
    """Who books: a patient for themselves (or a ward), staff on behalf, or the system."""

    kind: str  # patient | staff | system
    subject: str = "system"
    patient: str | None = None
    roles: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_patient(self) -> bool:
        return self.kind == "patient"


SYSTEM = Actor("system")


def actor_from_context(ctx: RequestContext) -> Actor:
    roles = tuple(getattr(ctx, "roles", ()) or ())
    patient = getattr(ctx, "patient", None)
    if STAFF_ROLES.intersection(roles):
        return Actor("staff", ctx.subject, None, roles)
    if patient or "patient" in roles:
        return Actor("patient", ctx.subject, patient, roles)
    return Actor("system", ctx.subject, None, roles)


def _actor_of(repo: FhirRepository) -> Actor:
    return getattr(repo, "booking_actor", None) or actor_from_context(repo.ctx)


WRITE_ACTIONS = frozenset({"create", "update", "patch", "delete"})


class DeferredAudit:
    """The caller's unit-of-work policy, except that the audit entries of this workflow's
    own writes join the caller's pending entries, appended just before the commit.

    The audit chain's head stays locked from an append to the commit
    (`yiyun.identity.audit`: "append late in a transaction"); marking a Slot busy early in
    a booking would otherwise hold it for the rest of the booking and queue every other
    booking of the hospital behind it. Deferral happens only where someone flushes the
    pending entries: a token's unit of work (the FHIR API flushes it) or a repository
    marked `flushes_audit` (the hospital API flushes it); elsewhere entries are appended
    at once, as before."""

    def __init__(self, bound, defer: bool) -> None:
        self._bound = bound
        self._defer = defer and isinstance(getattr(bound, "pending", None), list) and hasattr(bound, "policy")

    def __getattr__(self, name):
        return getattr(self._bound, name)

    async def record(self, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        await self.record_batch(ctx, [(action, res_type, res_id, outcome)], detail)

    async def record_batch(self, ctx, events, detail=None) -> None:
        if not self._defer:
            batch = getattr(self._bound, "record_batch", None)
            if batch is not None:
                return await batch(ctx, events, detail)
            for action, res_type, res_id, outcome in events:
                await self._bound.record(ctx, action, res_type, res_id, outcome, detail)
            return
        recorder = self._bound.policy.recorder
        self._bound.pending.extend(recorder.entry(ctx, a, t, i, o, detail) for a, t, i, o in events
                                   if a in WRITE_ACTIONS and o == "ok")


def _flushed_by_owner(repo: FhirRepository) -> bool:
    from yiyun.identity.policy import is_token_context

    return bool(getattr(repo, "flushes_audit", False)) or is_token_context(repo.ctx)


def system_repo(repo: FhirRepository, actor: Actor | None = None) -> FhirRepository:
    """A repository on the same unit of work acting as the hospital itself.

    Used where booking must touch what the caller may not write directly (the Slot's
    status, another tenant's directory) after this module has decided the caller may
    book; the caller's subject is kept so the audit trail names who acted."""
    ctx = RequestContext(tenant=repo.ctx.tenant, subject=repo.ctx.subject, roles=tuple(repo.ctx.roles),
                         purpose=repo.ctx.purpose, client_address=repo.ctx.client_address,
                         base_url=repo.ctx.base_url)
    policy = repo.policy if isinstance(repo.policy, DeferredAudit) else DeferredAudit(repo.policy, _flushed_by_owner(repo))
    sys_repo = FhirRepository(repo.conn, ctx, policy=policy, validate=False)
    sys_repo.booking_actor = actor or _actor_of(repo)
    sys_repo.after_commit = repo.after_commit
    return sys_repo


# ------------------------------------------------------------------ admission
# At most this many bookings of one process write at the same time; the others wait before
# their transaction takes any lock. Every booking of a hospital ends by appending to its
# audit chain, whose head is locked until commit: with hundreds of bookings interleaved in
# one event loop, a transaction holding that lock waits for the loop behind all the
# others' work, and the whole hospital queues behind it (a lock convoy). Admitting a few
# at a time keeps lock holders moving; SQLite's BEGIN IMMEDIATE queues writers the same way.
MAX_CONCURRENT_BOOKINGS = int(os.environ.get("YIYUN_BOOKING_CONCURRENCY", "4"))
_gates: dict[int, asyncio.Semaphore] = {}


def booking_gate() -> asyncio.Semaphore:
    """The process's admission gate for booking writes (one per event loop)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(id(loop))
    if gate is None:
        gate = _gates[id(loop)] = asyncio.Semaphore(MAX_CONCURRENT_BOOKINGS)
    return gate


# ------------------------------------------------------------------ helpers
def is_active(resource: dict | None) -> bool:
    return bool(resource) and resource.get("status") in ACTIVE_STATUSES


def slot_ids(resource: dict | None) -> list[str]:
    out = []
    for r in (resource or {}).get("slot") or []:
        sid = ref_id(r, "Slot")
        if sid is None:
            raise Unprocessable("预约引用的号源必须是 Slot/<id> (slot must reference Slot/<id>)",
                                expression=["Appointment.slot"])
        out.append(sid)
    return out


def patient_of(resource: dict) -> str | None:
    for p in resource.get("participant") or []:
        pid = ref_id((p or {}).get("actor"), "Patient")
        if pid:
            return pid
    return None


def participant_ids(resource: dict, res_type: str) -> list[str]:
    return [i for p in resource.get("participant") or [] if (i := ref_id((p or {}).get("actor"), res_type))]


def queue_number_of(resource: dict) -> int | None:
    for ident in resource.get("identifier") or []:
        if ident.get("system") == QUEUE_NUMBER_SYSTEM and str(ident.get("value", "")).isdigit():
            return int(ident["value"])
    return None


def _start_us(resource: dict) -> int | None:
    dt = parse_instant(resource.get("start"))
    return to_us(dt) if dt else None


def _day_bounds(day) -> tuple[str, str]:
    start = local_moment(day, datetime.min.time())
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


def _slots_changed(tenant: str, slot: dict, *, taken: str | None = None) -> None:
    from yiyun.hospital.catalogue import slots_changed

    slots_changed(tenant, ref_id(slot.get("schedule"), "Schedule"), taken=taken)


# ------------------------------------------------------------------ the write hook
async def appointment_write_hook(repo: FhirRepository, plans: list[PlannedWrite]) -> None:
    """One booking per Slot, queue numbers, reminders and the patient rules, on every path."""
    actor = _actor_of(repo)
    now = now_us()
    for plan in plans:
        old = plan.existing.resource if plan.existing is not None and not plan.existing.deleted else None
        new = plan.resource
        if new is not None and not isinstance(new.get("status"), str):
            continue  # validation reports the missing status
        old_held = set(slot_ids(old)) if is_active(old) else set()
        new_held = set(slot_ids(new)) if is_active(new) else set()
        if actor.is_patient:
            _check_patient_transition(old, new)
        released = sorted(old_held - new_held)
        acquired = sorted(new_held - old_held)
        rules = await get_rules(repo.conn, repo.ctx.tenant) if (actor.is_patient or _became(old, new, "noshow")) else None
        for sid in released:
            await _release(repo, actor, sid, old, rules, now)
        if acquired:
            await _acquire(repo, actor, plan, acquired, rules, now)
        if new is None or not is_active(new):
            await repo.conn.execute(delete(reminder).where(reminder.c.tenant == repo.ctx.tenant,
                                                           reminder.c.appointment == plan.res_id))
        if new is not None and _became(old, new, "noshow"):
            await _record_noshow(repo, new, rules or DEFAULT_RULES, now)


def _became(old: dict | None, new: dict | None, status: str) -> bool:
    return bool(new) and new.get("status") == status and (old or {}).get("status") != status


def _check_patient_transition(old: dict | None, new: dict | None) -> None:
    """A patient books (proposed/booked) and cancels; arrival, no-show and completion are
    recorded by the hospital."""
    if new is None:
        raise Forbidden("患者不能删除预约，请取消预约 (patients cancel appointments rather than delete them)")
    status = new.get("status")
    if old is None:
        if status not in ("proposed", "booked", "pending"):
            raise Forbidden("患者只能新建待确认或已预约状态的预约 (patients may only create proposed or booked appointments)")
        return
    if status != old.get("status") and status != "cancelled":
        raise Forbidden("患者只能取消预约 (patients may only cancel an appointment)")


async def _lock_slot(repo: FhirRepository, sid: str) -> StoredResource | None:
    # PostgreSQL: SELECT … FOR UPDATE on the Slot's row; concurrent bookers queue here and
    # each then sees the committed status. SQLite: the writer already holds the database.
    return await repo._current("Slot", sid, lock=True)  # noqa: SLF001 (the repository's row lock)


async def _release(repo, actor: Actor, sid: str, old: dict, rules: BookingRules | None, now: int) -> None:
    stored = await _lock_slot(repo, sid)
    if stored is None or stored.deleted:
        return
    slot = stored.resource
    start = parse_instant(slot.get("start"))
    start_us = to_us(start) if start else None
    if actor.is_patient and rules is not None and start_us is not None:
        cutoff = start_us - rules.cancel_cutoff_minutes * US_PER_MIN
        if now > cutoff:
            raise Unprocessable(
                f"距就诊开始不足 {rules.cancel_cutoff_minutes} 分钟，不能在线取消或改约，请联系医院 "
                f"(the cancellation cut-off of {rules.cancel_cutoff_minutes} minutes before the start has passed)"
            )
    if slot.get("status") == "busy" and (start_us is None or start_us > now):
        # a slot whose time has passed stays busy: nobody can use it any more
        await system_repo(repo, actor).update("Slot", sid, {**slot, "status": "free"})
        _slots_changed(repo.ctx.tenant, slot)


async def _acquire(repo, actor: Actor, plan: PlannedWrite, sids: list[str], rules, now: int) -> None:
    appt = plan.resource
    patient = patient_of(appt)
    if patient is None:
        raise Unprocessable("预约必须指明就诊人 (the appointment needs a Patient participant)",
                            expression=["Appointment.participant"])
    slots = []
    for sid in sids:
        stored = await _lock_slot(repo, sid)
        if stored is None or stored.deleted:
            if getattr(repo, "booking_actor", None) is None:
                # A plain write naming a Slot this store does not hold (data from another
                # system, a Bundle loaded in parts): the store keeps references as given and
                # an absent Slot cannot be double-booked. Booking ($book, the API) needs it.
                continue
            raise Unprocessable(f"号源 Slot/{sid} 不存在 (slot not found)", expression=["Appointment.slot"])
        slot = stored.resource
        start_us = _start_us(slot)
        if start_us is None or start_us <= now:
            raise Unprocessable("该号源的就诊时间已过，不能预约 (the slot is in the past)",
                                expression=["Appointment.slot"])
        await _check_slot_free(repo, sid, slot, plan.res_id, patient)
        slots.append((sid, slot, start_us))
    if not slots:
        return
    first_sid, first, first_start = slots[0]
    schedule = await _schedule_of(repo, first)
    _fill_from_slot(appt, first, slots[-1][1], schedule)
    if actor.is_patient:
        await _check_patient_rules(repo, plan, patient, first_start, schedule, rules or DEFAULT_RULES, now)
    writer = system_repo(repo, actor)
    for sid, slot, _ in slots:
        await writer.update("Slot", sid, {**slot, "status": "busy"})
        _slots_changed(repo.ctx.tenant, slot, taken=sid)
    # the queue number last: its lock (per schedule and day) is then held only while the
    # Appointment itself is written and committed
    schedule_id = ref_id(first.get("schedule"), "Schedule") or "-"
    number = await _next_queue_number(repo, schedule_id, local_day(from_us(first_start)).isoformat(), plan.res_id)
    idents = [i for i in appt.get("identifier") or [] if i.get("system") != QUEUE_NUMBER_SYSTEM]
    appt["identifier"] = [*idents, {"use": "usual", "type": {"text": "就诊序号"}, "system": QUEUE_NUMBER_SYSTEM,
                                    "value": str(number)}]
    await _schedule_reminders(repo.conn, repo.ctx.tenant, plan.res_id, first_start, now, fresh=plan.existing is None)


async def _check_slot_free(repo, sid: str, slot: dict, appointment_id: str, patient: str) -> None:
    holders = await system_repo(repo).find("Appointment", [
        ("slot", f"Slot/{sid}"), ("status", ",".join(sorted(ACTIVE_STATUSES)))])
    holders = [h for h in holders if h.res_id != appointment_id]
    if any(patient_of(h.resource) == patient for h in holders):
        raise Conflict("您已预约该号源，请勿重复提交 (this patient has already booked this slot)")
    if holders or slot.get("status") == "busy":
        raise Conflict("号源已被预约 (slot already booked)")
    if slot.get("status") != "free":
        raise Conflict("号源暂不可预约 (slot not available)")


async def _schedule_of(repo, slot: dict) -> dict | None:
    sched_id = ref_id(slot.get("schedule"), "Schedule")
    stored = await repo._current("Schedule", sched_id) if sched_id else None  # noqa: SLF001
    return stored.resource if stored is not None and not stored.deleted else None


def _fill_from_slot(appt: dict, first: dict, last: dict, schedule: dict | None) -> None:
    """Start, end, consultation type and the schedule's doctor and service: the booking
    carries what the patient chose, whichever door it came through."""
    appt["start"], appt["end"] = first.get("start"), last.get("end")
    if first.get("serviceType") and not appt.get("serviceType"):
        appt["serviceType"] = first["serviceType"]
    if not appt.get("created"):
        appt["created"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    participants = appt.setdefault("participant", [])
    present = {(p.get("actor") or {}).get("reference") for p in participants}
    for actor in (schedule or {}).get("actor") or []:
        reference = actor.get("reference")
        if reference and reference not in present and reference.split("/")[0] in (
                "PractitionerRole", "Practitioner", "HealthcareService", "Location"):
            participants.append({"actor": dict(actor), "required": "required", "status": "accepted"})
            present.add(reference)


async def _check_patient_rules(repo, plan, patient: str, start_us: int, schedule, rules: BookingRules,
                               now: int) -> None:
    block = await block_status(repo.conn, repo.ctx.tenant, patient, now)
    if block is not None:
        until = from_us(block[0]).astimezone(CHINA_TZ)
        raise Forbidden(f"因多次爽约，在线预约暂停至 {until:%Y-%m-%d %H:%M} (booking blocked after repeated no-shows)")
    if start_us > now + rules.booking_window_days * 24 * 3600 * 1_000_000:
        raise Unprocessable(f"只能预约 {rules.booking_window_days} 天内的号源 "
                            f"(slots open {rules.booking_window_days} days ahead)")
    day = local_day(from_us(start_us))
    lo, hi = _day_bounds(day)
    same_day = await system_repo(repo).search("Appointment", [
        ("patient", f"Patient/{patient}"), ("date", f"ge{lo}"), ("date", f"lt{hi}"),
        ("status", ",".join(sorted(ACTIVE_STATUSES))), ("_count", "50")])
    others = [s.resource for s in same_day.matches if s.res_id != plan.res_id]
    if len(others) >= rules.max_active_per_day:
        raise Unprocessable(f"同一就诊人每天最多预约 {rules.max_active_per_day} 个号 "
                            f"(at most {rules.max_active_per_day} bookings a day)")
    services = set(participant_ids(plan.resource, "HealthcareService"))
    if services:
        in_dept = [o for o in others if services & set(participant_ids(o, "HealthcareService"))]
        if len(in_dept) >= rules.max_active_per_department_day:
            raise Unprocessable(f"同一就诊人同一天同一科室最多预约 {rules.max_active_per_department_day} 个号 "
                                f"(at most {rules.max_active_per_department_day} per department a day)")


async def _advisory_lock(conn: AsyncConnection, key: str) -> None:
    if is_sqlite(conn.engine):
        return  # BEGIN IMMEDIATE already serialises writers
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode()) - 2**31})


async def _next_queue_number(repo, schedule_id: str, day: str, appointment_id: str) -> int:
    conn, tenant = repo.conn, repo.ctx.tenant
    await _advisory_lock(conn, f"queue|{tenant}|{schedule_id}|{day}")
    where = and_(queue_number.c.tenant == tenant, queue_number.c.schedule == schedule_id, queue_number.c.day == day)
    current = (await conn.execute(select(func.max(queue_number.c.number)).where(where))).scalar()
    number = (current or 0) + 1
    await conn.execute(insert(queue_number).values(tenant=tenant, schedule=schedule_id, day=day, number=number,
                                                   appointment=appointment_id, created_ts=now_us()))
    return number


# Reminders 24 h and 2 h before the start (only those still in the future).
REMINDER_OFFSETS = (("24h", 24 * 60), ("2h", 2 * 60))


async def _schedule_reminders(conn, tenant: str, appointment_id: str, start_us: int, now: int, *,
                              fresh: bool = False) -> None:
    if not fresh:
        await conn.execute(delete(reminder).where(reminder.c.tenant == tenant, reminder.c.appointment == appointment_id))
    rows = [{"tenant": tenant, "appointment": appointment_id, "kind": kind,
             "due_us": start_us - minutes * US_PER_MIN, "sent_us": None}
            for kind, minutes in REMINDER_OFFSETS if start_us - minutes * US_PER_MIN > now]
    if rows:
        await conn.execute(insert(reminder), rows)


async def due_reminders(conn: AsyncConnection, *, now_us_: int | None = None, limit: int = 500,
                        tenants: list[str] | None = None) -> list[dict]:
    """Reminders due and not sent yet, oldest first: {tenant, appointment, kind, due_us}."""
    now = now_us_ or now_us()
    query = select(reminder).where(reminder.c.due_us <= now, reminder.c.sent_us.is_(None))
    if tenants is not None:
        query = query.where(reminder.c.tenant.in_(tenants))
    rows = await conn.execute(query.order_by(reminder.c.due_us).limit(limit))
    return [{"tenant": r.tenant, "appointment": r.appointment, "kind": r.kind, "due_us": r.due_us} for r in rows]


async def mark_reminder_sent(conn: AsyncConnection, tenant: str, appointment_id: str, kind: str) -> None:
    await conn.execute(update(reminder).where(reminder.c.tenant == tenant, reminder.c.appointment == appointment_id,
                                              reminder.c.kind == kind).values(sent_us=now_us(), outcome="sent"))


async def reminders_of(conn: AsyncConnection, tenant: str, appointment_id: str) -> list[dict]:
    rows = await conn.execute(select(reminder).where(reminder.c.tenant == tenant,
                                                     reminder.c.appointment == appointment_id)
                              .order_by(reminder.c.due_us))
    return [{"kind": r.kind, "due_us": r.due_us, "sent": r.outcome == "sent", "outcome": r.outcome} for r in rows]


# ------------------------------------------------------------------ no-shows
async def block_status(conn: AsyncConnection, tenant: str, patient: str, now: int | None = None):
    now = now or now_us()
    row = (await conn.execute(select(booking_block).where(
        booking_block.c.tenant == tenant, booking_block.c.patient == patient,
        booking_block.c.blocked_until > now))).first()
    return (row.blocked_until, row.reason) if row else None


async def _record_noshow(repo, appt: dict, rules: BookingRules, now: int) -> None:
    patient = patient_of(appt)
    if patient is None or rules.block_days == 0:
        return
    since = from_us(now - rules.noshow_window_days * 24 * 3600 * 1_000_000)
    earlier = await system_repo(repo).search("Appointment", [
        ("patient", f"Patient/{patient}"), ("status", "noshow"), ("date", f"ge{since.isoformat()}"),
        ("_summary", "count")])
    count = (earlier.total or 0) + 1
    if count < rules.noshow_threshold:
        return
    until = now + rules.block_days * 24 * 3600 * 1_000_000
    reason = f"{rules.noshow_window_days} 天内爽约 {count} 次 ({count} no-shows in {rules.noshow_window_days} days)"
    conn, tenant = repo.conn, repo.ctx.tenant
    await conn.execute(delete(booking_block).where(booking_block.c.tenant == tenant, booking_block.c.patient == patient))
    await conn.execute(insert(booking_block).values(tenant=tenant, patient=patient, blocked_until=until,
                                                    reason=reason, created_ts=now))


async def lift_block(conn: AsyncConnection, tenant: str, patient: str) -> bool:
    result = await conn.execute(delete(booking_block).where(booking_block.c.tenant == tenant,
                                                            booking_block.c.patient == patient))
    return result.rowcount > 0


# ------------------------------------------------------------------ services
async def may_act_for(repo: FhirRepository, actor: Actor, patient_id: str) -> bool:
    """A patient acts for themselves and for those they are the guardian of (a
    RelatedPerson of that patient naming the guardian's own Patient); staff and the
    system act for anyone of their hospital."""
    if not actor.is_patient:
        return True
    if actor.patient is None:
        return False
    if patient_id == actor.patient:
        return True
    from yiyun.hospital.codes import EXT_GUARDIAN_PATIENT

    sys_repo = system_repo(repo, actor)
    found = await sys_repo.search("RelatedPerson", [("patient", f"Patient/{patient_id}"), ("_count", "20")])
    for rp in found.matches:
        r = rp.resource
        if r.get("active") is False:
            continue
        for ext in r.get("extension") or []:
            if ext.get("url") == EXT_GUARDIAN_PATIENT and ref_id(ext.get("valueReference"), "Patient") == actor.patient:
                return await _guardianship_current(sys_repo, r, patient_id)
    return False


async def _guardianship_current(repo: FhirRepository, related: dict, ward_id: str) -> bool:
    """A parent's guardianship ends when the child turns 18 (《民法典》第十七条、第十八条),
    unless it is the guardianship of an adult without full capacity (第二十八条), recorded by
    the relationship code `identity.care.ADULT_GUARDIAN_CODE`. Without a birthDate the link
    stands, as the access policy keeps it (`identity.care`)."""
    from yiyun.hospital.codes import age_in_years, latest_birth_date, today_local
    from yiyun.identity.care import ADULT_AGE, ADULT_GUARDIAN_CODE, GUARDIANSHIP_SYSTEM

    for rel in related.get("relationship") or []:
        for coding in (rel or {}).get("coding") or []:
            if coding.get("system") == GUARDIANSHIP_SYSTEM and coding.get("code") == ADULT_GUARDIAN_CODE:
                return True
    ward = await repo._current("Patient", ward_id)  # noqa: SLF001
    born = latest_birth_date(ward.resource.get("birthDate")) if ward is not None and not ward.deleted else None
    return born is None or age_in_years(born, today_local()) < ADULT_AGE


async def book_appointment(repo: FhirRepository, actor: Actor, appointment) -> StoredResource:
    """Book from a client's Appointment (`$book`): status proposed or booked, one Slot, a
    Patient participant. Returns the stored, booked Appointment."""
    appt = dict(check_resource_body(appointment, "Appointment"))
    if appt.get("status") not in ("proposed", "booked"):
        raise Unprocessable("预约状态必须是 proposed 或 booked (appointment status must be proposed or booked)",
                            expression=["Appointment.status"])
    sids = slot_ids(appt)
    if len(sids) != 1:
        raise Unprocessable("预约必须引用且只引用一个号源 (the appointment must reference exactly one Slot)",
                            expression=["Appointment.slot"])
    patient = patient_of(appt)
    if patient is None:
        raise Unprocessable("预约必须指明就诊人 (the appointment needs a Patient participant)",
                            expression=["Appointment.participant"])
    if not await may_act_for(repo, actor, patient):
        raise Forbidden("只能为本人或监护的家人预约 (you may book only for yourself or your wards)")
    appt.pop("id", None)
    appt.pop("meta", None)
    appt["status"] = "booked"
    for p in appt.get("participant") or []:
        if isinstance(p, dict):
            p.setdefault("status", "accepted")
    repo.booking_actor = actor
    try:
        return (await repo.create(appt)).stored
    finally:
        repo.booking_actor = None


async def book(repo: FhirRepository, actor: Actor, slot_id: str, patient_id: str, *,
               comment: str | None = None, based_on: str | None = None) -> StoredResource:
    """Book Slot `slot_id` for Patient `patient_id` (JSON API, pages, follow-up/referral by staff)."""
    if not isinstance(slot_id, str) or not slot_id or not isinstance(patient_id, str) or not patient_id:
        raise BadRequest("需要号源和就诊人 (slot and patient are required)")
    if not await repo.exists("Patient", patient_id):
        raise NotFound(f"未找到就诊人 Patient/{patient_id} (patient not found)")
    appt: dict = {
        "resourceType": "Appointment",
        "status": "booked",
        "slot": [{"reference": f"Slot/{slot_id}"}],
        "participant": [{"actor": {"reference": f"Patient/{patient_id}"}, "required": "required",
                         "status": "accepted"}],
    }
    if comment:
        appt["comment"] = comment[:500]
    if based_on:
        appt["basedOn"] = [{"reference": based_on}]
    if actor.kind == "staff":
        appt["appointmentType"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276",
                                               "code": "FOLLOWUP", "display": "A follow up visit"}],
                                   "text": "复诊/转诊预约"}
    return await book_appointment(repo, actor, appt)


async def _visible_appointment(repo: FhirRepository, actor: Actor, appointment_id: str) -> StoredResource:
    try:
        stored = await repo.read("Appointment", appointment_id)
    except NotFound:
        raise NotFound(f"未找到预约 Appointment/{appointment_id} (appointment not found)") from None
    patient = patient_of(stored.resource)
    if actor.is_patient and (patient is None or not await may_act_for(repo, actor, patient)):
        # someone else's booking: not found rather than forbidden (its existence is private)
        raise NotFound(f"未找到预约 Appointment/{appointment_id} (appointment not found)")
    return stored


async def _update_as(repo: FhirRepository, actor: Actor, stored: StoredResource, resource: dict) -> StoredResource:
    repo.booking_actor = actor
    try:
        return (await repo.update("Appointment", stored.res_id, resource, if_match=stored.version_id)).stored
    finally:
        repo.booking_actor = None


async def cancel(repo: FhirRepository, actor: Actor, appointment_id: str, reason: str | None = None) -> StoredResource:
    """Cancel an active booking; the write hook frees its Slot (cut-off applies to patients)."""
    stored = await _visible_appointment(repo, actor, appointment_id)
    appt = dict(stored.resource)
    if appt.get("status") == "cancelled":
        raise Conflict("该预约已取消，请勿重复提交 (appointment already cancelled)")
    if not is_active(appt):
        raise Conflict(f"预约状态为 {appt.get('status')}，不能取消 (only active appointments can be cancelled)")
    appt["status"] = "cancelled"
    code = "pat" if actor.is_patient else "prov"
    appt["cancelationReason"] = {"coding": [{"system": CANCEL_REASON, "code": code,
                                             "display": "Patient" if code == "pat" else "Provider"}],
                                 "text": (reason or ("患者取消" if code == "pat" else "医院取消"))[:300]}
    appt.pop("meta", None)
    return await _update_as(repo, actor, stored, appt)


async def reschedule(repo: FhirRepository, actor: Actor, appointment_id: str, new_slot_id: str) -> StoredResource:
    """Move an active booking to another Slot in one unit of work: the old Slot is freed
    (under the cut-off), the new one taken (under the booking rules), a new queue number given."""
    if not isinstance(new_slot_id, str) or not new_slot_id:
        raise BadRequest("需要新的号源 (a new slot is required)")
    stored = await _visible_appointment(repo, actor, appointment_id)
    appt = dict(stored.resource)
    if not is_active(appt):
        raise Conflict(f"预约状态为 {appt.get('status')}，不能改约 (only active appointments can be rescheduled)")
    if slot_ids(appt) == [new_slot_id]:
        raise Conflict("新号源与原号源相同 (the new slot is the current one)")
    appt["slot"] = [{"reference": f"Slot/{new_slot_id}"}]
    keep = {"Patient", "RelatedPerson"}
    appt["participant"] = [p for p in appt.get("participant") or []
                           if ((p.get("actor") or {}).get("reference") or "").split("/")[0] in keep]
    appt.pop("meta", None)
    return await _update_as(repo, actor, stored, appt)


async def mark_noshow(repo: FhirRepository, actor: Actor, appointment_id: str) -> StoredResource:
    """Staff record that the patient did not come (after the start); counts towards a block."""
    if actor.is_patient:
        raise Forbidden("只有医院工作人员可以登记爽约 (only staff record no-shows)")
    stored = await _visible_appointment(repo, actor, appointment_id)
    appt = dict(stored.resource)
    if appt.get("status") not in ("booked", "pending", "proposed"):
        raise Conflict(f"预约状态为 {appt.get('status')}，不能登记爽约 (only booked appointments can be no-shows)")
    start = _start_us(appt)
    if start is not None and start > now_us():
        raise Unprocessable("就诊时间未到，不能登记爽约 (the appointment has not started yet)")
    appt["status"] = "noshow"
    appt.pop("meta", None)
    return await _update_as(repo, actor, stored, appt)


async def appointments_of(repo: FhirRepository, patient_id: str, *, count: int = 50) -> list[StoredResource]:
    result = await repo.search("Appointment", [("patient", f"Patient/{patient_id}"), ("_sort", "-date"),
                                               ("_count", str(count))])
    return result.matches


def summarise(appt: dict, tenant: str | None = None) -> dict:
    """What a patient and the pages see of a booking."""
    cancel = appt.get("cancelationReason") or {}
    return {
        "id": appt.get("id"),
        "hospital": tenant,
        "status": appt.get("status"),
        "start": appt.get("start"),
        "end": appt.get("end"),
        "slot": (slot_ids(appt) or [None])[0],
        "patient": patient_of(appt),
        "practitioner_role": (participant_ids(appt, "PractitionerRole") or [None])[0],
        "service": (participant_ids(appt, "HealthcareService") or [None])[0],
        "consultation_type": consultation_type_of(appt),
        "queue_number": queue_number_of(appt),
        "cancel_reason": cancel.get("text"),
        "version": (appt.get("meta") or {}).get("versionId"),
    }
