"""Hospital pages: the patient's mobile site, the doctor's workstation, the administrator's pages.

Server-rendered pages over the hospital and consultation services: every action calls the
same functions as the JSON API (`yiyun.hospital.api`, `yiyun.hospital.consultations.api`),
so the rules (booking, cancellation, the follow-up-visit rule) live in one place and a
refusal shows its reason on the page.

    /patient ...           patients (session of a patient account; mobile first, 375 px)
    /doctor ...            doctors (staff session with role `doctor`)
    /hospital-admin ...    hospital administrators (role `admin` or `regional-admin`)

Forms post with the session's `csrf_token`; a page answers 303 to the sign-in page when
nobody is signed in and a 403 page to the wrong role. See docs/patient-site.md and
docs/doctor-workstation.md.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, Forbidden, YiyunError
from yiyun.core.templating import render, request_locale
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital import api as hospital_api
from yiyun.hospital import booking, catalogue, leave, waitlist
from yiyun.hospital.codes import CHINA_TZ, CONSULTATION_TYPES, consultation_type_of, parse_instant, ref_id, today_local
from yiyun.hospital.consultations import admission
from yiyun.hospital.consultations import api as consult_api
from yiyun.hospital.consultations import records as consult_records
from yiyun.hospital.consultations import service as consult_service
from yiyun.hospital.consultations import wards as consult_wards
from yiyun.hospital.consultations.schemas import (
    EndIn,
    HandoverIn,
    PreConsultationForm,
    RatingIn,
    ReferralIn,
    StartConsultation,
    VisitRecordIn,
)
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
    TemplateRequest,
    WaitlistRequest,
)
from yiyun.identity import sessions
from yiyun.identity.auth import AuthContext
from yiyun.identity.sessions import require_page_user, require_patient_page_user

router = APIRouter(include_in_schema=False)

PATIENT_TABS = (("home", "/patient", "Home"), ("doctors", "/patient/doctors", "Find a doctor"),
                ("appointments", "/patient/appointments", "My bookings"),
                ("consult", "/patient/consultations", "Consult"), ("me", "/patient/me", "Me"))
DOCTOR_NAV = (("queue", "/doctor", "Waiting queue"), ("schedule", "/doctor/schedule", "Schedule"),
              ("patients", "/doctor/patients", "My patients"), ("records", "/doctor/records", "Records"))
ADMIN_ROLES = frozenset({"admin", "regional-admin"})
WEEKDAYS = ("一", "二", "三", "四", "五", "六", "日")
MAX_PHOTOS = 6


# ------------------------------------------------------------------ formatting
def local_time(value: str | None, fmt: str = "%m-%d %H:%M") -> str:
    """An instant shown in Asia/Shanghai (the platform's display time zone)."""
    dt = parse_instant(value) if value else None
    return dt.astimezone(CHINA_TZ).strftime(fmt) if dt else ""


def local_day_label(value: str | None) -> str:
    dt = parse_instant(value) if value else None
    if not dt:
        return ""
    d = dt.astimezone(CHINA_TZ)
    return f"{d.month}月{d.day}日 周{WEEKDAYS[d.weekday()]}"


def us_time(us: int | None) -> str:
    return datetime.fromtimestamp(us / 1e6, CHINA_TZ).strftime("%Y-%m-%d %H:%M") if us else ""


def yuan(fen: int | None) -> str:
    return "—" if fen is None else f"¥{fen / 100:.2f}".replace(".00", "")


def type_name(code: str | None, english: bool = False) -> str:
    names = CONSULTATION_TYPES.get(code or "", (code or "", code or ""))
    return names[1] if english else names[0]


def local_day_label_en(value: str | None) -> str:
    dt = parse_instant(value) if value else None
    return dt.astimezone(CHINA_TZ).strftime("%a %d %b") if dt else ""


def helpers(english: bool) -> dict[str, Any]:
    """Formatting for templates in the page's language (times always in Asia/Shanghai)."""
    return {"local_time": local_time, "us_time": us_time, "day_label": local_day_label_en if english else local_day_label, "yuan": yuan,
            "type_name": lambda code: type_name(code, english),
            "types": {k: (v[1] if english else v[0],) for k, v in CONSULTATION_TYPES.items()}}


def _english(request: Request) -> bool:
    return request_locale(request) == "en"


def page(request: Request, template: str, status: int = 200, **ctx) -> HTMLResponse:
    response = render(request, template, **helpers(_english(request)), **ctx)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def problem(request: Request, status: int, message: str, *, area: str = "patient") -> HTMLResponse:
    return page(request, "hospital/problem.html", status, message=message, area=area)


def back(url: str, **params) -> RedirectResponse:
    params = {k: v for k, v in params.items() if v}
    return RedirectResponse(url + (("&" if "?" in url else "?") + urlencode(params) if params else ""),
                            status_code=303)


def error_text(err: Exception) -> str:
    if isinstance(err, YiyunError):
        return err.message
    if isinstance(err, ValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return f"填写有误：{where} {first.get('msg', '')} (invalid input)".strip()
    return str(err)


def _json(result: Any) -> Any:
    """What a JSON route function returned: its dict, also when it chose the status itself."""
    if isinstance(result, Response):
        return json.loads(bytes(result.body))
    return result


async def form_of(request: Request) -> dict[str, Any]:
    """The posted form after the CSRF check (the session's token in `csrf_token`)."""
    user = await sessions.current_user(request)
    if user is None:
        raise Forbidden("登录已失效，请重新登录 (signed out)")
    await sessions.check_csrf(request, user)
    return dict((await request.form()).multi_items())


def _fhir_base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir/R4"


# ------------------------------------------------------------------ who
def is_patient(ctx: AuthContext) -> bool:
    return "patient" in ctx.roles


def is_doctor(ctx: AuthContext) -> bool:
    return "doctor" in ctx.roles and (ctx.fhir_user or "").startswith("Practitioner/")


def is_admin(ctx: AuthContext) -> bool:
    return bool(ADMIN_ROLES & set(ctx.roles))


async def patient_user(request: Request, ctx: AuthContext = Depends(require_patient_page_user)) -> AuthContext:
    if not is_patient(ctx):
        raise _WrongRole("此页面仅供患者使用，请用患者账号登录 (this page is for patients)", "patient")
    return ctx


async def doctor_user(request: Request, ctx: AuthContext = Depends(require_page_user)) -> AuthContext:
    if not is_doctor(ctx):
        raise _WrongRole("此页面仅供医生使用 (this page is for doctors)", "doctor")
    return ctx


async def admin_user(request: Request, ctx: AuthContext = Depends(require_page_user)) -> AuthContext:
    if not is_admin(ctx):
        raise _WrongRole("此页面仅供医院管理员使用 (this page is for hospital administrators)", "admin")
    return ctx


class _WrongRole(Exception):
    def __init__(self, message: str, area: str) -> None:
        super().__init__(message)
        self.message, self.area = message, area


async def patient_context(request: Request, ctx: AuthContext, hospital: str) -> AuthContext:
    """The patient's context at `hospital` with their Patient record there: made (from their
    record where they signed in, or their account) when missing; the session moves to that
    hospital, since an online consultation is held with one hospital."""
    if hospital == ctx.tenant and ctx.patient:
        return ctx
    cookie = request.cookies.get(sessions.COOKIE, "")
    async with unit_of_work(get_engine()) as conn:
        await catalogue.load_directory(conn, hospital)
        await patient_in_hospital(conn, ctx, hospital, create=True)
        if hospital != ctx.tenant and not await sessions.switch_tenant(conn, cookie, hospital):
            raise Forbidden("无法切换到该医院 (cannot switch to that hospital)")
    async with unit_of_work(get_engine()) as conn:
        user = await sessions.signed_in(conn, cookie, base_url=_fhir_base(request),
                                        client_address=request.client.host if request.client else None)
    if user is None:
        raise Forbidden("登录已失效，请重新登录 (signed out)")
    request.state.yiyun_signed_in = user
    return user.context


# ------------------------------------------------------------------ patient: browse
@router.get("/patient")
async def patient_home(request: Request, ctx: AuthContext = Depends(patient_user)):
    async with unit_of_work(get_engine(), write=False) as conn:
        hospitals = await catalogue.list_hospitals(conn)
        slugs = {h["slug"] for h in hospitals}
        current = ctx.tenant if ctx.tenant in slugs else (hospitals[0]["slug"] if hospitals else None)
        departments = await catalogue.list_departments(conn, current) if current else []
    upcoming = [a for a in await _my_appointments(ctx, [current] if current else [])
                if a["status"] in ("booked", "arrived", "checked-in")][:3]
    return page(request, "hospital/patient_home.html", tab="home", hospitals=hospitals, current=current,
                departments=departments, upcoming=upcoming)


@router.get("/patient/doctors")
async def patient_doctors(request: Request, hospital: str | None = Query(None, max_length=64),
                          department: str | None = Query(None, max_length=64),
                          type: str | None = Query(None, max_length=20), q: str | None = Query(None, max_length=50),
                          ctx: AuthContext = Depends(patient_user)):
    hospital = hospital or ctx.tenant
    try:
        async with unit_of_work(get_engine(), write=False) as conn:
            hospitals = await catalogue.list_hospitals(conn)
            info = await catalogue.get_hospital(conn, hospital)
            doctors = await catalogue.list_doctors(conn, hospital, department=department or None,
                                                   consultation_type=type or None, q=(q or "").strip() or None)
    except YiyunError as err:
        return problem(request, err.status, err.message)
    return page(request, "hospital/patient_doctors.html", tab="doctors", hospitals=hospitals, hospital=info,
                doctors=doctors, department=department or "", ctype=type or "", q=q or "")


@router.get("/patient/search")
async def patient_search(request: Request, q: str = Query("", max_length=50), ctx: AuthContext = Depends(patient_user)):
    result = None
    if q.strip():
        try:
            async with unit_of_work(get_engine(), write=False) as conn:
                result = await catalogue.search(conn, q)
        except YiyunError as err:
            return problem(request, err.status, err.message)
    return page(request, "hospital/patient_search.html", tab="doctors", q=q, result=result)


@router.get("/patient/triage")
async def patient_triage(request: Request, text: str = Query("", max_length=500),
                         ctx: AuthContext = Depends(patient_user)):
    """智能导诊: the knowledge module's triage; each suggested department links to its doctors."""
    result = None
    if text.strip():
        from yiyun.knowledge.triage import triage

        result = triage(text.strip())
    return page(request, "hospital/patient_triage.html", tab="home", text=text, result=result)


@router.get("/patient/fever")
async def patient_fever(request: Request, lat: float | None = Query(None), lon: float | None = Query(None),
                        ctx: AuthContext = Depends(patient_user)):
    try:
        clinics = (await hospital_api.fever_clinics(lat, lon))["clinics"]
    except YiyunError as err:
        return problem(request, err.status, err.message)
    return page(request, "hospital/patient_fever.html", tab="home", clinics=clinics, located=lat is not None)


@router.get("/patient/doctors/{hospital}/{role_id}")
async def patient_doctor(request: Request, hospital: str, role_id: str, ctx: AuthContext = Depends(patient_user),
                         error: str | None = None):
    try:
        async with unit_of_work(get_engine(), write=False) as conn:
            doc = await catalogue.get_doctor(conn, hospital, role_id, days=7)
    except YiyunError as err:
        return problem(request, err.status, err.message)
    by_type: dict[str, dict[str, list]] = {}
    types = {s["schedule"]: s["type"] for s in doc["services"]}
    full = await _full_days(hospital, list(types))
    for slot in doc["slots"]:
        day = (local_day_label_en if _english(request) else local_day_label)(slot["start"])
        by_type.setdefault(types.get(slot["schedule"], slot.get("type") or ""), {}).setdefault(day, []).append(slot)
    return page(request, "hospital/patient_doctor.html", tab="doctors", doc=doc, by_type=by_type, error=error,
                full_days=[(types[sid], day) for sid, days in full.items() for day in days if sid in types],
                schedule_of={t: sid for sid, t in types.items()}, status=400 if error else 200)


# ------------------------------------------------------------------ patient: booking
async def _my_appointments(ctx: AuthContext, hospitals: list[str]) -> list[dict]:
    out = []
    for slug in hospitals:
        try:
            out.extend((await hospital_api.my_appointments(hospital=slug, patient=None, ctx=ctx))["appointments"])
        except YiyunError:
            continue
    return sorted(out, key=lambda a: a.get("start") or "", reverse=False)


async def _describe(appts: list[dict]) -> list[dict]:
    """Add the doctor's and department's names from the public directory."""
    async with unit_of_work(get_engine(), write=False) as conn:
        for a in appts:
            try:
                d = await catalogue.load_directory(conn, a["hospital"])
            except YiyunError:
                continue
            a["hospital_name"] = catalogue.hospital_summary(d)["name"]
            role = a.get("practitioner_role")
            if role in d.roles:
                s = catalogue.doctor_summary(d, role)
                a["doctor_name"], a["department_name"], a["doctor_title"] = s["name"], s["department"], s["title"]
    return appts


@router.post("/patient/book")
async def patient_book(request: Request, ctx: AuthContext = Depends(patient_user)):
    try:
        form = await form_of(request)
        hospital = form.get("hospital") or ctx.tenant
        body = BookRequest(slot=form.get("slot", ""), hospital=hospital)
        booked = await hospital_api.book(body, ctx=ctx)
    except (YiyunError, ValidationError) as err:
        role = (await request.form()).get("role")
        if role:
            return await patient_doctor(request, (await request.form()).get("hospital") or ctx.tenant, str(role),
                                        ctx=ctx, error=error_text(err))
        return problem(request, getattr(err, "status", 400), error_text(err))
    return back(f"/patient/appointments/{booked['hospital']}/{booked['id']}", booked="1")


@router.get("/patient/appointments")
async def patient_appointments(request: Request, ctx: AuthContext = Depends(patient_user),
                               notice: str = Query("", max_length=300), error: str = Query("", max_length=500)):
    async with unit_of_work(get_engine(), write=False) as conn:
        slugs = [h["slug"] for h in await catalogue.list_hospitals(conn)]
    appts = await _describe(await _my_appointments(ctx, slugs))
    now = datetime.now(CHINA_TZ).isoformat()
    upcoming = [a for a in appts if a["status"] in ("booked", "arrived", "checked-in") and (a["end"] or "") >= now[:19]]
    past = [a for a in appts if a not in upcoming]
    past.reverse()
    entries, notes = await _my_waitlist(ctx, slugs), await _my_notifications(ctx, slugs)
    return page(request, "hospital/patient_appointments.html", tab="appointments", upcoming=upcoming, past=past,
                waitlist=entries, notifications=notes, notice=notice, error=error)


async def _appointment(ctx: AuthContext, hospital: str, appointment_id: str) -> dict | None:
    for a in await _my_appointments(ctx, [hospital]):
        if a["id"] == appointment_id:
            return (await _describe([a]))[0]
    return None


@router.get("/patient/appointments/{hospital}/{appointment_id}")
async def patient_appointment(request: Request, hospital: str, appointment_id: str, booked: str = "",
                              error: str = Query("", max_length=500), ctx: AuthContext = Depends(patient_user)):
    appt = await _appointment(ctx, hospital, appointment_id)
    if appt is None:
        return problem(request, 404, "未找到该预约 (appointment not found)")
    slots: list[dict] = []
    reminders: list[dict] = []
    rules = None
    async with unit_of_work(get_engine(), write=False) as conn:
        rules = (await booking.get_rules(conn, hospital)).as_dict()
        if appt["status"] == "booked" and appt.get("practitioner_role"):
            try:
                doc = await catalogue.get_doctor(conn, hospital, appt["practitioner_role"], days=14)
                sched = next((s["schedule"] for s in doc["services"] if s["type"] == appt["consultation_type"]), None)
                slots = [s for s in doc["slots"] if s["schedule"] == sched][:40]
            except YiyunError:
                slots = []
        reminders = await booking.reminders_of(conn, hospital, appointment_id)
    rebook = await _rebook(ctx, appt)
    return page(request, "hospital/patient_appointment.html", tab="appointments", appt=appt, booked=bool(booked),
                slots=slots, reminders=reminders, rules=rules, error=error, rebook=rebook)


@router.post("/patient/appointments/{hospital}/{appointment_id}/cancel")
async def patient_cancel(request: Request, hospital: str, appointment_id: str, ctx: AuthContext = Depends(patient_user)):
    url = f"/patient/appointments/{hospital}/{appointment_id}"
    try:
        form = await form_of(request)
        await hospital_api.cancel(hospital, appointment_id, CancelRequest(reason=form.get("reason") or None), ctx=ctx)
    except (YiyunError, ValidationError) as err:
        return back(url, error=error_text(err))
    return back(url)


@router.post("/patient/appointments/{hospital}/{appointment_id}/reschedule")
async def patient_reschedule(request: Request, hospital: str, appointment_id: str,
                             ctx: AuthContext = Depends(patient_user)):
    url = f"/patient/appointments/{hospital}/{appointment_id}"
    try:
        form = await form_of(request)
        await hospital_api.reschedule(hospital, appointment_id, RescheduleRequest(slot=form.get("slot", "")), ctx=ctx)
    except (YiyunError, ValidationError) as err:
        return back(url, error=error_text(err))
    return back(url, booked="1")


# ------------------------------------------------------------------ patient: consultations
async def _admission_of(ctx: AuthContext) -> tuple[bool, bool]:
    """(verified by real name, a child under 6) of the signed-in patient, for the form;
    starting checks both again (`admission`)."""
    async with unit_of_work(get_engine(), write=False) as conn:
        verified = await admission.is_verified(conn, ctx.tenant, ctx.patient, ctx.account_id)
        me = None
        if ctx.patient:
            try:
                me = (await FhirRepository(conn, ctx).read("Patient", ctx.patient)).resource
            except YiyunError:
                me = None  # no record here yet: made when the consultation starts
    return verified, admission.is_young_child(me)


async def _consult_for_choices(ctx: AuthContext, hospital: str) -> list[dict]:
    """Whom the form offers: the patient and the wards /patient/me lists (at the hospital
    signed in to; wards are registered per hospital)."""
    if hospital != ctx.tenant or not ctx.patient:
        return []
    async with consult_service.open_work(consult_service.party_of(ctx), write=False) as work:
        return await consult_wards.consult_for_choices(work)


def real_name_needed(request: Request, back_url: str | None = None) -> HTMLResponse:
    return page(request, "hospital/patient_real_name_needed.html", 403, tab="consult", back_url=back_url)


@router.get("/patient/consult/new")
async def patient_consult_form(request: Request, hospital: str | None = Query(None, max_length=64),
                               doctor: str | None = Query(None, max_length=64),
                               department: str | None = Query(None, max_length=64),
                               appointment: str | None = Query(None, max_length=64),
                               mode: str = Query("text", pattern="^(text|video)$"),
                               ctx: AuthContext = Depends(patient_user)):
    hospital = hospital or ctx.tenant
    verified, child = await _admission_of(ctx)
    if not verified:
        return real_name_needed(request, str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
    try:
        async with unit_of_work(get_engine(), write=False) as conn:
            d = await catalogue.load_directory(conn, hospital)
            departments = [x for x in await catalogue.list_departments(conn, hospital)
                           if any(t["code"].startswith("online") for t in x["consultation_types"])]
    except YiyunError as err:
        return problem(request, err.status, err.message)
    doctor_info = catalogue.doctor_summary(d, doctor) if doctor and doctor in d.roles else None
    # a booking names its patient: the form offers no choice for it, and asks for the
    # guardian's confirmation when it is a young ward's
    choices = [] if appointment else await _consult_for_choices(ctx, hospital)
    if appointment and not child and hospital == ctx.tenant and ctx.patient:
        async with consult_service.open_work(consult_service.party_of(ctx), write=False) as work:
            child = await consult_wards.booked_for_young_child(work, appointment)
    return page(request, "hospital/patient_consult_new.html", tab="consult", hospital=catalogue.hospital_summary(d),
                doctor=doctor_info, departments=departments, department=department or "",
                appointment=appointment or "", mode=mode, error=None, form={}, child=child,
                choices=choices if len(choices) > 1 else [], any_child=child or any(c["child_under_6"] for c in choices))


@router.post("/patient/consult")
async def patient_consult_start(request: Request, ctx: AuthContext = Depends(patient_user)):
    """Start a consultation with the pre-consultation form, then attach its photos."""
    try:
        form = await form_of(request)
        hospital = form.get("hospital") or ctx.tenant
        pctx = await patient_context(request, ctx, hospital)
        doctor = department = None
        if form.get("doctor"):
            async with unit_of_work(get_engine(), write=False) as conn:
                d = await catalogue.load_directory(conn, hospital)
            role = d.roles.get(form["doctor"])
            if role is None:
                raise BadRequest("未找到该医生 (doctor not found)")
            doctor = (role.get("practitioner") or {}).get("reference")
        elif form.get("department"):
            department = f"HealthcareService/{form['department']}"
        appointment = f"Appointment/{form['appointment']}" if form.get("appointment") else None
        patient = f"Patient/{form['patient']}" if form.get("patient") else None
        body = StartConsultation(mode=form.get("mode") or "text", doctor=doctor, department=department,
                                 appointment=appointment, patient=patient, form=PreConsultationForm(
                                     chief_complaint=form.get("chief_complaint", ""), duration=form.get("duration", ""),
                                     history=form.get("history", ""), allergies=form.get("allergies", ""),
                                     medications=form.get("medications", ""),
                                     guardian_accompanies=form.get("guardian_accompanies") == "1"))
        if not body.form.chief_complaint:
            raise BadRequest("请填写主诉：哪里不舒服 (describe what troubles you)")
        started = _json(await consult_api.start(body, ctx=pctx))
    except admission.RealNameRequired:
        return real_name_needed(request)
    except (YiyunError, ValidationError) as err:
        return problem(request, getattr(err, "status", 400), error_text(err))
    photos = [f for f in (await request.form()).getlist("photos") if getattr(f, "filename", None)][:MAX_PHOTOS]
    failed = 0
    for photo in photos:
        try:
            await consult_api.upload_image(started["id"], file=photo, purpose="form", client_id=None, ctx=pctx)
        except YiyunError:
            failed += 1
    return back(f"/patient/consultations/{started['id']}", photo_error="1" if failed else "")


@router.get("/patient/consultations")
async def patient_consultations(request: Request, ctx: AuthContext = Depends(patient_user)):
    items: list[dict] = []
    if ctx.patient:
        async with consult_service.open_work(consult_service.party_of(ctx), write=False) as work:
            items = await consult_service.my_consultations(work)
            found = await work.repo.current_many([("Practitioner", c["doctor"].split("/", 1)[1])
                                                   for c in items if c["doctor"]]
                                                  + [("Patient", c["patient"].split("/", 1)[1]) for c in items])
            for c in items:
                s = found.get(("Practitioner", (c["doctor"] or "/").split("/", 1)[1]))
                c["doctor_name"] = consult_service.display_name(s.resource) if s is not None else None
                # a ward's consultation says whose it is
                c["for_ward"] = c["patient"] != f"Patient/{ctx.patient}"
                p = found.get(("Patient", c["patient"].split("/", 1)[1]))
                c["patient_name"] = consult_service.display_name(p.resource) if p is not None else None
    return page(request, "hospital/patient_consultations.html", tab="consult", items=items,
                hospital=ctx.tenant)


@router.post("/patient/consultations/{cid}/rating")
async def patient_rate(request: Request, cid: str, ctx: AuthContext = Depends(patient_user)):
    url = f"/patient/consultations/{cid}"
    try:
        form = await form_of(request)
        stars = str(form.get("stars", ""))
        if stars not in ("1", "2", "3", "4", "5"):
            raise BadRequest("请选择 1 到 5 星 (choose 1 to 5 stars)")
        await consult_api.rate(cid, RatingIn(stars=int(stars), comment=str(form.get("comment") or "")), ctx=ctx)
    except (YiyunError, ValidationError) as err:
        return back(url, rating_error=error_text(err))
    return back(url)


@router.get("/patient/consultations/{cid}")
async def patient_consultation(request: Request, cid: str, photo_error: str = "",
                               rating_error: str = Query("", max_length=300),
                               ctx: AuthContext = Depends(patient_user)):
    try:
        detail = await consult_api.detail(cid, ctx=ctx)
        record = await consult_api.get_record(cid, ctx=ctx) if detail.get("record") else None
    except YiyunError as err:
        return problem(request, err.status, err.message)
    return page(request, "hospital/patient_consultation.html", tab="consult", c=detail, record=_record_view(record),
                photo_error=bool(photo_error), rating_error=rating_error)


def _record_view(record: dict | None) -> dict | None:
    """The visit record as labelled sections (the ClinicalImpression's notes are "label：text")."""
    if not record or not record.get("clinical_impression"):
        return None
    ci = record["clinical_impression"]
    notes = dict((n.get("text") or "").partition("：")[::2] for n in ci.get("note") or [])
    advice = notes.pop("处理意见", None)
    sections = [("Chief complaint", ci.get("description")), *notes.items(), ("Assessment", ci.get("summary")),
                ("Advice", advice)]
    diagnoses = [{"code": c.get("code"), "name": c.get("display")}
                 for cond in record.get("conditions") or [] for c in (cond.get("code") or {}).get("coding") or []]
    enc_type = [t.get("text") for t in (record.get("encounter") or {}).get("type") or [] if t.get("text")]
    return {"sections": [(k, v) for k, v in sections if v], "diagnoses": diagnoses, "date": ci.get("date"),
            "kind": enc_type[-1] if enc_type else None,
            "referrals": [r.get("reasonCode", [{}])[0].get("text") or "" for r in record.get("referrals") or []]}


# ------------------------------------------------------------------ patient: me
async def _patient_repo_search(ctx: AuthContext, res_type: str, params: list[tuple[str, str]],
                               patients: list[str] | None = None) -> list[dict]:
    """The signed-in patient's resources (or those of `patients`, Patient ids they may read)."""
    if not ctx.patient:
        return []
    whose = ",".join(f"Patient/{i}" for i in (patients or [ctx.patient]))
    async with unit_of_work(get_engine(), write=False) as conn:
        result = await FhirRepository(conn, ctx).search(res_type, [("patient", whose), *params])
        return [s.resource for s in result.matches]


async def _family_records(conn, repo: FhirRepository, ctx: AuthContext) -> dict[str, dict]:
    """Patient id → Patient of the family members the signed-in patient is the guardian of
    (`identity.care.wards`: what the access policy lets them read)."""
    from yiyun.identity.care import wards

    ids = sorted({r.patient for r in await conn.execute(wards(ctx.tenant, ctx.patient).select())} - {ctx.patient})
    found = await repo.current_many([("Patient", i) for i in ids]) if ids else {}
    return {i: s.resource for (_, i), s in found.items() if not s.deleted}


@router.get("/patient/me")
async def patient_me(request: Request, ctx: AuthContext = Depends(patient_user)):
    me = None
    family: list[dict] = []
    if ctx.patient:
        async with unit_of_work(get_engine(), write=False) as conn:
            repo = FhirRepository(conn, ctx)
            me = (await repo.read("Patient", ctx.patient)).resource
            found = await _family_records(conn, repo, ctx)
            family = [{"id": i, "name": consult_service.display_name(r), "gender": r.get("gender"),
                       "birth": r.get("birthDate")} for i, r in found.items()]
    return page(request, "hospital/patient_me.html", tab="me", me=me, name=consult_service.display_name(me) if me else
                (ctx.display_name or ""), family=family)


@router.get("/patient/records")
async def patient_records(request: Request, ctx: AuthContext = Depends(patient_user)):
    family: dict[str, dict] = {}
    if ctx.patient:  # the wards' visits too (a guardian's consultations for them among them)
        async with unit_of_work(get_engine(), write=False) as conn:
            family = await _family_records(conn, FhirRepository(conn, ctx), ctx)
    whose = [ctx.patient, *sorted(family)] if ctx.patient else None
    encounters = await _patient_repo_search(ctx, "Encounter", [("_sort", "-date"), ("_count", "50")], whose)
    conditions = await _patient_repo_search(ctx, "Condition", [("_count", "100")], whose)
    impressions = await _patient_repo_search(ctx, "ClinicalImpression", [("_count", "100")], whose)
    by_enc: dict[str, dict] = {}
    for cond in conditions:
        eid = ref_id(cond.get("encounter"), "Encounter")
        for c in (cond.get("code") or {}).get("coding") or []:
            by_enc.setdefault(eid or "", {}).setdefault("diagnoses", []).append(c)
    for ci in impressions:
        eid = ref_id(ci.get("encounter"), "Encounter")
        by_enc.setdefault(eid or "", {})["impression"] = ci
    visits = []
    for e in encounters:
        extra = by_enc.get(e.get("id"), {})
        ward = family.get(ref_id(e.get("subject"), "Patient") or "")
        visits.append({"id": e.get("id"), "start": (e.get("period") or {}).get("start"), "status": e.get("status"),
                       "ward_name": consult_service.display_name(ward) if ward else None,
                       "online": (e.get("class") or {}).get("code") == "VR",
                       "types": [t.get("text") for t in e.get("type") or [] if t.get("text")],
                       "reason": ", ".join(r.get("text") or "" for r in e.get("reasonCode") or []),
                       "diagnoses": extra.get("diagnoses", []), "impression": extra.get("impression"),
                       "provider": (e.get("serviceType") or {}).get("text")
                       or (e.get("serviceProvider") or {}).get("display"),
                       "doctor": next((d for p in e.get("participant") or []
                                       if (d := (p.get("individual") or {}).get("display"))), None)})
    return page(request, "hospital/patient_records.html", tab="me", visits=visits)


def observation_view(o: dict) -> dict:
    """Value, unit, reference range and abnormal flag (HL7 v3 ObservationInterpretation)."""
    q = o.get("valueQuantity") or {}
    value = q.get("value") if q else (o.get("valueString") or (o.get("valueCodeableConcept") or {}).get("text"))
    flags = [c.get("code") for i in o.get("interpretation") or [] for c in i.get("coding") or [] if c.get("code")]
    rng = (o.get("referenceRange") or [{}])[0]
    low, high = (rng.get("low") or {}).get("value"), (rng.get("high") or {}).get("value")
    if not flags and isinstance(value, (int, float)):
        if low is not None and value < low:
            flags = ["L"]
        elif high is not None and value > high:
            flags = ["H"]
    ref_text = rng.get("text") or (f"{low if low is not None else ''}–{high if high is not None else ''}"
                                   if low is not None or high is not None else "")
    flag = next((f for f in flags if f not in ("N",)), None)
    return {"name": (o.get("code") or {}).get("text") or next(
        (c.get("display") for c in (o.get("code") or {}).get("coding") or [] if c.get("display")), ""),
            "value": value, "unit": q.get("unit") or q.get("code") or "", "range": ref_text,
            "flag": flag, "abnormal": flag is not None}


@router.get("/patient/reports")
async def patient_reports(request: Request, ctx: AuthContext = Depends(patient_user)):
    reports = await _patient_repo_search(ctx, "DiagnosticReport", [("_sort", "-date"), ("_count", "50")])
    observations = {o.get("id"): o for o in await _patient_repo_search(ctx, "Observation", [("_count", "1000")])}
    out = []
    for r in reports:
        results = [observation_view(observations[i]) for x in r.get("result") or []
                   if (i := ref_id(x, "Observation")) in observations]
        cats = {c.get("code") for cat in r.get("category") or [] for c in cat.get("coding") or []}
        out.append({"id": r.get("id"), "name": (r.get("code") or {}).get("text") or next(
            (c.get("display") for c in (r.get("code") or {}).get("coding") or []), ""),
            "date": r.get("effectiveDateTime") or r.get("issued"), "status": r.get("status"),
            "imaging": bool(cats & {"RAD", "IMG", "CT", "MR", "US"}) or bool(r.get("imagingStudy")),
            "conclusion": r.get("conclusion"), "results": results,
            "abnormal": sum(1 for x in results if x["abnormal"])})
    # lab results sent without a DiagnosticReport: one card per day
    used = {i for r in reports for x in r.get("result") or [] if (i := ref_id(x, "Observation"))}
    by_day: dict[str, list[dict]] = {}
    for oid, o in observations.items():
        cats = {c.get("code") for cat in o.get("category") or [] for c in cat.get("coding") or []}
        when = o.get("effectiveDateTime") or o.get("issued") or ""
        if oid not in used and "laboratory" in cats and when:
            by_day.setdefault(local_time(when, "%Y-%m-%d"), []).append(o)
    for day, obs in by_day.items():
        results = [observation_view(o) for o in sorted(obs, key=lambda o: observation_view(o)["name"])]
        out.append({"id": None, "name": None, "date": obs[0].get("effectiveDateTime") or obs[0].get("issued"),
                    "status": "final", "imaging": False, "conclusion": None, "results": results,
                    "abnormal": sum(1 for x in results if x["abnormal"])})
    out.sort(key=lambda r: r["date"] or "", reverse=True)
    return page(request, "hospital/patient_reports.html", tab="me", reports=out)


# ------------------------------------------------------------------ doctor
def _doctor_roles(d: catalogue.Directory, ctx: AuthContext) -> list[str]:
    return [rid for rid, r in d.roles.items() if (r.get("practitioner") or {}).get("reference") == ctx.fhir_user]


@router.get("/doctor")
async def doctor_queue(request: Request, ctx: AuthContext = Depends(doctor_user)):
    try:
        queue = await consult_api.queue(ctx=ctx)
    except YiyunError as err:
        return problem(request, err.status, err.message, area="doctor")
    for item in queue["waiting"] + queue["active"]:
        item["waiting_minutes"] = item["waiting_seconds"] // 60
    return page(request, "hospital/doctor_queue.html", nav="queue", queue=queue)


@router.get("/doctor/consultations/{cid}")
async def doctor_consultation(request: Request, cid: str, ctx: AuthContext = Depends(doctor_user),
                              notice: str = Query("", max_length=500), error: str = Query("", max_length=1000),
                              refusal: str | None = None, draft: dict | None = None):
    try:
        detail = await consult_api.detail(cid, ctx=ctx)
        record = await consult_api.get_record(cid, ctx=ctx) if detail.get("record") else None
        async with unit_of_work(get_engine(), write=False) as conn:
            d = await catalogue.load_directory(conn, ctx.tenant)
            mine = _doctor_roles(d, ctx)
            colleagues = [catalogue.doctor_summary(d, rid) for rid in catalogue.doctor_roles(d) if rid not in mine]
            departments = [catalogue.department_summary(d, sid) for sid in d.services]
            follow_slots = []
            for rid in mine[:1]:
                follow_slots = (await catalogue.get_doctor(conn, ctx.tenant, rid, days=14))["slots"][:30]
    except YiyunError as err:
        return problem(request, err.status, err.message, area="doctor")
    return page(request, "hospital/doctor_consultation.html", 422 if refusal else 200, nav="queue", c=detail,
                record=_record_view(record), colleagues=colleagues, departments=departments,
                follow_slots=follow_slots, notice=notice, error=error, refusal=refusal, draft=draft or {})


async def _doctor_action(request: Request, cid: str, action) -> RedirectResponse:
    url = f"/doctor/consultations/{cid}"
    try:
        form = await form_of(request)
        notice = await action(form)
    except (YiyunError, ValidationError) as err:
        return back(url, error=error_text(err))
    return back(url, notice=notice or "")


@router.post("/doctor/consultations/{cid}/accept")
async def doctor_accept(request: Request, cid: str, ctx: AuthContext = Depends(doctor_user)):
    async def act(form):
        await consult_api.accept(cid, ctx=ctx)
    return await _doctor_action(request, cid, act)


@router.post("/doctor/consultations/{cid}/end")
async def doctor_end(request: Request, cid: str, ctx: AuthContext = Depends(doctor_user)):
    async def act(form):
        await consult_api.end(cid, EndIn(reason=form.get("reason") or None), ctx=ctx)
    return await _doctor_action(request, cid, act)


@router.post("/doctor/consultations/{cid}/handover")
async def doctor_handover(request: Request, cid: str, ctx: AuthContext = Depends(doctor_user)):
    async def act(form):
        await consult_api.handover(cid, HandoverIn(doctor=form.get("doctor", ""), note=form.get("note", "")), ctx=ctx)
        return "已转交同事 (handed over)"
    response = await _doctor_action(request, cid, act)
    if "error=" not in response.headers["location"]:
        return back("/doctor", notice="已转交同事 (handed over)")
    return response


@router.post("/doctor/consultations/{cid}/referral")
async def doctor_referral(request: Request, cid: str, ctx: AuthContext = Depends(doctor_user)):
    async def act(form):
        await consult_api.referral(cid, ReferralIn(to=form.get("to", ""), reason=form.get("reason", ""),
                                                   note=form.get("note") or None), ctx=ctx)
        return "已开具转诊单 (referral written)"
    return await _doctor_action(request, cid, act)


@router.post("/doctor/consultations/{cid}/book")
async def doctor_book(request: Request, cid: str, ctx: AuthContext = Depends(doctor_user)):
    """Follow-up booking on the patient's behalf (a staff booking for the consultation's patient)."""
    async def act(form):
        detail = await consult_api.detail(cid, ctx=ctx)
        if detail["relation"] == "patient":
            raise Forbidden("仅接诊医生可代约 (only the consultation's doctor books for the patient)")
        booked = await hospital_api.book(BookRequest(slot=form.get("slot", ""), hospital=ctx.tenant,
                                                     patient=detail["patient"].split("/", 1)[1],
                                                     comment="复诊预约 (follow-up)"), ctx=ctx)
        return f"已为患者预约 {local_time(booked['start'])}，排队号 {booked['queue_number'] or '-'}"
    return await _doctor_action(request, cid, act)


RECORD_FIELDS = ("chief_complaint", "present_illness", "past_history", "examination", "assessment", "advice")


@router.post("/doctor/consultations/{cid}/record")
async def doctor_record(request: Request, cid: str, ctx: AuthContext = Depends(doctor_user)):
    """The visit record; the follow-up-visit rule's refusal is shown with the draft kept."""
    try:
        form = await form_of(request)
    except YiyunError as err:
        return problem(request, err.status, err.message, area="doctor")
    codes = [c.strip() for c in (form.get("diagnoses") or "").replace("，", ",").split(",") if c.strip()]
    draft = {k: form.get(k, "") for k in RECORD_FIELDS} | {"diagnoses": ", ".join(codes)}
    try:
        body = VisitRecordIn(**{k: form.get(k, "") for k in RECORD_FIELDS}, diagnoses=[{"code": c} for c in codes])
        await consult_api.save_record(cid, body, ctx=ctx)
    except (YiyunError, ValidationError) as err:
        return await doctor_consultation(request, cid, ctx=ctx, notice="", error="", refusal=error_text(err),
                                         draft=draft)
    return back(f"/doctor/consultations/{cid}", notice="病历已保存 (record saved)")


@router.get("/doctor/icd10")
async def doctor_icd10(q: str = Query("", max_length=40), ctx: AuthContext = Depends(doctor_user)):
    """ICD-10 (国家临床版 2.0) codes whose code starts with or whose name contains `q`."""
    q = q.strip()
    out = []
    if q:
        upper = q.upper()
        for code, name in consult_records.icd10_names().items():
            if code.startswith(upper) or q in name:
                out.append({"code": code, "name": name})
                if len(out) >= 20:
                    break
    return JSONResponse({"results": out})


@router.get("/doctor/schedule")
async def doctor_schedule(request: Request, ctx: AuthContext = Depends(doctor_user),
                          notice: str = Query("", max_length=500), error: str = Query("", max_length=500)):
    try:
        async with unit_of_work(get_engine(), write=False) as conn:
            d = await catalogue.load_directory(conn, ctx.tenant)
        roles = _doctor_roles(d, ctx)
        schedules = []
        for rid in roles:
            schedules.extend((await hospital_api.list_schedules(role=rid, ctx=ctx))["schedules"])
        targets = {f"PractitionerRole/{r}" for r in roles} | {f"Schedule/{s['id']}" for s in schedules}
        exceptions = [x for x in (await hospital_api.list_exceptions(ctx=ctx))["exceptions"]
                      if x.get("target") in targets]
    except YiyunError as err:
        return problem(request, err.status, err.message, area="doctor")
    return page(request, "hospital/doctor_schedule.html", nav="schedule", roles=roles, schedules=schedules,
                exceptions=exceptions, notice=notice, error=error, today=today_local().isoformat())


def _local_dt(day: str, hhmm: str) -> datetime:
    try:
        return datetime.fromisoformat(f"{day}T{hhmm or '00:00'}").replace(tzinfo=CHINA_TZ)
    except ValueError:
        raise BadRequest("日期或时间格式不正确 (date or time invalid)") from None


@router.post("/doctor/schedule")
async def doctor_schedule_post(request: Request, ctx: AuthContext = Depends(doctor_user)):
    """One of: open a consultation type (schedule), add a weekly template, leave, a
    closed/extra exception, generate slots (field `action`)."""
    try:
        form = await form_of(request)
        action = form.get("action")
        async with unit_of_work(get_engine(), write=False) as conn:
            roles = _doctor_roles(await catalogue.load_directory(conn, ctx.tenant), ctx)
        if not roles:
            raise Forbidden("您在本院没有出诊岗位 (no clinical role here)")
        if action == "schedule":
            fee = round(float(form.get("fee_yuan") or 0) * 100)
            await hospital_api.create_schedule(ScheduleRequest(role=roles[0], type=form.get("type", ""), fee_fen=fee,
                                                               active=form.get("active", "1") == "1"), ctx=ctx)
            notice = "已保存问诊服务 (service saved)"
        elif action == "template":
            days = [int(x) for x in (await request.form()).getlist("weekdays")]
            await hospital_api.add_template(form.get("schedule", ""), TemplateRequest(
                weekdays=days, start=form.get("start", ""), end=form.get("end", ""),
                slot_minutes=int(form.get("slot_minutes") or 15)), ctx=ctx)
            await hospital_api.generate(GenerateRequest(days=14, schedules=[form.get("schedule", "")]), ctx=ctx)
            notice = "已添加出诊时段并生成号源 (template added, slots generated)"
        elif action == "leave":
            body = _leave_request(form, roles[0])
            confirm = await _leave_needs_confirming(request, body, form, "/doctor/schedule", "doctor", ctx)
            if confirm is not None:
                return confirm
            done = await hospital_api.add_leave(body, ctx=ctx)
            notice = _leave_notice(done)
        elif action == "exception":
            await hospital_api.add_exception(ExceptionRequest(
                kind=form.get("kind", ""), target=f"Schedule/{form.get('schedule', '')}",
                start=_local_dt(form.get("day", ""), form.get("start_time", "")),
                end=_local_dt(form.get("day", ""), form.get("end_time", "")), reason=form.get("reason", ""),
                slot_minutes=int(form["slot_minutes"]) if form.get("slot_minutes") else None), ctx=ctx)
            notice = "已保存排班例外 (exception saved)"
        elif action == "generate":
            sched = [s for s in (await request.form()).getlist("schedules") if s]
            report = await hospital_api.generate(GenerateRequest(days=int(form.get("days") or 14), schedules=sched),
                                                 ctx=ctx)
            notice = f"号源已生成 (slots generated): {report}"[:300]
        else:
            raise BadRequest("未知操作 (unknown action)")
    except (YiyunError, ValidationError, ValueError) as err:
        return back("/doctor/schedule", error=error_text(err))
    return back("/doctor/schedule", notice=notice)


@router.get("/doctor/patients")
async def doctor_patients(request: Request, ctx: AuthContext = Depends(doctor_user)):
    patients: dict[str, dict] = {}
    async with consult_service.open_work(consult_service.party_of(ctx), write=False) as work:
        items = await consult_service.my_consultations(work)
        found = await work.repo.current_many([("Patient", c["patient"].split("/", 1)[1]) for c in items])
        for c in items:
            pid = c["patient"].split("/", 1)[1]
            p = patients.setdefault(pid, {"id": pid, "consultations": [], "name": None})
            s = found.get(("Patient", pid))
            if s is not None and not s.deleted:
                p["name"], p["gender"], p["birth"] = (consult_service.display_name(s.resource),
                                                     s.resource.get("gender"), s.resource.get("birthDate"))
            p["consultations"].append(c)
    return page(request, "hospital/doctor_patients.html", nav="patients", patients=list(patients.values()))


@router.get("/doctor/records")
async def doctor_records(request: Request, ctx: AuthContext = Depends(doctor_user)):
    async with consult_service.open_work(consult_service.party_of(ctx), write=False) as work:
        items = await consult_service.my_consultations(work, states=("ended",))
        found = await work.repo.current_many([("Patient", c["patient"].split("/", 1)[1]) for c in items])
        for c in items:
            s = found.get(("Patient", c["patient"].split("/", 1)[1]))
            c["patient_name"] = consult_service.display_name(s.resource) if s is not None else None
    return page(request, "hospital/doctor_records.html", nav="records", items=items)


# ------------------------------------------------------------------ administrator
@router.get("/hospital-admin")
async def admin_home(request: Request, ctx: AuthContext = Depends(admin_user),
                     notice: str = Query("", max_length=300), error: str = Query("", max_length=500)):
    try:
        async with unit_of_work(get_engine(), write=False) as conn:
            info = await catalogue.get_hospital(conn, ctx.tenant)
            doctors = await catalogue.list_doctors(conn, ctx.tenant, next_count=0, days=1)
        rules = await hospital_api.get_rules(hospital=None, ctx=ctx)
        schedules = {(s["role"], s["type"]): s for s in (await hospital_api.list_schedules(role=None, ctx=ctx))[
            "schedules"]}
    except YiyunError as err:
        return problem(request, err.status, err.message, area="admin")
    for doc in doctors:
        doc["offers"] = {t: schedules.get((doc["id"], t)) for t in CONSULTATION_TYPES}
    departments = (await hospital_api.admin_departments(ctx=ctx))["departments"]
    return page(request, "hospital/admin_home.html", nav="admin", area="admin", hospital=info, doctors=doctors, rules=rules,
                departments=departments, notice=notice, error=error, today=today_local().isoformat())


RULE_FIELDS = ("cancel_cutoff_minutes", "booking_window_days", "max_active_per_day", "max_active_per_department_day",
               "noshow_threshold", "noshow_window_days", "block_days", "noshow_grace_minutes")


@router.post("/hospital-admin/rules")
async def admin_rules(request: Request, ctx: AuthContext = Depends(admin_user)):
    try:
        form = await form_of(request)
        await hospital_api.put_rules(RulesRequest(**{k: int(form[k]) for k in RULE_FIELDS if form.get(k)}), ctx=ctx)
    except (YiyunError, ValidationError, ValueError) as err:
        return back("/hospital-admin", error=error_text(err))
    return back("/hospital-admin", notice="预约规则已保存 (booking rules saved)")


@router.post("/hospital-admin/services")
async def admin_services(request: Request, ctx: AuthContext = Depends(admin_user)):
    """Open or close a doctor's consultation type and set its fee."""
    try:
        form = await form_of(request)
        fee = round(float(form.get("fee_yuan") or 0) * 100)
        await hospital_api.create_schedule(ScheduleRequest(role=form.get("role", ""), type=form.get("type", ""),
                                                           fee_fen=fee, active=form.get("active") == "1"), ctx=ctx)
    except (YiyunError, ValidationError, ValueError) as err:
        return back("/hospital-admin", error=error_text(err))
    return back("/hospital-admin", notice="问诊服务已保存 (service saved)")


@router.get("/hospital-admin/daily")
async def admin_daily(request: Request, day: date | None = None, ctx: AuthContext = Depends(admin_user)):
    day = day or today_local()
    try:
        view = await hospital_api.daily(day=day, ctx=ctx)
    except YiyunError as err:
        return problem(request, err.status, err.message, area="admin")
    return page(request, "hospital/admin_daily.html", nav="daily", area="admin", view=view, day=day.isoformat(),
                prev=(day - timedelta(days=1)).isoformat(), next=(day + timedelta(days=1)).isoformat())


# ------------------------------------------------------------------ leave, waitlist, rebooking
def _leave_request(form: dict, role: str) -> LeaveRequest:
    return LeaveRequest(role=role, start=_local_dt(form.get("start_day", ""), form.get("start_time") or "00:00"),
                        end=_local_dt(form.get("end_day", ""), form.get("end_time") or "23:59"),
                        reason=form.get("reason", ""), confirm=form.get("confirm") == "1",
                        expected_bookings=int(form["expected"]) if str(form.get("expected", "")).isdigit() else None)


def _leave_notice(done: dict) -> str:
    n = len(done.get("cancelled") or [])
    if n:
        return f"已登记停诊，取消 {n} 个预约并已通知患者 (leave recorded; {n} bookings cancelled, patients told)"
    return "已登记停诊，相关号源已关闭 (leave recorded)"


async def _leave_needs_confirming(request: Request, body: LeaveRequest, form: dict, action: str, area: str,
                                  ctx: AuthContext) -> HTMLResponse | None:
    """The page that shows how many bookings a leave cancels, before it is recorded."""
    if body.confirm:
        return None
    found = await hospital_api.preview_exception(target=f"PractitionerRole/{body.role}", start=body.start,
                                                 end=body.end, ctx=ctx)
    if not found["bookings"]:
        return None
    appts = await _describe(found["appointments"])
    fields = {k: v for k, v in form.items() if k not in ("csrf_token", "confirm", "expected")}
    return page(request, "hospital/leave_confirm.html", nav="schedule" if area == "doctor" else "admin", area=area,
                count=found["bookings"], appointments=appts, fields=fields, action=action)


@router.post("/hospital-admin/leave")
async def admin_leave(request: Request, ctx: AuthContext = Depends(admin_user)):
    """An administrator records a doctor's leave (停诊) after seeing the bookings it cancels."""
    try:
        form = await form_of(request)
        body = _leave_request(form, form.get("role", ""))
        confirm = await _leave_needs_confirming(request, body, form, "/hospital-admin/leave", "admin", ctx)
        if confirm is not None:
            return confirm
        done = await hospital_api.add_leave(body, ctx=ctx)
    except (YiyunError, ValidationError, ValueError) as err:
        return back("/hospital-admin", error=error_text(err))
    return back("/hospital-admin", notice=_leave_notice(done))


@router.post("/hospital-admin/departments")
async def admin_department(request: Request, ctx: AuthContext = Depends(admin_user)):
    """Add a department, or open or close one (field `id`)."""
    try:
        form = await form_of(request)
        if form.get("id"):
            await hospital_api.update_department(form["id"], {"active": form.get("active") == "1"}, ctx=ctx)
        else:
            body = {k: form[k] for k in ("name", "phone", "comment") if form.get(k)}
            await hospital_api.create_department({"name": form.get("name", ""), **body}, ctx=ctx)
    except (YiyunError, ValidationError, ValueError) as err:
        return back("/hospital-admin", error=error_text(err))
    return back("/hospital-admin", notice="科室已保存 (department saved)")


@router.post("/hospital-admin/doctors")
async def admin_doctor(request: Request, ctx: AuthContext = Depends(admin_user)):
    """Add a doctor to a department."""
    try:
        form = await form_of(request)
        body = {k: form[k] for k in ("title", "gender", "introduction") if form.get(k)}
        await hospital_api.create_doctor({"name": form.get("name", ""), "department": form.get("department", ""),
                                          **body}, ctx=ctx)
    except (YiyunError, ValidationError, ValueError) as err:
        return back("/hospital-admin", error=error_text(err))
    return back("/hospital-admin", notice="医生已添加，请为其开通问诊服务 (doctor added: open their services)")


async def _full_days(hospital: str, schedule_ids: list[str]) -> dict[str, list[str]]:
    async with unit_of_work(get_engine(), write=False) as conn:
        return await waitlist.full_days(catalogue.directory_repo(conn, hospital), schedule_ids)


async def _my_waitlist(ctx: AuthContext, hospitals: list[str]) -> list[dict]:
    out = []
    for slug in hospitals:
        try:
            entries = (await hospital_api.my_waitlist(hospital=slug, ctx=ctx))["entries"]
        except YiyunError:
            continue
        if not entries:
            continue
        async with unit_of_work(get_engine(), write=False) as conn:
            d = await catalogue.load_directory(conn, slug)
        for e in entries:
            sched = d.schedules.get(e["schedule"]) or {}
            role = next((rid for a in sched.get("actor") or [] if (rid := ref_id(a, "PractitionerRole"))), None)
            if role in d.roles:
                summary = catalogue.doctor_summary(d, role)
                e.update(doctor_name=summary["name"], department_name=summary["department"], role=role)
            e["hospital_name"] = catalogue.hospital_summary(d)["name"]
            e["type"] = consultation_type_of(sched)
            out.append(e)
    return out


async def _my_notifications(ctx: AuthContext, hospitals: list[str]) -> list[dict]:
    out = []
    for slug in hospitals:
        try:
            items = (await hospital_api.my_notifications(hospital=slug, ctx=ctx))["notifications"]
        except YiyunError:
            continue
        out.extend({**n, "hospital": slug} for n in items)
    return sorted(out, key=lambda n: n["sent"] or "", reverse=True)[:10]


async def _rebook(ctx: AuthContext, appt: dict) -> dict | None:
    """Other slots for a booking the hospital cancelled (停诊), to rebook in one tap."""
    if not leave.cancelled_by_hospital(appt):
        return None
    try:
        return await hospital_api.rebook_options(appt["hospital"], appt["id"], ctx=ctx)
    except YiyunError:
        return None


@router.post("/patient/waitlist")
async def patient_join_waitlist(request: Request, ctx: AuthContext = Depends(patient_user)):
    form = await request.form()
    hospital, role = str(form.get("hospital") or ctx.tenant), str(form.get("role") or "")
    try:
        await form_of(request)
        await hospital_api.join_waitlist(WaitlistRequest(schedule=form.get("schedule", ""), day=form.get("day", ""),
                                                         hospital=hospital), ctx=ctx)
    except (YiyunError, ValidationError) as err:
        if role:
            return await patient_doctor(request, hospital, role, ctx=ctx, error=error_text(err))
        return problem(request, getattr(err, "status", 400), error_text(err))
    return back("/patient/appointments", notice="已加入候补，有号释放时将自动为您预约并通知您 (on the waitlist)")


@router.post("/patient/waitlist/{hospital}/{entry_id}/leave")
async def patient_leave_waitlist(request: Request, hospital: str, entry_id: int,
                                 ctx: AuthContext = Depends(patient_user)):
    try:
        await form_of(request)
        await hospital_api.leave_waitlist(hospital, entry_id, ctx=ctx)
    except YiyunError as err:
        return back("/patient/appointments", error=error_text(err))
    return back("/patient/appointments", notice="已取消候补 (left the waitlist)")


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""

    @app.exception_handler(_WrongRole)
    async def wrong_role(request: Request, exc: _WrongRole):
        return problem(request, 403, exc.message, area=exc.area)

    app.include_router(router)
    for link in ("/patient", "/doctor", "/hospital-admin"):
        app.state.portal_links.add(link)


