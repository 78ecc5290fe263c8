"""Waitlist (候补挂号): a patient waits for a full day of a doctor's schedule and is booked
automatically when a slot of that day frees.

- A patient (or their guardian) joins for one Schedule (a doctor's consultation type) and one
  local day, only when that day has sessions and none of its slots is free, at most
  `MAX_WAITING_PER_PATIENT` entries at a time per hospital; they may leave at any time.
- When a booking of that day is cancelled or moved (by the patient, the hospital, `$cancel`),
  the freed slot is offered in the same unit of work, first come first served, to each
  waiting patient in turn through the booking service as if they booked themselves
  (`booking.book` with the patient as actor: block, window and daily limits apply); the
  first for whom it succeeds gets it and is notified in the app and by SMS; an entry whose
  booking fails stays waiting with the reason in `note`.
- Exactly one patient gets a freed slot: the slot's row is locked by the cancellation until
  its commit (PostgreSQL `FOR UPDATE`; SQLite has one writer at a time), and the day's
  waitlist is served under a transaction-scoped lock of its own, which joining also takes,
  so an entry is never served twice and nobody joins a day whose slot has just been freed
  without being served.
- Slots freed by any other path (a plain FHIR write) are served by `fill_waitlists`, run by
  an administrator (`POST /api/hospital/waitlist/fill`) or a periodic job; it also expires
  the entries of past days.

    entry = await join(repo, actor, schedule_id, day, patient_id)
    await leave(conn, tenant, entry_id, patient_ids)
    items = await entries_of(conn, tenant, patient_ids)
    served = await offer_freed(repo, slot_ids)         # after a cancellation or reschedule
    served = await fill_waitlists(repo)                # sweep a hospital
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import Conflict, Forbidden, NotFound, Unprocessable, YiyunError
from yiyun.core.logging import get_logger
from yiyun.fhir.model import now_us
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital import booking, catalogue, notifications, schedules
from yiyun.hospital.codes import (
    ACTIVE_STATUSES,
    CHINA_TZ,
    CONSULTATION_TYPES,
    consultation_type_of,
    instant,
    local_day,
    parse_instant,
    ref_id,
    today_local,
)
from yiyun.hospital.leave import covers, doctor_title
from yiyun.hospital.models import waitlist

log = get_logger("yiyun.hospital.waitlist")

MAX_WAITING_PER_PATIENT = 3
WAITLIST_SUBJECT = "system:waitlist"


@dataclass
class Entry:
    id: int
    schedule: str
    day: str
    patient: str
    status: str
    appointment: str | None
    note: str | None
    created_ts: int

    def as_dict(self) -> dict:
        return asdict(self)


def _entry(row) -> Entry:
    return Entry(row.id, row.schedule, row.day, row.patient, row.status, row.appointment, row.note, row.created_ts)


def _day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=CHINA_TZ)
    return start, start + timedelta(days=1)


async def _lock_day(conn: AsyncConnection, tenant: str, schedule_id: str, day: str) -> None:
    # transaction-scoped: held until the commit of whoever serves or joins this day
    await booking._advisory_lock(conn, f"waitlist|{tenant}|{schedule_id}|{day}")  # noqa: SLF001


async def day_slots(repo: FhirRepository, schedule_id: str, day: date) -> list[dict]:
    lo, hi = _day_range(day)
    return await schedules.find_slots(repo, schedule_id, start=lo, end=hi, status=None, count=500)


def _future_free(slots: list[dict]) -> list[dict]:
    now = datetime.now(timezone.utc)
    return [s for s in slots if s.get("status") == "free" and (parse_instant(s.get("start")) or now) > now]


# ------------------------------------------------------------------ joining and leaving
async def join(repo: FhirRepository, actor: booking.Actor, schedule_id: str, day: date,
               patient_id: str) -> Entry:
    """Put `patient_id` on the waitlist of `schedule_id` for local `day`."""
    conn, tenant = repo.conn, repo.ctx.tenant
    if not await booking.may_act_for(repo, actor, patient_id):
        raise Forbidden("只能为本人或监护的家人候补 (you may join the waitlist only for yourself or your wards)")
    rules = await booking.get_rules(conn, tenant)
    if day < today_local() or day > today_local() + timedelta(days=rules.booking_window_days):
        raise Unprocessable(f"只能候补今天起 {rules.booking_window_days} 天内的号 "
                            f"(the waitlist is open for the next {rules.booking_window_days} days)")
    try:
        sched = (await repo.read("Schedule", schedule_id)).resource
    except NotFound:
        raise NotFound(f"未找到排班 Schedule/{schedule_id} (schedule not found)") from None
    if sched.get("active") is False:
        raise Unprocessable("该医生已停止此项服务 (the doctor no longer offers this service)")
    await _lock_day(conn, tenant, schedule_id, day.isoformat())
    slots = await day_slots(repo, schedule_id, day)
    if _future_free(slots):
        raise Conflict("当天仍有可预约的号源，请直接预约 (slots are still free that day: book one)")
    if not any(s.get("status") == "busy" for s in slots):
        raise Unprocessable("医生当天不出诊或已停诊，无法候补 (the doctor has no session that day)")
    await _check_patient_entries(conn, tenant, schedule_id, day.isoformat(), patient_id)
    await _check_not_booked(repo, sched, day, patient_id)
    ts = now_us()
    result = await conn.execute(insert(waitlist).values(
        tenant=tenant, schedule=schedule_id, day=day.isoformat(), patient=patient_id, status="waiting",
        appointment=None, note=None, created_ts=ts, updated_ts=ts))
    return Entry(int(result.inserted_primary_key[0]), schedule_id, day.isoformat(), patient_id, "waiting", None,
                 None, ts)


async def _check_patient_entries(conn, tenant: str, schedule_id: str, day: str, patient_id: str) -> None:
    rows = (await conn.execute(select(waitlist).where(
        waitlist.c.tenant == tenant, waitlist.c.patient == patient_id, waitlist.c.status == "waiting",
        waitlist.c.day >= today_local().isoformat()))).all()
    if any(r.schedule == schedule_id and r.day == day for r in rows):
        raise Conflict("您已在该号的候补队列中 (already on this waitlist)")
    if len(rows) >= MAX_WAITING_PER_PATIENT:
        raise Unprocessable(f"同一就诊人最多同时候补 {MAX_WAITING_PER_PATIENT} 个号 "
                            f"(at most {MAX_WAITING_PER_PATIENT} waitlist entries at a time)")


async def _check_not_booked(repo: FhirRepository, sched: dict, day: date, patient_id: str) -> None:
    """Refuse one who already holds a booking with this doctor for this type that day."""
    lo, hi = _day_range(day)
    roles = {f"PractitionerRole/{rid}" for a in sched.get("actor") or [] if (rid := ref_id(a, "PractitionerRole"))}
    ctype = consultation_type_of(sched)
    found = await booking.system_repo(repo).search("Appointment", [
        ("patient", f"Patient/{patient_id}"), ("date", f"ge{lo.isoformat()}"), ("date", f"lt{hi.isoformat()}"),
        ("status", ",".join(sorted(ACTIVE_STATUSES))), ("_count", "50")])
    for s in found.matches:
        held = {f"PractitionerRole/{r}" for r in booking.participant_ids(s.resource, "PractitionerRole")}
        if roles & held and consultation_type_of(s.resource) == ctype:
            raise Conflict("您当天已预约该医生的号 (you already hold a booking with this doctor that day)")


async def leave(conn: AsyncConnection, tenant: str, entry_id: int, patient_ids: set[str] | None) -> Entry:
    """Leave the waitlist (`patient_ids`: those the caller acts for; None for staff)."""
    row = (await conn.execute(select(waitlist).where(waitlist.c.tenant == tenant, waitlist.c.id == entry_id))).first()
    if row is None or (patient_ids is not None and row.patient not in patient_ids):
        raise NotFound(f"未找到候补记录 {entry_id} (waitlist entry not found)")
    if row.status != "waiting":
        raise Conflict("该候补已结束，无需取消 (this waitlist entry is no longer waiting)")
    await conn.execute(update(waitlist).where(waitlist.c.id == entry_id, waitlist.c.status == "waiting")
                       .values(status="left", updated_ts=now_us()))
    return Entry(**{**_entry(row).as_dict(), "status": "left"})


async def entries_of(conn: AsyncConnection, tenant: str, patient_ids: list[str], *, limit: int = 50) -> list[Entry]:
    """The patients' entries, newest first (waiting ones of past days shown as expired)."""
    if not patient_ids:
        return []
    rows = await conn.execute(select(waitlist).where(waitlist.c.tenant == tenant, waitlist.c.patient.in_(patient_ids))
                              .order_by(waitlist.c.id.desc()).limit(limit))
    today = today_local().isoformat()
    out = []
    for r in rows:
        e = _entry(r)
        if e.status == "waiting" and e.day < today:
            e.status = "expired"
        out.append(e)
    return out


