"""Hospital JSON API and FHIR operations: departments, doctors, schedules, slots, booking.

Public (browsing before signing in; listed in `PUBLIC_PATHS`):

    GET  /api/hospital/directory/hospitals                      hospitals of the region
    GET  /api/hospital/directory/hospitals/{slug}               one hospital with its departments
    GET  /api/hospital/directory/hospitals/{slug}/doctors       ?department=&type=&q=
    GET  /api/hospital/directory/hospitals/{slug}/doctors/{role}   ?days=7, with free slots
    GET  /api/hospital/directory/hospitals/{slug}/slots         ?schedule=a,b&days=7&start=
    GET  /api/hospital/directory/search?q=                      names, departments, diseases
    GET  /api/hospital/directory/fever-clinics?lat=&lon=        nearest first

Signed in (bearer token or web session; `require_subject`):

    POST /api/hospital/appointments                 {slot, hospital?, patient?, comment?, based_on?} → 201
    GET  /api/hospital/appointments                 ?hospital=&patient=   the caller's (or, staff, a patient's)
    POST /api/hospital/appointments/{slug}/{id}/cancel       {reason?}
    POST /api/hospital/appointments/{slug}/{id}/reschedule   {slot}
    POST /api/hospital/appointments/{slug}/{id}/noshow       staff
    GET  /api/hospital/block                        ?hospital=   is the caller barred after no-shows?
    GET  /api/hospital/appointments/{slug}/{id}/rebook       free slots to rebook (doctor, department)
    POST /api/hospital/waitlist                     {schedule, day, hospital?, patient?} → 201 (候补)
    GET  /api/hospital/waitlist                     ?hospital=   the caller's entries
    DELETE /api/hospital/waitlist/{slug}/{id}       leave the waitlist
    GET  /api/hospital/notifications                ?hospital=   the hospital's messages to the caller

Staff of the token's hospital (doctors their own schedules; administrators everything;
a hospital system's `system/` token counts as an administrator):

    GET/POST /api/hospital/schedules                         ?role=   {role, type, fee_fen, active}
    GET/POST /api/hospital/schedules/{id}/templates          {weekdays, start, end, slot_minutes, …}
    DELETE   /api/hospital/templates/{id}
    GET/POST /api/hospital/exceptions                        {kind, target, start, end, reason, slot_minutes?, confirm?}
    GET      /api/hospital/exceptions/preview                ?target=&start=&end=   bookings a leave would cancel
    DELETE   /api/hospital/exceptions/{id}
    POST     /api/hospital/leave                             {role, start, end, reason, confirm?}
    POST     /api/hospital/slots/generate                    {days, start_day?, schedules?}
    GET/PUT  /api/hospital/rules                             booking rules (PUT: administrators)
    GET      /api/hospital/daily                             ?day=YYYY-MM-DD (administrators)
    DELETE   /api/hospital/blocks/{patient}                  lift a no-show block (administrators)
    GET      /api/hospital/reminders/due                     reminders to send (administrators)
    GET/POST /api/hospital/departments, PUT …/{id}           the catalogue (administrators; docs/hospital-admin.md)
    GET/POST /api/hospital/doctors, PUT …/{role}, PUT …/{role}/services/{type}   {fee_fen, active}
    POST     /api/hospital/waitlist/fill                     serve waitlists from free slots (administrators)

A leave or closure over booked slots is refused (409, with the count) until `confirm`; then
those bookings are cancelled as the hospital's and the patients told (`yiyun.hospital.leave`).
A cancellation or reschedule offers the freed slot to that day's waitlist in the same unit of
work (`yiyun.hospital.waitlist`).

`install(app)` mounts these, registers FHIR `Appointment/$book` and `Appointment/{id}/$cancel`
and the Appointment write hook (one booking per Slot on every path).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, Conflict, Forbidden, NotFound
from yiyun.fhir.hooks import register_write_hook
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital import (
    booking,
    catalogue,
    catalogue_admin,
    fever,
    fhir_operations,
    leave,
    notifications,
    schedules,
    volumes,
    waitlist,
)
from yiyun.hospital.booking import Actor, actor_from_context
from yiyun.hospital.codes import ref_id, today_local
from yiyun.hospital.patients import patient_in_hospital
from yiyun.hospital.schemas import (
    BookRequest,
    CancelRequest,
    ExceptionRequest,
    GenerateRequest,
    LeaveRequest,
    RescheduleRequest,
    RulesRequest,
    ScheduleRequest,
    ServiceRequest,
    TemplateRequest,
    WaitlistRequest,
)
from yiyun.identity.auth import AuthContext, require_subject

PUBLIC_PREFIX = "/api/hospital/directory/"
PUBLIC_PATHS = (PUBLIC_PREFIX,)

public = APIRouter(prefix="/api/hospital/directory", tags=["hospital"])
router = APIRouter(prefix="/api/hospital", tags=["hospital"], dependencies=[Depends(require_subject)])


def hospital_repo(conn: AsyncConnection, hospital: str, ctx: RequestContext, *,
                  flushes_audit: bool = False) -> FhirRepository:
    """The hospital's repository for a request this module has authorised itself; writes
    are audited under the caller's subject. With `flushes_audit` the booking workflow's
    audit entries wait for `finish(repo)` just before the commit."""
    repo = FhirRepository(conn, RequestContext(tenant=hospital, subject=ctx.subject, roles=tuple(ctx.roles),
                                               client_address=ctx.client_address, base_url=ctx.base_url))
    repo.flushes_audit = flushes_audit
    if flushes_audit:
        # every write's entry waits for `finish`: one append to the audit chain per request,
        # its head locked only from there to the commit
        repo.policy = booking.DeferredAudit(repo.policy, True)
    return repo


async def finish(repo: FhirRepository) -> None:
    """Append the unit of work's pending audit entries (call last, before the commit)."""
    flush = getattr(repo.policy, "flush", None)
    if flush is not None:
        await flush()


