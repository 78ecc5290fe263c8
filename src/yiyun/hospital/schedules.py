"""Schedules: a doctor's consultation types, recurring templates, exceptions and leave,
and the FHIR Slots generated from them.

A `Schedule` (FHIR) is one doctor (PractitionerRole) in one department
(HealthcareService) for one consultation type (`serviceType`, see `yiyun.hospital.codes`),
with its fee as an extension. Templates and exceptions are configuration rows
(`hospital_schedule_template`, `hospital_schedule_exception`); the Slots generated from
them are FHIR resources with stable ids (`<schedule>-<YYYYMMDDHHMM>` in local time), so
generating again is idempotent and only adds what is missing.

Service API (plain async functions, inside a unit of work; callers check who may do it):

    sched = await create_schedule(repo, role_id, "clinic", fee_fen=2500)
    tid   = await add_template(repo.conn, tenant, sched.res_id, weekdays=[1, 3], start="08:00",
                               end="12:00", slot_minutes=30)
    await add_exception(repo.conn, tenant, kind="leave", target="PractitionerRole/r1",
                        start=datetime, end=datetime, reason="年假")
    report = await generate_slots(repo, schedule_ids=None, start_day=date, days=14)
    slots  = await find_slots(repo, schedule_id, start=..., end=..., status="free")
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest, NotFound
from yiyun.fhir.ids import is_valid_id
from yiyun.fhir.model import StoredResource, now_us
from yiyun.fhir.repository import FhirRepository, PlannedWrite
from yiyun.hospital.codes import (
    CHINA_TZ,
    CONSULTATION_TYPES,
    consultation_concept,
    consultation_type_of,
    fee_extension,
    instant,
    ref_id,
    to_us,
)
from yiyun.hospital.models import schedule_exception, schedule_template

EXCEPTION_KINDS = ("leave", "closed", "extra")
# Timed slots of at most 30 minutes are what the national guidance on timed booking asks
# of tertiary hospitals (国卫办医函〔2020〕405号: 预约时段精确到30分钟); longer ones are
# allowed for online sessions and small clinics.
SLOT_MINUTES = (5, 120)


# ------------------------------------------------------------------ schedules
def schedule_id_for(role_id: str, consultation_type: str) -> str:
    sid = f"sch-{role_id}-{consultation_type}"
    return sid if len(sid) <= 48 else f"sch-{zlib.crc32(sid.encode()):08x}-{consultation_type}"


async def create_schedule(repo: FhirRepository, role_id: str, consultation_type: str, *, fee_fen: int,
                          active: bool = True, comment: str | None = None) -> StoredResource:
    """Create or update the Schedule of a doctor's consultation type (idempotent)."""
    if consultation_type not in CONSULTATION_TYPES:
        raise BadRequest(f"未知的问诊类型 {consultation_type!r}；可用：{', '.join(CONSULTATION_TYPES)} "
                         f"(unknown consultation type)")
    if not isinstance(fee_fen, int) or isinstance(fee_fen, bool) or not 0 <= fee_fen <= 1_000_000:
        raise BadRequest("诊查费须为 0–1,000,000 分的整数 (fee in fen, 0 to 1,000,000)")
    if not is_valid_id(role_id):
        raise BadRequest(f"医生岗位 id 不合法: {role_id!r} (invalid role id)")
    role = await repo.read("PractitionerRole", role_id)
    r = role.resource
    actors = [{"reference": f"PractitionerRole/{role_id}", "display": (r.get("practitioner") or {}).get("display")}]
    for hs in r.get("healthcareService") or []:
        actors.append({k: v for k, v in hs.items() if k in ("reference", "display")})
    actors = [{k: v for k, v in a.items() if v} for a in actors]
    sched_id = schedule_id_for(role_id, consultation_type)
    zh = CONSULTATION_TYPES[consultation_type][0]
    resource = {
        "resourceType": "Schedule",
        "id": sched_id,
        "extension": [fee_extension(fee_fen)],
        "active": active,
        "serviceType": [consultation_concept(consultation_type)],
        "actor": actors,
        "comment": comment or f"{(r.get('practitioner') or {}).get('display', '')} {zh}".strip(),
    }
    if r.get("specialty"):
        resource["specialty"] = r["specialty"]
    return (await repo.update("Schedule", sched_id, resource)).stored