async def position(conn: AsyncConnection, entry: Entry, tenant: str) -> int:
    """1 for the first waiting patient of the day."""
    return int((await conn.execute(select(func.count()).select_from(waitlist).where(
        waitlist.c.tenant == tenant, waitlist.c.schedule == entry.schedule, waitlist.c.day == entry.day,
        waitlist.c.status == "waiting", waitlist.c.id <= entry.id))).scalar() or 0)


# ------------------------------------------------------------------ serving
async def offer_freed(repo: FhirRepository, slot_ids: list[str]) -> list[tuple[int, str]]:
    """Offer each of these (just freed) Slots to its day's waitlist; returns (entry, appointment) served."""
    served = []
    for sid in slot_ids:
        got = await _serve_slot(repo, sid)
        if got is not None:
            served.append(got)
    return served


async def _blocked(conn: AsyncConnection, tenant: str, slot: dict, schedule: dict) -> bool:
    """Under a leave or closure: the slot was freed by the hospital's own cancellation."""
    s0, s1 = parse_instant(slot.get("start")), parse_instant(slot.get("end"))
    if not s0 or not s1:
        return True
    exceptions = await schedules.exceptions_of(conn, tenant, since_us=int(s0.timestamp() * 1e6),
                                               until_us=int(s1.timestamp() * 1e6))
    return any(x.kind in ("leave", "closed") and covers(x.target, schedule) for x in exceptions)