def _is_system(ctx: AuthContext) -> bool:
    return not ctx.roles and any(s.startswith("system/") for s in ctx.scopes)


def _staff(ctx: AuthContext, hospital: str | None = None, *, admin: bool = False) -> Actor:
    """Staff of the token's hospital (administrators only when `admin`)."""
    if hospital is not None and hospital != ctx.tenant:
        raise Forbidden("只能管理本院的数据 (staff act within their own hospital)")
    if _is_system(ctx):
        return Actor("staff", ctx.subject, None, ("admin",))
    roles = set(ctx.roles)
    if admin and not roles & {"admin", "regional-admin"}:
        raise Forbidden("仅限医院管理员 (hospital administrators only)")
    if not roles & booking.STAFF_ROLES:
        raise Forbidden("仅限医院工作人员 (hospital staff only)")
    return Actor("staff", ctx.subject, None, tuple(ctx.roles))


def _is_admin(ctx: AuthContext) -> bool:
    return _is_system(ctx) or bool({"admin", "regional-admin"} & set(ctx.roles))


async def _may_manage_role(repo: FhirRepository, ctx: AuthContext, role_id: str) -> None:
    """Doctors manage their own schedules; administrators any."""
    if _is_admin(ctx):
        return
    role = (await repo.read("PractitionerRole", role_id)).resource
    if ctx.fhir_user is None or (role.get("practitioner") or {}).get("reference") != ctx.fhir_user:
        raise Forbidden("只能管理本人的排班 (doctors manage their own schedules)")


async def _may_manage_schedule(repo: FhirRepository, ctx: AuthContext, schedule_id: str) -> dict:
    sched = (await repo.read("Schedule", schedule_id)).resource
    if not _is_admin(ctx):
        roles = [rid for a in sched.get("actor") or [] if (rid := ref_id(a, "PractitionerRole"))]
        if not roles:
            raise Forbidden("只能管理本人的排班 (doctors manage their own schedules)")
        await _may_manage_role(repo, ctx, roles[0])
    return sched


# ------------------------------------------------------------------ public directory
@public.get("/hospitals")
async def hospitals() -> dict[str, Any]:
    async with unit_of_work(get_engine(), write=False) as conn:
        return {"hospitals": await catalogue.list_hospitals(conn)}