async def schedules_of(repo: FhirRepository, *, role_id: str | None = None, service_id: str | None = None,
                       consultation_type: str | None = None, count: int = 500) -> list[StoredResource]:
    params = [("_count", str(count))]
    if role_id:
        params.append(("actor", f"PractitionerRole/{role_id}"))
    if service_id:
        params.append(("actor", f"HealthcareService/{service_id}"))
    if consultation_type:
        params.append(("service-type", consultation_type))
    return (await repo.search("Schedule", params)).matches


# ------------------------------------------------------------------ templates
def _hhmm(value: str, name: str) -> time:
    try:
        hh, mm = value.split(":")
        return time(int(hh), int(mm))
    except (ValueError, AttributeError):
        raise BadRequest(f"{name} 须为 HH:MM 格式 (expected HH:MM)") from None


def _day(value: str | None, name: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} 须为 YYYY-MM-DD 日期 (expected a date)") from None


@dataclass
class Template:
    id: int
    schedule: str
    weekdays: list[int]
    start: str
    end: str
    slot_minutes: int
    valid_from: str | None = None
    valid_to: str | None = None

    def applies(self, day: date) -> bool:
        if day.isoweekday() not in self.weekdays:
            return False
        if self.valid_from and day < date.fromisoformat(self.valid_from):
            return False
        return not (self.valid_to and day > date.fromisoformat(self.valid_to))


async def add_template(conn: AsyncConnection, tenant: str, schedule_id: str, *, weekdays: list[int], start: str,
                       end: str, slot_minutes: int, valid_from: str | None = None,
                       valid_to: str | None = None) -> int:
    """A recurring session; returns its id. Times are China Standard Time."""
    if not weekdays or any(not isinstance(d, int) or not 1 <= d <= 7 for d in weekdays):
        raise BadRequest("星期须为 1（周一）到 7（周日）(weekdays are 1 = Monday … 7 = Sunday)")
    t0, t1 = _hhmm(start, "开始时间"), _hhmm(end, "结束时间")
    if t0 >= t1:
        raise BadRequest("开始时间须早于结束时间 (start must be before end)")
    lo, hi = SLOT_MINUTES
    if not isinstance(slot_minutes, int) or not lo <= slot_minutes <= hi:
        raise BadRequest(f"每个号源时长须为 {lo}–{hi} 分钟 (slot length out of range)")
    d0, d1 = _day(valid_from, "生效日期"), _day(valid_to, "失效日期")
    if d0 and d1 and d0 > d1:
        raise BadRequest("生效日期须早于失效日期 (valid_from after valid_to)")
    result = await conn.execute(insert(schedule_template).values(
        tenant=tenant, schedule=schedule_id, weekdays=",".join(str(d) for d in sorted(set(weekdays))),
        start_time=t0.strftime("%H:%M"), end_time=t1.strftime("%H:%M"), slot_minutes=slot_minutes,
        valid_from=d0.isoformat() if d0 else None, valid_to=d1.isoformat() if d1 else None, created_ts=now_us()))
    return int(result.inserted_primary_key[0])


async def templates_of(conn: AsyncConnection, tenant: str, schedule_ids: list[str] | None = None) -> list[Template]:
    stmt = select(schedule_template).where(schedule_template.c.tenant == tenant)
    if schedule_ids is not None:
        stmt = stmt.where(schedule_template.c.schedule.in_(schedule_ids))
    rows = await conn.execute(stmt.order_by(schedule_template.c.id))
    return [Template(r.id, r.schedule, [int(x) for x in r.weekdays.split(",") if x], r.start_time, r.end_time,
                     r.slot_minutes, r.valid_from, r.valid_to) for r in rows]


async def remove_template(conn: AsyncConnection, tenant: str, template_id: int) -> None:
    result = await conn.execute(delete(schedule_template).where(schedule_template.c.tenant == tenant,
                                                                schedule_template.c.id == template_id))
    if result.rowcount == 0:
        raise NotFound(f"未找到排班模板 {template_id} (template not found)")


# ------------------------------------------------------------------ exceptions
@dataclass
class ScheduleException:
    id: int
    target: str
    kind: str
    start_us: int
    end_us: int
    slot_minutes: int | None
    reason: str