async def _serve_slot(repo: FhirRepository, slot_id: str) -> tuple[int, str] | None:
    conn, tenant = repo.conn, repo.ctx.tenant
    stored = await repo._current("Slot", slot_id)  # noqa: SLF001 (current version, no access filter needed)
    if stored is None or stored.deleted:
        return None
    schedule_id = ref_id(stored.resource.get("schedule"), "Schedule")
    start = parse_instant(stored.resource.get("start"))
    if schedule_id is None or start is None or start <= datetime.now(timezone.utc):
        return None
    day = local_day(start).isoformat()
    # the Slot's row first, then the day's lock, the order a cancellation takes them in; the
    # waiting entries are read under the lock, so one who joined meanwhile is seen
    slot = await repo._current("Slot", slot_id, lock=True)  # noqa: SLF001 (the repository's row lock)
    await _lock_day(conn, tenant, schedule_id, day)
    if slot is None or slot.deleted or slot.resource.get("status") != "free":
        return None
    rows = (await conn.execute(select(waitlist).where(_waiting_on(tenant, schedule_id, day))
                               .order_by(waitlist.c.id))).all()
    if not rows:
        return None
    sched = await repo._current("Schedule", schedule_id)  # noqa: SLF001
    if sched is None or await _blocked(conn, tenant, slot.resource, sched.resource):
        return None
    for row in rows:
        appointment = await _try_book(repo, _entry(row), slot_id)
        if appointment is not None:
            return row.id, appointment
    return None


def _waiting_on(tenant: str, schedule_id: str, day: str):
    return and_(waitlist.c.tenant == tenant, waitlist.c.schedule == schedule_id, waitlist.c.day == day,
                waitlist.c.status == "waiting")


async def _try_book(repo: FhirRepository, entry: Entry, slot_id: str) -> str | None:
    """Book `slot_id` for the entry's patient under the patient's rules; None when refused."""
    conn = repo.conn
    actor = booking.Actor("patient", WAITLIST_SUBJECT, entry.patient, ("patient",))
    writer = booking.system_repo(repo, actor)
    # the audit trail names the waitlist, not whoever's cancellation freed the slot
    writer.ctx = replace(writer.ctx, subject=WAITLIST_SUBJECT, roles=())
    try:
        # a savepoint: a refused attempt leaves nothing behind for the next patient's
        async with conn.begin_nested():
            stored = await booking.book(writer, actor, slot_id, entry.patient, comment="候补挂号 (waitlist)")
    except YiyunError as err:
        await conn.execute(update(waitlist).where(waitlist.c.id == entry.id)
                           .values(note=err.message[:300], updated_ts=now_us()))
        log.info("waitlist_attempt_refused", entry=entry.id, reason=err.message[:120])
        return None
    await conn.execute(update(waitlist).where(waitlist.c.id == entry.id)
                       .values(status="booked", appointment=stored.res_id, note=None, updated_ts=now_us()))
    await notifications.notify_patient(writer, entry.patient, await _booked_notice(repo, stored.resource),
                                       kind=notifications.WAITLIST_BOOKED, about=f"Appointment/{stored.res_id}")
    return stored.res_id