@public.get("/hospitals/{slug}")
async def hospital(slug: str) -> dict[str, Any]:
    async with unit_of_work(get_engine(), write=False) as conn:
        return await catalogue.get_hospital(conn, slug)


@public.get("/hospitals/{slug}/doctors")
async def doctors(slug: str, department: str | None = Query(None, max_length=64),
                  type: str | None = Query(None, max_length=20), q: str | None = Query(None, max_length=50),
                  days: int = Query(7, ge=1, le=14)) -> dict[str, Any]:
    async with unit_of_work(get_engine(), write=False) as conn:
        return {"doctors": await catalogue.list_doctors(conn, slug, department=department, consultation_type=type,
                                                        q=q, days=days)}


@public.get("/hospitals/{slug}/doctors/{role_id}")
async def doctor(slug: str, role_id: str, days: int = Query(7, ge=1, le=14)) -> dict[str, Any]:
    async with unit_of_work(get_engine(), write=False) as conn:
        return await catalogue.get_doctor(conn, slug, role_id, days=days)


@public.get("/hospitals/{slug}/slots")
async def slots(slug: str, schedule: str = Query(min_length=1, max_length=2000), days: int = Query(7, ge=1, le=31),
                start: datetime | None = None) -> dict[str, Any]:
    ids = [s for s in schedule.split(",") if s]
    if len(ids) > 50:
        raise BadRequest("一次最多查询 50 个排班 (at most 50 schedules)")
    if start is not None and start.tzinfo is None:
        raise BadRequest("start 须带时区 (start needs a time zone)")
    async with unit_of_work(get_engine(), write=False) as conn:
        await catalogue.load_directory(conn, slug)
        return {"slots": await catalogue.free_slots(conn, slug, ids, start=start, days=days, count=1000)}


@public.get("/search")
async def search(q: str = Query(min_length=1, max_length=50)) -> dict[str, Any]:
    async with unit_of_work(get_engine(), write=False) as conn:
        return await catalogue.search(conn, q)


@public.get("/fever-clinics")
async def fever_clinics(lat: float | None = Query(None), lon: float | None = Query(None)) -> dict[str, Any]:
    async with unit_of_work(get_engine(), write=False) as conn:
        return {"clinics": await fever.find_fever_clinics(conn, latitude=lat, longitude=lon)}


# ------------------------------------------------------------------ booking
async def _booking_actor(conn, ctx: AuthContext, hospital: str, *, create: bool) -> Actor:
    actor = actor_from_context(ctx)
    if _is_system(ctx):
        actor = Actor("system", ctx.subject, None, ())
    if actor.is_patient:
        own = await patient_in_hospital(conn, ctx, hospital, create=create)
        return Actor("patient", ctx.subject, own, actor.roles)
    _staff(ctx, hospital)
    return actor