async def add_exception(conn: AsyncConnection, tenant: str, *, kind: str, target: str, start: datetime,
                        end: datetime, reason: str = "", slot_minutes: int | None = None) -> int:
    """`leave` (target PractitionerRole/<id>), `closed` (Schedule/<id> or "*" for the whole
    hospital) or `extra` (Schedule/<id>, an added session with `slot_minutes`)."""
    if kind not in EXCEPTION_KINDS:
        raise BadRequest(f"例外类型须为 {', '.join(EXCEPTION_KINDS)} 之一 (unknown exception kind)")
    if not (target == "*" or (target.count("/") == 1 and target.split("/")[0] in ("Schedule", "PractitionerRole")
                              and is_valid_id(target.split("/")[1]))):
        raise BadRequest("对象须为 Schedule/<id>、PractitionerRole/<id> 或 * (bad target)")
    if kind == "extra" and not target.startswith("Schedule/"):
        raise BadRequest("加诊须指定排班 Schedule/<id> (an extra session belongs to a schedule)")
    if start.tzinfo is None or end.tzinfo is None:
        raise BadRequest("时间须带时区 (times need a time zone)")
    if start >= end:
        raise BadRequest("开始时间须早于结束时间 (start must be before end)")
    if kind == "extra":
        lo, hi = SLOT_MINUTES
        if not isinstance(slot_minutes, int) or not lo <= slot_minutes <= hi:
            raise BadRequest(f"加诊号源时长须为 {lo}–{hi} 分钟 (slot length out of range)")
    result = await conn.execute(insert(schedule_exception).values(
        tenant=tenant, target=target, kind=kind, start_us=to_us(start), end_us=to_us(end),
        slot_minutes=slot_minutes if kind == "extra" else None, reason=(reason or "")[:200], created_ts=now_us()))
    return int(result.inserted_primary_key[0])


async def exceptions_of(conn: AsyncConnection, tenant: str, *, until_us: int | None = None,
                        since_us: int | None = None) -> list[ScheduleException]:
    stmt = select(schedule_exception).where(schedule_exception.c.tenant == tenant)
    if since_us is not None:
        stmt = stmt.where(schedule_exception.c.end_us > since_us)
    if until_us is not None:
        stmt = stmt.where(schedule_exception.c.start_us < until_us)
    rows = await conn.execute(stmt.order_by(schedule_exception.c.start_us))
    return [ScheduleException(r.id, r.target, r.kind, r.start_us, r.end_us, r.slot_minutes, r.reason) for r in rows]


async def remove_exception(conn: AsyncConnection, tenant: str, exception_id: int) -> None:
    result = await conn.execute(delete(schedule_exception).where(schedule_exception.c.tenant == tenant,
                                                                 schedule_exception.c.id == exception_id))
    if result.rowcount == 0:
        raise NotFound(f"未找到排班例外 {exception_id} (exception not found)")


# ------------------------------------------------------------------ slots
def slot_id_for(schedule_id: str, start_local: datetime) -> str:
    base = schedule_id if len(schedule_id) <= 48 else f"{zlib.crc32(schedule_id.encode()):08x}"
    return f"{base}-{start_local:%Y%m%d%H%M}"


@dataclass
class GenerationReport:
    created: int = 0
    unavailable: int = 0  # free slots closed by leave or a closure
    booked_in_leave: list[str] = field(default_factory=list)  # booked slots a leave now covers

    def as_dict(self) -> dict:
        return {"created": self.created, "unavailable": self.unavailable, "booked_in_leave": self.booked_in_leave}


def _session_slots(start: datetime, end: datetime, minutes: int) -> list[tuple[datetime, datetime]]:
    out, step = [], timedelta(minutes=minutes)
    t = start
    while t + step <= end:
        out.append((t, t + step))
        t += step
    return out


def _blocked(exceptions: list[ScheduleException], targets: set[str], s_us: int, e_us: int) -> bool:
    return any(x.kind in ("leave", "closed") and x.target in targets and x.start_us < e_us and s_us < x.end_us
               for x in exceptions)