async def _booked_notice(repo: FhirRepository, appt: dict) -> str:
    when = parse_instant(appt.get("start"))
    when_text = when.astimezone(CHINA_TZ).strftime("%m月%d日 %H:%M") if when else ""
    doctor = ""
    role = (booking.participant_ids(appt, "PractitionerRole") or [None])[0]
    try:
        d = await catalogue.load_directory(repo.conn, repo.ctx.tenant)
        if role in d.roles:
            doctor = doctor_title(catalogue.doctor_summary(d, role)["name"])
    except YiyunError:
        pass
    ctype = CONSULTATION_TYPES.get(consultation_type_of(appt) or "", ("就诊",))[0]
    number = booking.queue_number_of(appt)
    return (f"候补成功：已为您预约{when_text} {doctor}{ctype}"
            + (f"，就诊序号 {number}" if number else "") + "。如不能前来，请在“我的预约”中取消。")


async def fill_waitlists(repo: FhirRepository) -> list[tuple[int, str]]:
    """Serve every waiting entry of this hospital whose day has a free slot (slots freed by
    paths that do not offer them at once) and expire the entries of past days."""
    conn, tenant = repo.conn, repo.ctx.tenant
    today = today_local()
    await conn.execute(update(waitlist).where(waitlist.c.tenant == tenant, waitlist.c.status == "waiting",
                                              waitlist.c.day < today.isoformat())
                       .values(status="expired", updated_ts=now_us()))
    days = (await conn.execute(select(waitlist.c.schedule, waitlist.c.day).where(
        waitlist.c.tenant == tenant, waitlist.c.status == "waiting").distinct())).all()
    served = []
    for schedule_id, day in days:
        for slot in _future_free(await day_slots(repo, schedule_id, date.fromisoformat(day))):
            got = await _serve_slot(repo, slot["id"])
            if got is not None:
                served.append(got)
    return served


async def close_for_leave(repo: FhirRepository, target: str, start: datetime, end: datetime) -> list[int]:
    """After a leave or closure: waiting entries whose day has no session left are ended
    (`expired`, note 医生停诊) and their patients told; returns their ids."""
    conn, tenant = repo.conn, repo.ctx.tenant
    first, last = local_day(start).isoformat(), local_day(end).isoformat()
    rows = (await conn.execute(select(waitlist).where(
        waitlist.c.tenant == tenant, waitlist.c.status == "waiting", waitlist.c.day >= first,
        waitlist.c.day <= last))).all()
    closed = []
    for row in rows:
        sched = await repo._current("Schedule", row.schedule)  # noqa: SLF001
        if sched is None or not covers(target, sched.resource):
            continue
        slots = await day_slots(repo, row.schedule, date.fromisoformat(row.day))
        if any(s.get("status") in ("free", "busy") for s in slots):
            continue  # part of the day is still held: the entry may yet be served
        await conn.execute(update(waitlist).where(waitlist.c.id == row.id, waitlist.c.status == "waiting")
                           .values(status="expired", note="医生停诊 (doctor unavailable)", updated_ts=now_us()))
        text = f"您候补的{row.day}的号因医生停诊已无法预约，候补已结束。请在“找医生”中选择其他号源。"
        await notifications.notify_patient(booking.system_repo(repo), row.patient, text,
                                           kind=notifications.DOCTOR_UNAVAILABLE)
        closed.append(row.id)
    return closed


def freed_by(appt: dict) -> list[str]:
    """The Slots an active booking holds (to offer once it is cancelled or moved)."""
    return booking.slot_ids(appt) if booking.is_active(appt) else []


async def full_days(repo: FhirRepository, schedule_ids: list[str], *, days: int = 7) -> dict[str, list[str]]:
    """Per Schedule, the local days (YYYY-MM-DD) from today with sessions but no free slot."""
    if not schedule_ids:
        return {}
    start = datetime.combine(today_local(), time(0), tzinfo=CHINA_TZ)
    result = await repo.search("Slot", [
        ("schedule", ",".join(f"Schedule/{s}" for s in schedule_ids)), ("start", f"ge{instant(start)}"),
        ("start", f"lt{instant(start + timedelta(days=days))}"), ("_count", "2000")])
    now = datetime.now(timezone.utc)
    seen: dict[tuple[str, str], set[str]] = {}
    for s in result.matches:
        r = s.resource
        t = parse_instant(r.get("start"))
        sid = ref_id(r.get("schedule"), "Schedule")
        if t is None or sid is None or t <= now:
            continue
        seen.setdefault((sid, local_day(t).isoformat()), set()).add(r.get("status"))
    out: dict[str, list[str]] = {}
    for (sid, day), statuses in sorted(seen.items()):
        if "busy" in statuses and "free" not in statuses:  # booked out, not closed
            out.setdefault(sid, []).append(day)
    return out