@router.post("/appointments", status_code=201)
async def book(body: BookRequest, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    hospital = body.hospital or ctx.tenant
    async with booking.booking_gate(), unit_of_work(get_engine()) as conn:
        await catalogue.load_directory(conn, hospital)
        actor = await _booking_actor(conn, ctx, hospital, create=True)
        patient = body.patient or actor.patient
        if patient is None:
            raise BadRequest("请指明就诊人 (patient is required)")
        repo = hospital_repo(conn, hospital, ctx, flushes_audit=True)
        stored = await booking.book(repo, actor, body.slot, patient, comment=body.comment, based_on=body.based_on)
        await finish(repo)
        return booking.summarise(stored.resource, hospital)


@router.get("/appointments")
async def my_appointments(hospital: str | None = Query(None, max_length=64),
                          patient: str | None = Query(None, max_length=64),
                          ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    hospital = hospital or ctx.tenant
    async with unit_of_work(get_engine(), write=False) as conn:
        actor = await _booking_actor(conn, ctx, hospital, create=False)
        repo = hospital_repo(conn, hospital, ctx)
        target = patient or actor.patient
        if target is None:
            return {"appointments": []}
        if not await booking.may_act_for(repo, actor, target):
            raise NotFound(f"未找到就诊人 Patient/{target} (patient not found)")
        items = await booking.appointments_of(repo, target)
        return {"appointments": [booking.summarise(s.resource, hospital) for s in items]}


@router.post("/appointments/{hospital}/{appointment_id}/cancel")
async def cancel(hospital: str, appointment_id: str, body: CancelRequest | None = None,
                 ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    async with booking.booking_gate(), unit_of_work(get_engine()) as conn:
        actor = await _booking_actor(conn, ctx, hospital, create=False)
        repo = hospital_repo(conn, hospital, ctx, flushes_audit=True)
        stored = await booking.cancel(repo, actor, appointment_id, body.reason if body else None)
        await waitlist.offer_freed(repo, booking.slot_ids(stored.resource))
        await finish(repo)
        return booking.summarise(stored.resource, hospital)


@router.post("/appointments/{hospital}/{appointment_id}/reschedule")
async def reschedule(hospital: str, appointment_id: str, body: RescheduleRequest,
                     ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    async with booking.booking_gate(), unit_of_work(get_engine()) as conn:
        actor = await _booking_actor(conn, ctx, hospital, create=False)
        repo = hospital_repo(conn, hospital, ctx, flushes_audit=True)
        before = await _held_slots(repo, appointment_id)
        stored = await booking.reschedule(repo, actor, appointment_id, body.slot)
        await waitlist.offer_freed(repo, [sid for sid in before if sid not in booking.slot_ids(stored.resource)])
        await finish(repo)
        return booking.summarise(stored.resource, hospital)


async def _held_slots(repo: FhirRepository, appointment_id: str) -> list[str]:
    """The Slots a booking holds before it moves (offered to the waitlist once freed)."""
    current = await repo._current("Appointment", appointment_id)  # noqa: SLF001 (the service checks access)
    return waitlist.freed_by(current.resource) if current is not None and not current.deleted else []


@router.post("/appointments/{hospital}/{appointment_id}/noshow")
async def noshow(hospital: str, appointment_id: str, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    actor = _staff(ctx, hospital)
    async with unit_of_work(get_engine()) as conn:
        repo = hospital_repo(conn, hospital, ctx, flushes_audit=True)
        stored = await booking.mark_noshow(repo, actor, appointment_id)
        await finish(repo)
        return booking.summarise(stored.resource, hospital)


@router.get("/block")
async def my_block(hospital: str | None = Query(None, max_length=64),
                   ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    hospital = hospital or ctx.tenant
    async with unit_of_work(get_engine(), write=False) as conn:
        pid = await patient_in_hospital(conn, ctx, hospital)
        block = await booking.block_status(conn, hospital, pid) if pid else None
    if block is None:
        return {"blocked": False}
    until = datetime.fromtimestamp(block[0] / 1e6, timezone.utc)
    return {"blocked": True, "until": until.isoformat(), "reason": block[1]}


# ------------------------------------------------------------------ schedules
@router.get("/schedules")
async def list_schedules(role: str | None = Query(None, max_length=64),
                         ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx)
    async with unit_of_work(get_engine(), write=False) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        found = await schedules.schedules_of(repo, role_id=role)
        templates = await schedules.templates_of(conn, ctx.tenant, [s.res_id for s in found])
        return {"schedules": [_schedule_view(s.resource, templates) for s in found]}


def _schedule_view(sched: dict, templates: list) -> dict:
    from yiyun.hospital.codes import consultation_type_of, fee_fen

    return {
        "id": sched.get("id"),
        "active": sched.get("active", True),
        "type": consultation_type_of(sched),
        "fee_fen": fee_fen(sched),
        "role": next((rid for a in sched.get("actor") or [] if (rid := ref_id(a, "PractitionerRole"))), None),
        "service": next((sid for a in sched.get("actor") or [] if (sid := ref_id(a, "HealthcareService"))), None),
        "templates": [t.__dict__ for t in templates if t.schedule == sched.get("id")],
    }


@router.post("/schedules", status_code=201)
async def create_schedule(body: ScheduleRequest, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx)
    async with unit_of_work(get_engine()) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        await _may_manage_role(repo, ctx, body.role)
        stored = await schedules.create_schedule(repo, body.role, body.type, fee_fen=body.fee_fen, active=body.active)
    catalogue.invalidate(ctx.tenant)
    return _schedule_view(stored.resource, [])


@router.get("/schedules/{schedule_id}/templates")
async def list_templates(schedule_id: str, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx)
    async with unit_of_work(get_engine(), write=False) as conn:
        await hospital_repo(conn, ctx.tenant, ctx).read("Schedule", schedule_id)
        return {"templates": [t.__dict__ for t in await schedules.templates_of(conn, ctx.tenant, [schedule_id])]}


@router.post("/schedules/{schedule_id}/templates", status_code=201)
async def add_template(schedule_id: str, body: TemplateRequest,
                       ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx)
    async with unit_of_work(get_engine()) as conn:
        await _may_manage_schedule(hospital_repo(conn, ctx.tenant, ctx), ctx, schedule_id)
        tid = await schedules.add_template(
            conn, ctx.tenant, schedule_id, weekdays=body.weekdays, start=body.start, end=body.end,
            slot_minutes=body.slot_minutes, valid_from=body.valid_from.isoformat() if body.valid_from else None,
            valid_to=body.valid_to.isoformat() if body.valid_to else None)
    return {"id": tid}


@router.delete("/templates/{template_id}")
async def remove_template(template_id: int, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        await schedules.remove_template(conn, ctx.tenant, template_id)
    return {"deleted": template_id}


@router.get("/exceptions")
async def list_exceptions(ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx)
    async with unit_of_work(get_engine(), write=False) as conn:
        return {"exceptions": [x.__dict__ for x in await schedules.exceptions_of(conn, ctx.tenant)]}


@router.post("/exceptions", status_code=201)
async def add_exception(body: ExceptionRequest, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx)
    async with unit_of_work(get_engine()) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        await _may_manage_target(repo, ctx, body.target)
        xid = await schedules.add_exception(conn, ctx.tenant, kind=body.kind, target=body.target, start=body.start,
                                            end=body.end, reason=body.reason, slot_minutes=body.slot_minutes)
        cancelled = []
        if body.kind in ("leave", "closed"):
            cancelled = await _cancel_covered(repo, ctx, body.target, body.start, body.end, body.confirm,
                                              body.expected_bookings)
        report = await _regenerate(repo, body.start, body.end)
        if body.kind in ("leave", "closed"):
            await waitlist.close_for_leave(repo, body.target, body.start, body.end)
    return {"id": xid, "slots": report.as_dict(), "cancelled": cancelled}


async def _may_manage_target(repo: FhirRepository, ctx: AuthContext, target: str) -> None:
    kind, _, target_id = target.partition("/")
    if target == "*" and not _is_admin(ctx):
        raise Forbidden("全院停诊仅限管理员 (closing the hospital is for administrators)")
    if kind == "Schedule":
        await _may_manage_schedule(repo, ctx, target_id)
    elif kind == "PractitionerRole":
        await _may_manage_role(repo, ctx, target_id)


async def _cancel_covered(repo: FhirRepository, ctx: AuthContext, target: str, start: datetime, end: datetime,
                          confirm: bool, expected: int | None = None) -> list[str]:
    """Bookings a leave or closure covers: refused until confirmed (and, when the caller
    says how many it saw, while that count is still right), then cancelled as the
    hospital's and the patients told (`yiyun.hospital.leave`)."""
    if start.tzinfo is None or end.tzinfo is None or start >= end:
        return []  # add_exception has refused these already
    found = await leave.affected_bookings(repo, target, start, end)
    if expected is not None and expected != len(found):
        raise Conflict(f"停诊时段内的预约已变为 {len(found)} 个，请重新确认 "
                       f"(the period now holds {len(found)} booked appointments: confirm again)")
    if not found:
        return []
    if not confirm:
        raise Conflict(f"停诊时段内有 {len(found)} 个已预约的号；确认后将取消这些预约并通知患者 "
                       f"({len(found)} booked appointments in this period: confirm to cancel them and notify the "
                       f"patients)")
    actor = Actor("staff", ctx.subject, None, tuple(ctx.roles) or ("admin",))
    return await leave.cancel_for_leave(repo, actor, found)


@router.get("/exceptions/preview")
async def preview_exception(target: str = Query(min_length=1, max_length=130), start: datetime = Query(),
                            end: datetime = Query(), ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    """How many bookings a leave or closure from `start` to `end` would cancel."""
    _staff(ctx)
    if start.tzinfo is None or end.tzinfo is None:
        raise BadRequest("时间须带时区 (times need a time zone)")
    if start >= end:
        raise BadRequest("开始时间须早于结束时间 (start must be before end)")
    async with unit_of_work(get_engine(), write=False) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        await _may_manage_target(repo, ctx, target)
        found = await leave.affected_bookings(repo, target, start, end)
        return {"bookings": len(found), "appointments": [booking.summarise(s.resource, ctx.tenant) for s in found]}


async def _regenerate(repo: FhirRepository, start: datetime, end: datetime):
    """Apply a new exception to the Slots it covers (from today at the earliest)."""
    from yiyun.hospital.codes import local_day

    first = max(local_day(start), today_local())
    days = min(max((local_day(end) - first).days + 1, 1), 92)
    return await schedules.generate_slots(repo, start_day=first, days=days)


@router.delete("/exceptions/{exception_id}")
async def remove_exception(exception_id: int, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        await schedules.remove_exception(conn, ctx.tenant, exception_id)
    return {"deleted": exception_id}


@router.post("/leave", status_code=201)
async def add_leave(body: LeaveRequest, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    """A doctor's leave: their Slots in the period close; booked ones are cancelled once
    confirmed (`confirm`), and their patients told."""
    _staff(ctx)
    async with unit_of_work(get_engine()) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        await _may_manage_role(repo, ctx, body.role)
        target = f"PractitionerRole/{body.role}"
        xid = await schedules.add_exception(conn, ctx.tenant, kind="leave", target=target,
                                            start=body.start, end=body.end, reason=body.reason)
        cancelled = await _cancel_covered(repo, ctx, target, body.start, body.end, body.confirm,
                                          body.expected_bookings)
        report = await _regenerate(repo, body.start, body.end)
        await waitlist.close_for_leave(repo, target, body.start, body.end)
    return {"id": xid, "slots": report.as_dict(), "cancelled": cancelled}


@router.post("/slots/generate")
async def generate(body: GenerateRequest, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx)
    async with unit_of_work(get_engine()) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        ids = body.schedules
        if not _is_admin(ctx):
            if not ids:
                raise Forbidden("请指定本人的排班 (name your own schedules)")
            for sid in ids:
                await _may_manage_schedule(repo, ctx, sid)
        report = await schedules.generate_slots(repo, start_day=body.start_day or today_local(), days=body.days,
                                                schedule_ids=ids)
    return report.as_dict()


# ------------------------------------------------------------------ administration
@router.get("/rules")
async def get_rules(hospital: str | None = Query(None, max_length=64),
                    ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    async with unit_of_work(get_engine(), write=False) as conn:
        return (await booking.get_rules(conn, hospital or ctx.tenant)).as_dict()


@router.put("/rules")
async def put_rules(body: RulesRequest, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        rules = await booking.set_rules(conn, ctx.tenant, **body.model_dump(exclude_none=True))
    return rules.as_dict()


@router.get("/daily")
async def daily(day: date | None = None, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine(), write=False) as conn:
        d = await catalogue.load_directory(conn, ctx.tenant)
        names = {sid: catalogue.department_summary(d, sid)["name"] for sid in d.services}
        return await volumes.daily_view(hospital_repo(conn, ctx.tenant, ctx), day or today_local(), names)


@router.delete("/blocks/{patient}")
async def lift_block(patient: str, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        lifted = await booking.lift_block(conn, ctx.tenant, patient)
    return {"lifted": lifted}


@router.get("/reminders/due")
async def reminders_due(ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine(), write=False) as conn:
        due = await booking.due_reminders(conn)
    return {"reminders": [r for r in due if r["tenant"] == ctx.tenant]}


# ------------------------------------------------------------------ catalogue (administrators)
@router.get("/departments")
async def admin_departments(ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine(), write=False) as conn:
        return {"departments": await catalogue_admin.departments(hospital_repo(conn, ctx.tenant, ctx))}


@router.post("/departments", status_code=201)
async def create_department(body: dict[str, Any], ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        stored = await catalogue_admin.save_department(hospital_repo(conn, ctx.tenant, ctx), body)
    catalogue.invalidate(ctx.tenant)
    return catalogue_admin.department_view(stored.resource)


@router.put("/departments/{service_id}")
async def update_department(service_id: str, body: dict[str, Any],
                            ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        stored = await catalogue_admin.save_department(hospital_repo(conn, ctx.tenant, ctx), body,
                                                       service_id=service_id)
    catalogue.invalidate(ctx.tenant)
    return catalogue_admin.department_view(stored.resource)


async def _doctor_with_services(repo: FhirRepository, role: dict) -> dict:
    view = await catalogue_admin.doctor_view(repo, role)
    found = await schedules.schedules_of(repo, role_id=view["id"])
    view["services"] = [_schedule_view(s.resource, []) for s in found]
    return view


@router.get("/doctors")
async def admin_doctors(ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine(), write=False) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        roles = (await repo.search("PractitionerRole", [("_count", "1000")])).matches
        return {"doctors": [await _doctor_with_services(repo, r.resource) for r in roles]}


@router.post("/doctors", status_code=201)
async def create_doctor(body: dict[str, Any], ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        stored = await catalogue_admin.save_doctor(repo, body)
        view = await _doctor_with_services(repo, stored.resource)
    catalogue.invalidate(ctx.tenant)
    return view


@router.put("/doctors/{role_id}")
async def update_doctor(role_id: str, body: dict[str, Any], ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        repo = hospital_repo(conn, ctx.tenant, ctx)
        stored = await catalogue_admin.save_doctor(repo, body, role_id=role_id)
        view = await _doctor_with_services(repo, stored.resource)
    catalogue.invalidate(ctx.tenant)
    return view


@router.put("/doctors/{role_id}/services/{consultation_type}")
async def put_doctor_service(role_id: str, consultation_type: str, body: ServiceRequest,
                             ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    """Open or close a consultation type of a doctor (clinic, online text, online video) and its fee."""
    return await create_schedule(ScheduleRequest.model_construct(role=role_id, type=consultation_type,
                                                                 fee_fen=body.fee_fen, active=body.active), ctx=ctx)


# ------------------------------------------------------------------ waitlist and rebooking (patients)
async def _acts_for(conn, ctx: AuthContext, hospital: str) -> set[str] | None:
    """The Patients of `hospital` the caller may act for (None: staff act for anyone)."""
    actor = await _booking_actor(conn, ctx, hospital, create=False)
    if not actor.is_patient:
        return None
    return {actor.patient} if actor.patient else set()


@router.post("/waitlist", status_code=201)
async def join_waitlist(body: WaitlistRequest, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    hospital = body.hospital or ctx.tenant
    async with unit_of_work(get_engine()) as conn:
        await catalogue.load_directory(conn, hospital)
        actor = await _booking_actor(conn, ctx, hospital, create=True)
        patient = body.patient or actor.patient
        if patient is None:
            raise BadRequest("请指明就诊人 (patient is required)")
        repo = hospital_repo(conn, hospital, ctx)
        entry = await waitlist.join(repo, actor, body.schedule, body.day, patient)
        return {**entry.as_dict(), "hospital": hospital, "position": await waitlist.position(conn, entry, hospital)}


@router.get("/waitlist")
async def my_waitlist(hospital: str | None = Query(None, max_length=64),
                      ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    hospital = hospital or ctx.tenant
    async with unit_of_work(get_engine(), write=False) as conn:
        mine = await _acts_for(conn, ctx, hospital)
        if mine is None:
            raise Forbidden("候补记录仅本人可查看 (a patient's own waitlist)")
        out = []
        for e in await waitlist.entries_of(conn, hospital, sorted(mine)):
            pos = await waitlist.position(conn, e, hospital) if e.status == "waiting" else None
            out.append({**e.as_dict(), "hospital": hospital, "position": pos})
        return {"entries": out}


@router.delete("/waitlist/{hospital}/{entry_id}")
async def leave_waitlist(hospital: str, entry_id: int = Path(ge=1, le=2**31 - 1),
                         ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    async with unit_of_work(get_engine()) as conn:
        entry = await waitlist.leave(conn, hospital, entry_id, await _acts_for(conn, ctx, hospital))
        return {**entry.as_dict(), "hospital": hospital}


@router.post("/waitlist/fill")
async def fill_waitlist(ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    """Serve waiting patients from free slots of their days (administrators; also a periodic job)."""
    _staff(ctx, admin=True)
    async with unit_of_work(get_engine()) as conn:
        served = await waitlist.fill_waitlists(hospital_repo(conn, ctx.tenant, ctx))
    return {"served": [{"entry": e, "appointment": a} for e, a in served]}


@router.get("/appointments/{hospital}/{appointment_id}/rebook")
async def rebook_options(hospital: str, appointment_id: str, ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    """Free slots of the same doctor and of the department, to rebook a booking in one tap."""
    async with unit_of_work(get_engine(), write=False) as conn:
        actor = await _booking_actor(conn, ctx, hospital, create=False)
        repo = hospital_repo(conn, hospital, ctx)
        stored = await booking._visible_appointment(repo, actor, appointment_id)  # noqa: SLF001 (its access rule)
        summary = booking.summarise(stored.resource, hospital)
        return {"appointment": summary, "cancelled_by_hospital": leave.cancelled_by_hospital(summary),
                **await leave.rebook_options(conn, hospital, summary)}


@router.get("/notifications")
async def my_notifications(hospital: str | None = Query(None, max_length=64),
                           ctx: AuthContext = Depends(require_subject)) -> dict[str, Any]:
    """The hospital's messages to the caller (cancellations by the hospital, waitlist bookings)."""
    hospital = hospital or ctx.tenant
    async with unit_of_work(get_engine(), write=False) as conn:
        mine = await _acts_for(conn, ctx, hospital)
        if mine is None:
            raise Forbidden("通知仅本人可查看 (a patient's own messages)")
        repo = hospital_repo(conn, hospital, ctx)
        items = [n for pid in sorted(mine) for n in await notifications.notifications_of(repo, pid)]
        return {"notifications": sorted(items, key=lambda n: n["sent"] or "", reverse=True)}


# What FastAPI's own checks of a body or query say, in Chinese first (the English stays in
# brackets); the answer keeps FastAPI's shape (a list of {loc, msg, type}).
VALIDATION_ZH = {
    "missing": "必填", "extra_forbidden": "不认识的字段", "int_parsing": "须为整数", "int_type": "须为整数",
    "bool_parsing": "须为 true 或 false", "bool_type": "须为 true 或 false", "string_type": "须为文字",
    "string_too_short": "太短", "string_too_long": "太长", "string_pattern_mismatch": "格式不正确",
    "greater_than_equal": "数值太小", "greater_than": "数值太小", "less_than_equal": "数值太大", "less_than": "数值太大",
    "date_parsing": "须为 YYYY-MM-DD 日期", "date_from_datetime_parsing": "须为 YYYY-MM-DD 日期",
    "date_type": "须为 YYYY-MM-DD 日期", "datetime_parsing": "须为带时区的时间", "datetime_from_date_parsing": "须为带时区的时间",
    "datetime_type": "须为带时区的时间", "too_short": "项数太少", "too_long": "项数太多", "list_type": "须为列表",
    "dict_type": "须为 JSON 对象", "model_attributes_type": "须为 JSON 对象", "json_invalid": "不是合法的 JSON",
}


def bilingual_errors(errors) -> list[dict]:
    out = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        zh = VALIDATION_ZH.get(e.get("type", ""), "填写有误")
        out.append({**e, "msg": f"{where} {zh} ({e.get('msg', 'invalid')})".strip()})
    return out


async def _validation_error(request, exc: RequestValidationError):
    if not request.url.path.startswith("/api/hospital/"):
        return await request_validation_exception_handler(request, exc)
    return JSONResponse({"detail": jsonable_encoder(bilingual_errors(exc.errors()))}, status_code=422)


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    register_write_hook("Appointment", booking.appointment_write_hook)
    fhir_operations.register()
    app.include_router(public)
    app.include_router(router)
