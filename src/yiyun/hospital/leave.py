"""Leave and closures over booked slots (停诊): the hospital cancels the bookings, tells the
patients, and offers them other slots to rebook in one tap.

A doctor's leave (or a closure of a schedule or the hospital) that covers slots already
booked does not silently keep those bookings: the patient would come to a doctor who is not
there. Before the leave is confirmed, whoever records it sees how many bookings it
affects (`affected_bookings`); on confirmation each is cancelled by the hospital
(`cancelationReason` coded `prov`, text "医生停诊"), the patient is notified in the app and
by SMS (`yiyun.hospital.notifications`), and the booking's page offers the doctor's and the
department's next free slots (`rebook_options`).

A hospital's cancellation is not the patient's: it is recorded as the provider's, so no
cancellation cut-off applies, it is never a no-show, and a cancelled booking holds no place
in the daily limits (`yiyun.hospital.booking`). Hospitals must tell patients of a change of
schedule in time (国家卫生健康委《医疗机构门诊质量管理暂行规定》2022, 第十三条: 出诊信息变更
应当及时告知患者).

    found = await affected_bookings(repo, "PractitionerRole/r1", start, end)   # StoredResource list
    ids   = await cancel_for_leave(repo, actor, found)
    opts  = await rebook_options(conn, hospital, summary)       # {"doctor": [...], "department": [...]}
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import YiyunError
from yiyun.fhir.model import StoredResource
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital import booking, catalogue, notifications, schedules
from yiyun.hospital.codes import CHINA_TZ, CONSULTATION_TYPES, consultation_type_of, instant, parse_instant, ref_id

LEAVE_REASON = "医生停诊"
LEAVE_REASON_EN = "Doctor unavailable"
# Statuses a leave cancels: the patient has not arrived yet.
CANCELLABLE = ("proposed", "pending", "booked")
LONGEST_SLOT = timedelta(minutes=schedules.SLOT_MINUTES[1])
CHUNK = 50


def covers(target: str, schedule: dict) -> bool:
    """Does an exception on `target` ("*", Schedule/<id>, PractitionerRole/<id>) cover this Schedule?"""
    if target == "*" or target == f"Schedule/{schedule.get('id')}":
        return True
    return any(f"PractitionerRole/{rid}" == target for a in schedule.get("actor") or []
               if (rid := ref_id(a, "PractitionerRole")))


async def _busy_slots(repo: FhirRepository, schedule_ids: list[str], start: datetime, end: datetime) -> list[str]:
    now = datetime.now(timezone.utc)
    out: list[str] = []
    for i in range(0, len(schedule_ids), CHUNK):
        result = await repo.search("Slot", [
            ("schedule", ",".join(f"Schedule/{s}" for s in schedule_ids[i:i + CHUNK])), ("status", "busy"),
            ("start", f"ge{instant(start - LONGEST_SLOT)}"), ("start", f"lt{instant(end)}"), ("_count", "1000")])
        for s in result.matches:
            s0, s1 = parse_instant(s.resource.get("start")), parse_instant(s.resource.get("end"))
            if s0 and s1 and s0 < end and s1 > start and s0 > now:
                out.append(s.res_id)
    return out


async def affected_bookings(repo: FhirRepository, target: str, start: datetime, end: datetime) -> list[StoredResource]:
    """The active, not yet attended bookings on the future Slots that an exception on
    `target` from `start` to `end` covers, earliest first."""
    scheds = [s.res_id for s in await schedules.schedules_of(repo, count=1000) if covers(target, s.resource)]
    slot_ids = await _busy_slots(repo, scheds, start, end) if scheds else []
    found: dict[str, StoredResource] = {}
    for i in range(0, len(slot_ids), CHUNK):
        result = await repo.search("Appointment", [
            ("slot", ",".join(f"Slot/{s}" for s in slot_ids[i:i + CHUNK])), ("status", ",".join(CANCELLABLE)),
            ("_count", "1000")])
        found.update((s.res_id, s) for s in result.matches)
    return sorted(found.values(), key=lambda s: s.resource.get("start") or "")


def doctor_title(name: str | None) -> str:
    """"王芳" → "王芳医生" (a name already ending in 医生 is left as it is)."""
    name = name or ""
    return name if not name or name.endswith("医生") else f"{name}医生"


def _notice(appt: dict, directory: catalogue.Directory | None) -> str:
    when = parse_instant(appt.get("start"))
    when_text = when.astimezone(CHINA_TZ).strftime("%m月%d日 %H:%M") if when else ""
    doctor = ""
    role = (booking.participant_ids(appt, "PractitionerRole") or [None])[0]
    if directory is not None and role in directory.roles:
        summary = catalogue.doctor_summary(directory, role)
        doctor = f"{summary['department'] or ''}{doctor_title(summary['name'])}"
    ctype = CONSULTATION_TYPES.get(consultation_type_of(appt) or "", ("就诊",))[0]
    return (f"您预约的{when_text} {doctor}{ctype}因医生停诊已取消，不计爽约、不占当日预约次数。"
            f"请在“我的预约”中一键改约其他号源。")


async def cancel_for_leave(repo: FhirRepository, actor: booking.Actor, found: list[StoredResource]) -> list[str]:
    """Cancel these bookings as the hospital's and notify each patient; returns their ids."""
    try:
        directory = await catalogue.load_directory(repo.conn, repo.ctx.tenant)
    except YiyunError:  # a tenant without a directory still cancels; the notice names no doctor
        directory = None
    writer = booking.system_repo(repo, actor)
    out = []
    for stored in found:
        cancelled = await booking.cancel(repo, actor, stored.res_id, reason=LEAVE_REASON)
        patient = booking.patient_of(cancelled.resource)
        if patient:
            await notifications.notify_patient(writer, patient, _notice(cancelled.resource, directory),
                                               kind=notifications.DOCTOR_UNAVAILABLE,
                                               about=f"Appointment/{stored.res_id}")
        out.append(stored.res_id)
    return out


def cancelled_by_hospital(summary: dict) -> bool:
    return summary.get("status") == "cancelled" and summary.get("cancel_reason") == LEAVE_REASON


async def rebook_options(conn: AsyncConnection, hospital: str, summary: dict, *, per: int = 6,
                         days: int = 14) -> dict[str, list[dict]]:
    """Free slots to rebook a booking the hospital cancelled: the same doctor's next ones for
    the same consultation type, and the department's other doctors' next ones."""
    d = await catalogue.load_directory(conn, hospital)
    ctype, role = summary.get("consultation_type"), summary.get("practitioner_role")
    service = summary.get("service") or (d.service_of_role(d.roles[role]) if role in d.roles else None)
    start = datetime.now(timezone.utc)
    own = [sid for sid, s in d.schedules_of_role(role)] if role in d.roles else []
    own = [sid for sid in own if consultation_type_of(d.schedules[sid]) == ctype]
    others: dict[str, str] = {}
    for rid, r in catalogue.doctor_roles(d).items():
        if rid != role and service and d.service_of_role(r) == service:
            others.update((sid, rid) for sid, s in d.schedules_of_role(rid) if consultation_type_of(s) == ctype)
    mine = await catalogue.free_slots(conn, hospital, own, start=start, days=days, count=per)
    theirs = await catalogue.free_slots(conn, hospital, list(others), start=start, days=days, count=per * 4)
    names = {rid: catalogue.doctor_summary(d, rid)["name"] for rid in set(others.values())}
    for s in theirs:
        s["doctor_name"] = names.get(others.get(s["schedule"] or ""))
    return {"doctor": mine, "department": theirs[:per]}