async def generate_slots(repo: FhirRepository, *, start_day: date, days: int,
                         schedule_ids: list[str] | None = None, now: datetime | None = None) -> GenerationReport:
    """Create the Slots of `days` local days from `start_day` for the given (or all active)
    Schedules from their templates and extra sessions, leaving out leave and closures; free
    Slots a leave or closure now covers become busy-unavailable."""
    if not 1 <= days <= 92:
        raise BadRequest("一次最多生成 92 天的号源 (at most 92 days at a time)")
    now = now or datetime.now(timezone.utc)
    schedules = await _schedules(repo, schedule_ids)
    tenant = repo.ctx.tenant
    templates = await templates_of(repo.conn, tenant, [s.res_id for s in schedules])
    first = datetime.combine(start_day, time(0), tzinfo=CHINA_TZ)
    last = first + timedelta(days=days)
    exceptions = await exceptions_of(repo.conn, tenant, since_us=to_us(first), until_us=to_us(last))
    wanted: dict[str, dict] = {}
    blocked_ids: set[str] = set()
    for stored in schedules:
        sched = stored.resource
        if sched.get("active") is False:
            continue
        targets = {"*", f"Schedule/{stored.res_id}"} | {
            f"PractitionerRole/{rid}" for a in sched.get("actor") or [] if (rid := ref_id(a, "PractitionerRole"))}
        sessions: list[tuple[datetime, datetime, int]] = []
        for tpl in (t for t in templates if t.schedule == stored.res_id):
            for offset in range(days):
                day = start_day + timedelta(days=offset)
                if tpl.applies(day):
                    sessions.append((datetime.combine(day, _hhmm(tpl.start, "start"), tzinfo=CHINA_TZ),
                                     datetime.combine(day, _hhmm(tpl.end, "end"), tzinfo=CHINA_TZ), tpl.slot_minutes))
        for x in exceptions:
            if x.kind == "extra" and x.target == f"Schedule/{stored.res_id}":
                sessions.append((datetime.fromtimestamp(x.start_us / 1e6, CHINA_TZ),
                                 datetime.fromtimestamp(x.end_us / 1e6, CHINA_TZ), x.slot_minutes or 30))
        for s0, s1, minutes in sessions:
            for a, b in _session_slots(s0, s1, minutes):
                if a <= now or a < first or a >= last:
                    continue
                sid = slot_id_for(stored.res_id, a)
                if _blocked(exceptions, targets, to_us(a), to_us(b)):
                    blocked_ids.add(sid)
                    continue
                wanted[sid] = _slot(stored, a, b)
    return await _write_slots(repo, wanted, blocked_ids)


async def _schedules(repo: FhirRepository, schedule_ids: list[str] | None) -> list[StoredResource]:
    if schedule_ids is None:
        return [s for s in await schedules_of(repo, count=1000)]
    found = await repo.current_many(("Schedule", sid) for sid in schedule_ids)
    missing = [sid for sid in schedule_ids if ("Schedule", sid) not in found or found[("Schedule", sid)].deleted]
    if missing:
        raise NotFound(f"未找到排班 Schedule/{missing[0]} (schedule not found)")
    return [found[("Schedule", sid)] for sid in schedule_ids]


def _slot(schedule: StoredResource, start: datetime, end: datetime) -> dict:
    sched = schedule.resource
    slot = {
        "resourceType": "Slot",
        "schedule": {"reference": f"Schedule/{schedule.res_id}"},
        "status": "free",
        "start": instant(start),
        "end": instant(end),
    }
    if sched.get("serviceType"):
        slot["serviceType"] = sched["serviceType"]
    if sched.get("specialty"):
        slot["specialty"] = sched["specialty"]
    return slot


async def _write_slots(repo: FhirRepository, wanted: dict[str, dict], blocked_ids: set[str]) -> GenerationReport:
    report = GenerationReport()
    keys = [("Slot", sid) for sid in [*wanted, *sorted(blocked_ids)]]
    existing = await repo.current_many(keys) if keys else {}
    plans: list[PlannedWrite] = []
    for sid, slot in wanted.items():
        current = existing.get(("Slot", sid))
        if current is None or current.deleted:
            plans.append(PlannedWrite("Slot", sid, "PUT", {**slot, "id": sid}, current))
            report.created += 1
    for sid in sorted(blocked_ids):
        current = existing.get(("Slot", sid))
        if current is None or current.deleted:
            continue
        status = current.resource.get("status")
        if status == "free":
            plans.append(PlannedWrite("Slot", sid, "PUT",
                                      {**current.resource, "status": "busy-unavailable", "comment": "停诊"}, current))
            report.unavailable += 1
        elif status == "busy":
            report.booked_in_leave.append(sid)
    for start in range(0, len(plans), 500):
        await repo.persist_planned(plans[start:start + 500])
    return report


async def find_slots(repo: FhirRepository, schedule_id: str, *, start: datetime | None = None,
                     end: datetime | None = None, status: str | None = "free", count: int = 200) -> list[dict]:
    params = [("schedule", f"Schedule/{schedule_id}"), ("_sort", "start"), ("_count", str(count))]
    if status:
        params.append(("status", status))
    if start:
        params.append(("start", f"ge{instant(start)}"))
    if end:
        params.append(("start", f"lt{instant(end)}"))
    return [s.resource for s in (await repo.search("Slot", params)).matches]


def consultation_type_of_schedule(schedule: dict) -> str | None:
    return consultation_type_of(schedule)
