"""Online consultations (图文问诊, 视频问诊): the workflow over FHIR resources.

A consultation is an Encounter of class VR (virtual,
https://terminology.hl7.org/CodeSystem-v3-ActCode.html#v3-ActCode-VR) that goes
planned (waiting in the queue) → in-progress (a doctor accepted) → finished, or
cancelled while it waits. The patient's pre-consultation form is a QuestionnaireResponse
of the Encounter; every chat message, image, handover and call is a Communication of it,
so the whole online encounter is kept with the record (《互联网诊疗监管细则（试行）》
2022 第二十条: the process of an online consultation is retained, and NOTES.md: chat,
audio and video ≥ 3 years).

Who may do what is decided here, by the consultation (`Party` + `_authorise`): its
patient, and their guardian (`wards`: a parent for a child, an adult child for a parent
under their guardianship), both on the patient's side; the doctor it is assigned to; any
doctor of its department while it waits for "first available". Anyone else gets 404,
exactly as for a consultation that does not exist, so ids leak nothing.

Every function takes a `Work` (one unit of work: connection, repository, caller) and
queues the real-time frames it causes in `work.outbox`; `open_work` publishes them only
after the commit, so a frame never announces something that was rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from yiyun.core.db import get_engine, is_sqlite, unit_of_work
from yiyun.core.errors import BadRequest, Conflict, Forbidden, NotFound
from yiyun.core.realtime import get_broker
from yiyun.fhir.model import RequestContext, instant_from_us, now_us
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital.consultation_models import consult_call, consult_message, consult_session
from yiyun.hospital.consultations import admission, bookings, wards

BASE = "https://yiyun.example.cn/fhir"
CS = f"{BASE}/CodeSystem"
MODE_SYSTEM = f"{CS}/consultation-mode"
MESSAGE_SYSTEM = f"{CS}/consultation-message"
ENCOUNTER_TYPE_SYSTEM = f"{CS}/encounter-type"  # the same system the demo's encounters use
SEQ_SYSTEM = f"{BASE}/sid/consultation-message"
FORM_URL = f"{BASE}/Questionnaire/pre-consultation"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

MODES = {"text": "图文问诊", "video": "视频问诊"}
OPEN_STATES = ("waiting", "active")
MAX_TEXT = 4000
REPLAY_LIMIT = 500

FORM_FIELDS = (  # linkId, question
    ("chief-complaint", "主诉"),
    ("duration", "持续时间"),
    ("history", "既往史"),
    ("allergies", "过敏史"),
    ("medications", "目前用药"),
)
GUARDIAN_ITEM = ("guardian-accompanies", "监护人确认全程陪同患儿问诊")  # admission: children under 6


# ------------------------------------------------------------------ who
@dataclass(frozen=True)
class Party:
    """The caller as a party of consultations: a patient or a doctor of `tenant`."""

    tenant: str
    subject: str
    role: str  # patient | doctor
    id: str  # Patient or Practitioner id
    account: str | None = None  # the signed-in account behind a web session, when known

    @property
    def ref(self) -> str:
        return f"{'Patient' if self.role == 'patient' else 'Practitioner'}/{self.id}"


def party_of(ctx: Any) -> Party:
    """From an `AuthContext`: doctors by role and fhirUser, patients by launch context or fhirUser."""
    fhir_user = getattr(ctx, "fhir_user", None) or ""
    if "doctor" in getattr(ctx, "roles", ()) and fhir_user.startswith("Practitioner/"):
        return Party(ctx.tenant, ctx.subject, "doctor", fhir_user.split("/", 1)[1])
    patient = getattr(ctx, "patient", None) or (fhir_user.split("/", 1)[1] if fhir_user.startswith("Patient/") else None)
    if patient:
        return Party(ctx.tenant, ctx.subject, "patient", patient, getattr(ctx, "account_id", None))
    raise Forbidden("在线问诊仅限患者本人和医生使用 (online consultations are for patients and doctors)")


def channel(tenant: str, cid: str) -> str:
    return f"consultation:{tenant}:{cid}"


def queue_channel(tenant: str) -> str:
    return f"consultation-queue:{tenant}"


# ------------------------------------------------------------ unit of work
@dataclass
class Work:
    conn: AsyncConnection
    repo: FhirRepository
    party: Party
    outbox: list[tuple[str, dict]] = field(default_factory=list)
    _departments: set[str] | None = None
    _wards: frozenset[str] | None = None  # a patient's wards by Patient.link (`wards.listed_wards`)
    _acts_for: dict[str, bool] = field(default_factory=dict)  # patient id → may consult for them

    def publish(self, cid: str, frame: dict) -> None:
        self.outbox.append((channel(self.party.tenant, cid), frame))

    @property
    def sqlite(self) -> bool:
        return is_sqlite(self.conn.engine)


def workflow_repo(conn: AsyncConnection, party: Party) -> FhirRepository:
    # The consultation workflow decides access itself (`_authorise`) and then acts as the
    # tenant's system on the caller's behalf: a patient's token has no scope to write a
    # doctor's Communication. Writes are audited under the caller's subject.
    return FhirRepository(conn, RequestContext(tenant=party.tenant, subject=party.subject))


# SQLite has one writer at a time. Writers that find the database locked sleep in its busy
# handler (backing off up to 100 ms a try), which makes chat latency spiky under load;
# consultation writes of this process queue here instead, first come first served.
_sqlite_writers: dict[tuple[str, int], asyncio.Lock] = {}


def _writer_lock(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager:
    if not is_sqlite(engine):
        return contextlib.nullcontext()
    key = (str(engine.url), id(asyncio.get_running_loop()))
    lock = _sqlite_writers.get(key)
    if lock is None:
        lock = _sqlite_writers[key] = asyncio.Lock()
    return lock


@contextlib.asynccontextmanager
async def open_work(party: Party, *, write: bool = True, engine: AsyncEngine | None = None) -> AsyncIterator[Work]:
    """One unit of work for `party`; its frames are published after the commit."""
    engine = engine or get_engine()
    async with _writer_lock(engine) if write else contextlib.nullcontext():
        async with unit_of_work(engine, write=write) as conn:
            work = Work(conn, workflow_repo(conn, party), party)
            yield work
            flush = getattr(work.repo.policy, "flush", None)
            if flush is not None:
                await flush()
    if work.outbox:
        broker = get_broker()
        for ch, frame in work.outbox:
            await broker.publish(ch, frame)


# ------------------------------------------------------------ helpers
def ref(reference: str, display: str | None = None) -> dict:
    out = {"reference": reference}
    if display:
        out["display"] = display
    return out


def coding(system: str, code: str, display: str | None = None) -> dict:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def normalise_ref(value: str | None, types: tuple[str, ...], what: str) -> str | None:
    """`Practitioner/x` or a bare id → `Type/id`, refusing other types."""
    if value is None or value == "":
        return None
    if "/" not in value:
        value = f"{types[0]}/{value}"
    res_type, _, res_id = value.partition("/")
    if res_type not in types or not res_id or "/" in res_id:
        raise BadRequest(f"{what}引用不合法: {value!r} (expected {' or '.join(types)}/<id>)")
    return value


def display_name(resource: dict | None) -> str | None:
    if not resource:
        return None
    for name in resource.get("name") or []:
        if isinstance(name, dict):
            text = name.get("text") or "".join([name.get("family", "")] + list(name.get("given") or []))
            if text:
                return text
        elif isinstance(name, str):
            return name
    return None


async def fetch_many(repo: FhirRepository, keys) -> dict:
    """Current versions by (type, id), without locking them (`current_many` locks rows for
    writes on PostgreSQL, which a read must not do): one `_id` search per type."""
    by_type: dict[str, list[str]] = {}
    for res_type, res_id in dict.fromkeys(keys):
        if res_id:
            by_type.setdefault(res_type, []).append(res_id)
    found: dict = {}
    for res_type, ids in by_type.items():
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            result = await repo.search(res_type, [("_id", ",".join(chunk)), ("_count", str(len(chunk)))])
            for stored in result.matches:
                found[(res_type, stored.res_id)] = stored
    return found


async def _must_exist(repo: FhirRepository, reference: str, what: str) -> dict:
    res_type, _, res_id = reference.partition("/")
    stored = (await fetch_many(repo, [(res_type, res_id)])).get((res_type, res_id))
    if stored is None or stored.deleted:
        raise NotFound(f"{what}不存在: {reference} ({what} not found)")
    return stored.resource


async def doctor_departments(work: Work, practitioner_id: str | None = None) -> set[str]:
    """References a doctor works in: the organisations and healthcare services of their
    active PractitionerRoles, and the department Organization each service belongs to."""
    own = practitioner_id is None
    if own and work._departments is not None:
        return work._departments
    pid = practitioner_id or work.party.id
    roles = await work.repo.search("PractitionerRole", [("practitioner", f"Practitioner/{pid}"), ("_count", "100")])
    refs: set[str] = set()
    services: list[tuple[str, str]] = []
    for stored in roles.matches:
        role = stored.resource
        if role.get("active") is False:
            continue
        org = (role.get("organization") or {}).get("reference")
        if org:
            refs.add(org)
        for hs in role.get("healthcareService") or []:
            if hs.get("reference", "").startswith("HealthcareService/"):
                refs.add(hs["reference"])
                services.append(("HealthcareService", hs["reference"].split("/", 1)[1]))
    for stored in (await fetch_many(work.repo, services)).values():
        for ext in stored.resource.get("extension") or []:
            target = (ext.get("valueReference") or {}).get("reference")
            if ext.get("url", "").endswith("/department") and target:
                refs.add(target)
    if own:
        work._departments = refs
    return refs


# --------------------------------------------------------------- loading
async def _row(work: Work, cid: str, *, lock: bool = False):
    stmt = select(consult_session).where(consult_session.c.tenant == work.party.tenant, consult_session.c.id == cid)
    if lock and not work.sqlite:
        stmt = stmt.with_for_update()
    return (await work.conn.execute(stmt)).first()


def _not_found(cid: str) -> NotFound:
    return NotFound(f"未找到问诊 {cid} (consultation not found)")


async def _authorise(work: Work, row, cid: str) -> str:
    """How the caller relates to the consultation: "patient" (the patient or, today, their
    guardian), "doctor" (assigned) or "candidate" (a doctor of the department while it
    waits); 404 for anyone else."""
    party = work.party
    if row is None:
        raise _not_found(cid)
    if party.role == "patient":
        if await wards.may_consult_for(work, row.patient_id):
            return "patient"
        raise _not_found(cid)
    if row.doctor_id == party.id:
        return "doctor"
    if row.state == "waiting" and row.doctor_id is None and row.department:
        if row.department in await doctor_departments(work):
            return "candidate"
    raise _not_found(cid)


async def load(work: Work, cid: str, *, lock: bool = False):
    """The consultation's row and the caller's relation to it (or 404)."""
    row = await _row(work, cid, lock=lock)
    relation = await _authorise(work, row, cid)
    return row, relation


def _require_doctor(relation: str, action: str) -> None:
    if relation != "doctor":
        raise Forbidden(f"只有接诊医生可以{action} (only the doctor of the consultation may do this)")


def _require_open(row, action: str = "发送消息") -> None:
    if row.state not in OPEN_STATES:
        raise Conflict(f"问诊已结束，不能再{action} (the consultation is closed)")


# ------------------------------------------------------------ start
async def start_consultation(
    work: Work,
    *,
    mode: str,
    doctor: str | None = None,
    department: str | None = None,
    appointment: str | None = None,
    form: dict | None = None,
    patient: str | None = None,
) -> dict:
    """A patient asks for a consultation with a doctor, a department ("first available"),
    or for a booked Appointment, for themselves or for their ward (`patient`; a ward's
    booking names the ward). Returns the consultation's summary. The account acting must
    be verified by real name, and a child under six accompanied by the guardian (`admission`)."""
    party, repo = work.party, work.repo
    if party.role != "patient":
        raise Forbidden("只有患者可以发起问诊 (only patients start consultations)")
    if mode not in MODES:
        raise BadRequest(f"问诊方式应为 text 或 video: {mode!r} (mode must be text or video)")
    doctor = normalise_ref(doctor, ("Practitioner",), "医生")
    department = normalise_ref(department, ("Organization", "HealthcareService"), "科室")
    appointment = normalise_ref(appointment, ("Appointment",), "预约")
    subject_ref = normalise_ref(patient, ("Patient",), "就诊人")
    await admission.require_real_name(work.conn, party.tenant, party.id, account=party.account)
    appt = await _own_appointment(work, appointment, subject_ref) if appointment else None
    subject_ref = subject_ref or (_appointment_patient(appt) if appt else None) or party.ref
    subject_id = subject_ref.split("/", 1)[1]
    await wards.require_guardian_of(work, subject_id)
    subject = await _must_exist(repo, subject_ref, "就诊人")
    form = dict(form or {})
    form["guardian_accompanies"] = admission.require_guardian(subject, bool(form.get("guardian_accompanies")))
    if appt is not None:
        existing = await _consultation_of_appointment(work, appointment.split("/", 1)[1])
        if existing is not None:  # a second tap on "start": the booking's consultation, not another
            return {**summary(existing), "existing": True}
        doctor, department = await _from_appointment(repo, appt, doctor, department)
    if not doctor and not department:
        raise BadRequest("请选择医生或科室 (choose a doctor or a department)")
    doctor_res = await _must_exist(repo, doctor, "医生") if doctor else None
    if department:
        await _must_exist(repo, department, "科室")
    if doctor and department and department not in await doctor_departments(work, doctor.split("/", 1)[1]):
        raise BadRequest("所选医生不在该科室 (the doctor does not work in that department)")
    ts = now_us()
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "planned",
        "class": coding(ACT_CODE, "VR", "virtual"),
        "type": [{"coding": [coding(MODE_SYSTEM, mode, MODES[mode])], "text": MODES[mode]}],
        "subject": ref(subject_ref, display_name(subject)),
        "period": {"start": instant_from_us(ts)},
    }
    if doctor:
        encounter["participant"] = [_attender(doctor, display_name(doctor_res))]
    if department and department.startswith("Organization/"):
        encounter["serviceProvider"] = ref(department)
    if appointment:
        encounter["appointment"] = [ref(appointment)]
    complaint = (form.get("chief_complaint") or "").strip()
    if complaint:
        encounter["reasonCode"] = [{"text": complaint[:500]}]
    enc = (await repo.create(encounter)).stored
    cid = enc.res_id
    form_id = None
    started_by = party.id if subject_id != party.id else None
    if started_by or form["guardian_accompanies"] or any((form.get(k.replace("-", "_")) or "").strip()
                                                        for k, _ in FORM_FIELDS):
        form_id = (await repo.create(_form_resource(cid, party, subject_ref, form, ts))).stored.res_id
    await work.conn.execute(insert(consult_session).values(
        tenant=party.tenant, id=cid, patient_id=subject_id, started_by=started_by,
        doctor_id=doctor.split("/", 1)[1] if doctor else None,
        department=department, mode=mode, state="waiting", appointment_id=appointment.split("/", 1)[1]
        if appointment else None, form_id=form_id, record_id=None, created_us=ts, accepted_us=None, ended_us=None,
        last_seq=0, patient_read_seq=0, doctor_read_seq=0,
    ))
    work.outbox.append((queue_channel(party.tenant), {"type": "queue", "consultation": cid, "state": "waiting"}))
    row = await _row(work, cid)
    return summary(row)


async def _consultation_of_appointment(work: Work, appointment_id: str):
    if not work.sqlite:  # two starts at once for one booking: the second waits and finds the first
        key = f"consultation|{work.party.tenant}|{appointment_id}"
        await work.conn.execute(sql_text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode()) - 2**31})
    c = consult_session.c
    return (await work.conn.execute(select(consult_session).where(
        c.tenant == work.party.tenant, c.appointment_id == appointment_id, c.state != "cancelled"))).first()


async def _own_appointment(work: Work, appointment: str, subject_ref: str | None) -> dict:
    """The booking, when it is the caller's own or their ward's (and the consultation's
    patient's, when one is named)."""
    appt = await _must_exist(work.repo, appointment, "预约")
    booked_for = _appointment_patient(appt)
    if booked_for is None or (subject_ref and booked_for != subject_ref) \
            or not await wards.may_consult_for(work, booked_for.split("/", 1)[1]):
        # another patient's booking is not found, as if it did not exist
        raise NotFound(f"预约不存在: {appointment} (appointment not found)")
    return appt


def _appointment_patient(appt: dict) -> str | None:
    return next((a for a in ((p.get("actor") or {}).get("reference", "") for p in appt.get("participant") or [])
                 if a.startswith("Patient/")), None)


async def _from_appointment(repo, appt: dict, doctor, department):
    actors = [(p.get("actor") or {}).get("reference", "") for p in appt.get("participant") or []]
    if appt.get("status") not in ("booked", "arrived", "checked-in", "pending"):
        raise Conflict(f"预约状态为 {appt.get('status')}，不能用于问诊 (the appointment is not booked)")
    if not doctor:
        doctor = next((a for a in actors if a.startswith("Practitioner/")), None)
    role_ref = next((a for a in actors if a.startswith("PractitionerRole/")), None)
    if not doctor and role_ref:  # bookings name the doctor's PractitionerRole (yiyun.hospital.booking)
        role = await _must_exist(repo, role_ref, "医生")
        doctor = (role.get("practitioner") or {}).get("reference")
    department = department or next((a for a in actors if a.startswith("HealthcareService/")), None)
    return doctor, department


def _attender(doctor_ref: str, name: str | None, start_us: int | None = None) -> dict:
    out: dict[str, Any] = {
        "type": [{"coding": [coding(PARTICIPATION, "ATND", "attender")], "text": "接诊医师"}],
        "individual": ref(doctor_ref, name),
    }
    if start_us:
        out["period"] = {"start": instant_from_us(start_us)}
    return out


def _form_resource(cid: str, party: Party, subject_ref: str, form: dict, ts: int) -> dict:
    """The form is about the patient and written by whoever started the consultation: the
    patient, or their guardian (author and source)."""
    items = []
    for link_id, question in FORM_FIELDS:
        value = (form.get(link_id.replace("-", "_")) or "").strip()
        if value:
            items.append({"linkId": link_id, "text": question, "answer": [{"valueString": value[:2000]}]})
    if form.get("guardian_accompanies"):
        items.append({"linkId": GUARDIAN_ITEM[0], "text": GUARDIAN_ITEM[1], "answer": [{"valueBoolean": True}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": FORM_URL,
        "status": "completed",
        "subject": ref(subject_ref),
        "encounter": ref(f"Encounter/{cid}"),
        "authored": instant_from_us(ts),
        "author": ref(party.ref),
        "source": ref(party.ref),
        "item": items,
    }


def form_answers(resource: dict | None) -> dict:
    """The form as a flat dict: chief_complaint, duration, history, allergies, medications,
    photos, guardian_accompanies."""
    out: dict[str, Any] = {k.replace("-", "_"): None for k, _ in FORM_FIELDS}
    out["photos"] = []
    out["guardian_accompanies"] = False
    for item in (resource or {}).get("item") or []:
        answers = item.get("answer") or []
        if item.get("linkId") == "photos":
            out["photos"] = [a["valueAttachment"] for a in answers if "valueAttachment" in a]
        elif item.get("linkId") == GUARDIAN_ITEM[0]:
            out["guardian_accompanies"] = any(a.get("valueBoolean") is True for a in answers)
        elif answers:
            out[item["linkId"].replace("-", "_")] = answers[0].get("valueString")
    return out


# ------------------------------------------------------------ views
def summary(row) -> dict:
    now = now_us()
    waited_until = row.accepted_us or row.ended_us or now
    return {
        "id": row.id,
        "encounter": f"Encounter/{row.id}",
        "mode": row.mode,
        "state": row.state,
        "patient": f"Patient/{row.patient_id}",
        "started_by": f"Patient/{row.started_by}" if row.started_by else None,
        "doctor": f"Practitioner/{row.doctor_id}" if row.doctor_id else None,
        "department": row.department,
        "appointment": f"Appointment/{row.appointment_id}" if row.appointment_id else None,
        "created": instant_from_us(row.created_us),
        "accepted": instant_from_us(row.accepted_us) if row.accepted_us else None,
        "ended": instant_from_us(row.ended_us) if row.ended_us else None,
        "waiting_seconds": max(0, (waited_until - row.created_us) // 1_000_000),
        "last_seq": row.last_seq,
        "patient_read_seq": row.patient_read_seq,
        "doctor_read_seq": row.doctor_read_seq,
        "record": f"ClinicalImpression/{row.record_id}" if row.record_id else None,
    }


async def consultation_detail(work: Work, cid: str) -> dict:
    """What both sides see first: the state, the parties and the pre-consultation form."""
    row, relation = await load(work, cid)
    keys = [("Patient", row.patient_id)]
    if row.started_by:
        keys.append(("Patient", row.started_by))
    if row.doctor_id:
        keys.append(("Practitioner", row.doctor_id))
    if row.form_id:
        keys.append(("QuestionnaireResponse", row.form_id))
    found = await fetch_many(work.repo, keys)
    out = summary(row)
    out["relation"] = relation
    patient = _res(found, "Patient", row.patient_id)
    out["patient_name"] = display_name(patient)
    out["patient_birth_date"] = (patient or {}).get("birthDate")
    out["started_by_name"] = display_name(_res(found, "Patient", row.started_by)) if row.started_by else None
    # the caller sees it as their ward's (a guardian), not their own
    out["for_ward"] = relation == "patient" and row.patient_id != work.party.id
    out["doctor_name"] = display_name(_res(found, "Practitioner", row.doctor_id)) if row.doctor_id else None
    out["form"] = form_answers(_res(found, "QuestionnaireResponse", row.form_id)) if row.form_id else form_answers(None)
    out.update(child_flags(patient, out["form"]))
    out["cancel_reason"] = await _cancel_reason(work, row) if row.state == "cancelled" else None
    calls = await work.conn.execute(
        select(consult_call).where(consult_call.c.tenant == row.tenant, consult_call.c.consultation_id == cid)
        .order_by(consult_call.c.started_us)
    )
    out["calls"] = [call_view(c) for c in calls]
    return out


async def _cancel_reason(work: Work, row) -> str | None:
    """Why a consultation was cancelled: the system note written when it was (the patient
    withdrew it, or its booking was cancelled or marked no-show)."""
    m = consult_message.c
    last = (await work.conn.execute(select(consult_message).where(
        m.tenant == row.tenant, m.consultation_id == row.id, m.sender_role == "system", m.kind == "note")
        .order_by(m.seq.desc()).limit(1))).first()
    if last is None:
        return None
    stored = (await fetch_many(work.repo, [("Communication", last.communication_id)])).get(
        ("Communication", last.communication_id))
    payload = (stored.resource.get("payload") or [{}])[0] if stored is not None and not stored.deleted else {}
    return payload.get("contentString")


def child_flags(patient: dict | None, form: dict) -> dict:
    """What the doctor must see of the under-6 rule (`admission`): the flag and the
    guardian's confirmation from the form."""
    child = admission.is_young_child(patient)
    return {"child_under_6": child, "guardian_accompanies": bool(form.get("guardian_accompanies")),
            "child_flag": admission.CHILD_FLAG if child else None}


def _res(found: dict, res_type: str, res_id: str | None) -> dict | None:
    stored = found.get((res_type, res_id)) if res_id else None
    return stored.resource if stored is not None and not stored.deleted else None


def call_view(c) -> dict:
    seconds = None
    if c.connected_us and c.ended_us:
        seconds = max(0, (c.ended_us - c.connected_us) // 1_000_000)
    state = "ended" if c.ended_us else "connected" if c.connected_us else "ringing"
    return {
        "id": c.id, "state": state, "started_by": c.started_by, "started": instant_from_us(c.started_us),
        "connected": instant_from_us(c.connected_us) if c.connected_us else None,
        "ended": instant_from_us(c.ended_us) if c.ended_us else None, "duration_seconds": seconds,
        "ended_by": c.ended_by,
    }


async def my_consultations(work: Work, *, states: tuple[str, ...] = ()) -> list[dict]:
    """The caller's consultations, newest first: a patient's own and their wards' (those of
    the wards /patient/me lists and those the caller started for a ward, while the
    guardianship lasts); a doctor's assigned ones."""
    c = consult_session.c
    if work.party.role == "patient":
        listed = await wards.listed_wards(work)
        whose = or_(c.patient_id.in_([work.party.id, *sorted(listed)]), c.started_by == work.party.id)
    else:
        whose = c.doctor_id == work.party.id
    stmt = select(consult_session).where(c.tenant == work.party.tenant, whose)
    if states:
        stmt = stmt.where(c.state.in_(states))
    rows = await work.conn.execute(stmt.order_by(c.created_us.desc()).limit(200))
    return [summary(r) for r in rows if work.party.role != "patient" or await wards.may_consult_for(work, r.patient_id)]


async def doctor_queue(work: Work) -> dict:
    """The doctor's queue: consultations waiting for them or for any doctor of their
    departments, oldest first, with waiting time; and their own in-progress ones."""
    if work.party.role != "doctor":
        raise Forbidden("只有医生可以查看候诊队列 (the queue is for doctors)")
    departments = sorted(await doctor_departments(work))
    me = work.party.id
    c = consult_session.c
    mine_waiting = and_(c.doctor_id == me)
    pool = and_(c.doctor_id.is_(None), c.department.in_(departments)) if departments else None
    stmt = select(consult_session).where(
        c.tenant == work.party.tenant, c.state == "waiting", or_(mine_waiting, pool) if pool is not None else mine_waiting,
    ).order_by(c.created_us).limit(500)
    waiting = list(await work.conn.execute(stmt))
    active = list(await work.conn.execute(
        select(consult_session).where(c.tenant == work.party.tenant, c.doctor_id == me, c.state == "active")
        .order_by(c.accepted_us)
    ))
    keys = [("Patient", r.patient_id) for r in waiting + active]
    keys += [("QuestionnaireResponse", r.form_id) for r in waiting + active if r.form_id]
    found = await fetch_many(work.repo, keys)

    def item(r) -> dict:
        out = summary(r)
        patient = _res(found, "Patient", r.patient_id)
        form = form_answers(_res(found, "QuestionnaireResponse", r.form_id) if r.form_id else None)
        out["patient_name"] = display_name(patient)
        out["chief_complaint"] = form["chief_complaint"]
        out.update(child_flags(patient, form))
        out["unread"] = max(0, r.last_seq - r.doctor_read_seq)
        return out

    return {"waiting": [item(r) for r in waiting], "active": [item(r) for r in active], "departments": departments}


# ------------------------------------------------------------ transitions
async def accept(work: Work, cid: str) -> dict:
    """A doctor takes a waiting consultation. Atomic: of two doctors accepting at once,
    exactly one wins and the other gets 409."""
    if work.party.role != "doctor":
        raise Forbidden("只有医生可以接诊 (only doctors accept consultations)")
    row = await _row(work, cid)
    if row is None:
        raise _not_found(cid)
    if row.state == "waiting" or row.doctor_id == work.party.id:
        await _authorise(work, row, cid)
    elif not (row.department and row.department in await doctor_departments(work)):
        raise _not_found(cid)  # never theirs to see
    # a department colleague who lost the race (or came late) learns it was taken: 409 below
    # The booking first: a booking's change locks the Appointment, then this row (its write
    # hook, `bookings.booking_changed`); the same order here cannot deadlock with it. A lost
    # race below rolls the booking back with everything else.
    await bookings.booking_arrived(work, row)
    ts = now_us()
    c = consult_session.c
    result = await work.conn.execute(
        update(consult_session)
        .where(c.tenant == work.party.tenant, c.id == cid, c.state == "waiting",
               or_(c.doctor_id.is_(None), c.doctor_id == work.party.id))
        .values(state="active", doctor_id=work.party.id, accepted_us=ts)
    )
    if result.rowcount != 1:
        raise Conflict("该问诊已由其他医生接诊或已结束 (the consultation was already accepted or closed)")
    doctor = await _must_exist(work.repo, work.party.ref, "医生")
    enc = (await work.repo.read("Encounter", cid)).resource
    enc = _with_status(enc, "in-progress", ts)
    enc["participant"] = [p for p in enc.get("participant") or []
                          if (p.get("individual") or {}).get("reference") != work.party.ref]
    enc["participant"].append(_attender(work.party.ref, display_name(doctor), ts))
    await work.repo.update("Encounter", cid, enc)
    await _system_message(work, cid, f"{display_name(doctor) or '医生'}已接诊", kind="note")
    row = await _row(work, cid)
    _publish_state(work, row)
    work.outbox.append((queue_channel(work.party.tenant), {"type": "queue", "consultation": cid, "state": "active"}))
    return summary(row)


def _with_status(enc: dict, status: str, ts: int) -> dict:
    """Encounter in a new status, the old one kept in statusHistory
    (https://hl7.org/fhir/R4/encounter-definitions.html#Encounter.statusHistory)."""
    enc = dict(enc)
    enc.pop("meta", None)
    history = list(enc.get("statusHistory") or [])
    start = (enc.get("period") or {}).get("start")
    if enc.get("status"):
        history.append({"status": enc["status"], "period": {"start": _last_change(history) or start,
                                                            "end": instant_from_us(ts)}})
    enc["statusHistory"] = history
    enc["status"] = status
    return enc


def _last_change(history: list) -> str | None:
    return history[-1]["period"].get("end") if history else None


def _publish_state(work: Work, row, **extra) -> None:
    frame = {"type": "state", "consultation": row.id, "state": row.state,
             "doctor": f"Practitioner/{row.doctor_id}" if row.doctor_id else None, **extra}
    work.publish(row.id, frame)


async def finish(work: Work, cid: str, *, reason: str | None = None) -> dict:
    """The doctor ends the consultation (the visit record can still be written after)."""
    row, relation = await load(work, cid, lock=True)
    _require_doctor(relation, "结束问诊")
    if row.state != "active":
        raise Conflict("问诊未在进行中，不能结束 (only an in-progress consultation can be ended)")
    await _close(work, row, "ended", "finished", reason or "医生已结束问诊")
    await bookings.booking_fulfilled(work, row)
    return summary(await _row(work, cid))


async def cancel(work: Work, cid: str) -> dict:
    """The patient withdraws a consultation that no doctor has accepted yet."""
    row, relation = await load(work, cid, lock=True)
    if relation != "patient":
        raise Forbidden("只有患者本人可以取消问诊 (only the patient may cancel)")
    if row.state != "waiting":
        raise Conflict("问诊已被接诊或已结束，不能取消 (only a waiting consultation can be cancelled)")
    await _close(work, row, "cancelled", "cancelled", "患者已取消问诊")
    return summary(await _row(work, row.id))


async def _close(work: Work, row, state: str, status: str, note: str) -> None:
    ts = now_us()
    c = consult_session.c
    result = await work.conn.execute(
        update(consult_session).where(c.tenant == row.tenant, c.id == row.id, c.state == row.state)
        .values(state=state, ended_us=ts)
    )
    if result.rowcount != 1:
        raise Conflict("问诊状态已变化，请刷新 (the consultation changed meanwhile)")
    await _system_message(work, row.id, note, kind="note", allow_closed=True)
    enc = _with_status((await work.repo.read("Encounter", row.id)).resource, status, ts)
    enc.setdefault("period", {})["end"] = instant_from_us(ts)
    await work.repo.update("Encounter", row.id, enc)
    _publish_state(work, await _row(work, row.id))
    work.outbox.append((queue_channel(row.tenant), {"type": "queue", "consultation": row.id, "state": state}))


async def hand_over(work: Work, cid: str, *, to_doctor: str, note: str) -> dict:
    """The doctor hands the consultation to a colleague of the same department, with a note
    for the colleague (kept as a Communication of the encounter, not shown in the chat)."""
    row, relation = await load(work, cid, lock=True)
    _require_doctor(relation, "转交问诊")
    _require_open(row, "转交")
    target = normalise_ref(to_doctor, ("Practitioner",), "医生")
    if target == work.party.ref:
        raise BadRequest("不能转交给自己 (cannot hand over to yourself)")
    colleague = await _must_exist(work.repo, target, "医生")
    theirs = await doctor_departments(work, target.split("/", 1)[1])
    shared = {row.department} if row.department else await doctor_departments(work)
    if not theirs.intersection(shared):
        raise BadRequest("只能转交给同科室的医生 (hand over to a doctor of the same department)")
    ts = now_us()
    c = consult_session.c
    await work.conn.execute(update(consult_session).where(c.tenant == row.tenant, c.id == cid)
                            .values(doctor_id=target.split("/", 1)[1], doctor_read_seq=0))
    enc = (await work.repo.read("Encounter", cid)).resource
    enc = {k: v for k, v in enc.items() if k != "meta"}
    for p in enc.get("participant") or []:
        if (p.get("individual") or {}).get("reference") == work.party.ref:
            p.setdefault("period", {})["end"] = instant_from_us(ts)
    enc.setdefault("participant", []).append(_attender(target, display_name(colleague), ts))
    await work.repo.update("Encounter", cid, enc)
    await work.repo.create({
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [coding(MESSAGE_SYSTEM, "handover", "转交")], "text": "问诊转交"}],
        "subject": ref(f"Patient/{row.patient_id}"),
        "encounter": ref(f"Encounter/{cid}"),
        "sent": instant_from_us(ts),
        "sender": ref(work.party.ref),
        "recipient": [ref(target)],
        "payload": [{"contentString": (note or "").strip()[:2000] or "（无交接说明）"}],
    })
    await _system_message(work, cid, f"问诊已转交给{display_name(colleague) or '其他医生'}", kind="note")
    _publish_state(work, await _row(work, cid))
    return summary(await _row(work, cid))


async def handover_notes(work: Work, cid: str) -> list[dict]:
    row, relation = await load(work, cid)
    if relation == "patient":
        return []
    result = await work.repo.search("Communication", [("encounter", f"Encounter/{cid}"), ("_count", "100")])
    notes = []
    for s in result.matches:
        r = s.resource
        if any(cd.get("code") == "handover" for cat in r.get("category") or [] for cd in cat.get("coding") or []):
            notes.append({"from": r["sender"]["reference"], "to": r["recipient"][0]["reference"],
                          "note": r["payload"][0]["contentString"], "sent": r["sent"]})
    return sorted(notes, key=lambda n: n["sent"])


async def refer(work: Work, cid: str, *, to: str, reason: str, note: str | None = None) -> dict:
    """A referral (ServiceRequest, category 3457005 "Patient referral",
    https://hl7.org/fhir/R4/valueset-servicerequest-category.html) to another department or
    institution. Allowed at a first visit too: advice and referral are what a first online
    visit may give (《互联网诊疗管理办法（试行）》 第十六条)."""
    row, relation = await load(work, cid, lock=True)
    _require_doctor(relation, "开具转诊")
    target = normalise_ref(to, ("Organization", "HealthcareService"), "转诊机构")
    await _must_exist(work.repo, target, "转诊机构")
    if not (reason or "").strip():
        raise BadRequest("请填写转诊原因 (a referral needs a reason)")
    ts = now_us()
    request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [{"coding": [coding("http://snomed.info/sct", "3457005", "Patient referral")], "text": "转诊"}],
        "code": {"text": "转诊"},
        "subject": ref(f"Patient/{row.patient_id}"),
        "encounter": ref(f"Encounter/{cid}"),
        "authoredOn": instant_from_us(ts),
        "requester": ref(work.party.ref),
        "performer": [ref(target)],
        "reasonCode": [{"text": reason.strip()[:1000]}],
    }
    if note and note.strip():
        request["note"] = [{"text": note.strip()[:2000]}]
    stored = (await work.repo.create(request)).stored
    if row.state in OPEN_STATES:
        await _system_message(work, cid, f"医生已为您开具转诊：{reason.strip()[:200]}", kind="note")
    return {"id": stored.res_id, "reference": stored.reference, "resource": stored.resource}


# ------------------------------------------------------------ messages
def message_frame(row_seq: int, kind: str, sender_role: str, client_id: str | None, comm: dict,
                  sent_us: int | None = None) -> dict:
    """The frame both the WebSocket and the REST API speak for one message."""
    frame: dict[str, Any] = {
        "type": "message",
        "consultation": comm["encounter"]["reference"].split("/", 1)[1],
        "seq": row_seq,
        "id": comm.get("id"),
        "kind": kind,
        "from": sender_role,
        "sender": (comm.get("sender") or {}).get("reference"),
        "sent": comm.get("sent"),
        "client_id": client_id,
    }
    payload = (comm.get("payload") or [{}])[0]
    if "contentString" in payload:
        frame["text"] = payload["contentString"]
    if "contentAttachment" in payload:
        att = payload["contentAttachment"]
        frame["image"] = {"url": att.get("url"), "content_type": att.get("contentType"), "size": att.get("size"),
                          "title": att.get("title")}
    return frame


async def post_message(
    work: Work, cid: str, *, text: str | None = None, attachment: dict | None = None,
    client_id: str | None = None, kind: str | None = None,
) -> tuple[dict, bool]:
    """Persist one message as a Communication, then (after the commit) fan it out.
    Returns (frame, created); a retry with the same `client_id` returns the first copy."""
    check_client_id(client_id)
    if attachment is None:
        text = check_text(text)
    row, relation = await load(work, cid, lock=True)
    if relation == "candidate":
        raise Forbidden("请先接诊再回复 (accept the consultation before replying)")
    if client_id:
        existing = await _message_by_client_id(work, cid, client_id)
        if existing is not None:
            return existing, False
    _require_open(row)
    frame = await _append(work, row, relation, kind or ("image" if attachment else "text"), text=text,
                          attachment=attachment, client_id=client_id)
    return frame, True


def check_text(text: Any) -> str:
    text = text.strip() if isinstance(text, str) else ""
    if not text:
        raise BadRequest("消息内容不能为空 (empty message)")
    if len(text) > MAX_TEXT:
        raise BadRequest(f"消息过长（最多 {MAX_TEXT} 字）(message too long)")
    return text


def check_client_id(client_id: Any) -> None:
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 64):
        raise BadRequest("client_id 应为 1-64 个字符 (client_id must be 1-64 characters)")


async def _message_by_client_id(work: Work, cid: str, client_id: str) -> dict | None:
    m = consult_message.c
    hit = (await work.conn.execute(select(consult_message).where(
        m.tenant == work.party.tenant, m.consultation_id == cid, m.client_id == client_id))).first()
    if hit is None:
        return None
    comm = (await work.repo.read("Communication", hit.communication_id)).resource
    return message_frame(hit.seq, hit.kind, hit.sender_role, hit.client_id, comm)


async def _append(work: Work, row, sender_role: str, kind: str, *, text: str | None = None,
                  attachment: dict | None = None, client_id: str | None = None) -> dict:
    """The next message of the conversation: sequence number, Communication, index row.
    The caller holds the consultation's row (locked on PostgreSQL; SQLite's writer lock)."""
    ts = now_us()
    seq = row.last_seq + 1
    c = consult_session.c
    bumped = await work.conn.execute(
        update(consult_session).where(c.tenant == row.tenant, c.id == row.id, c.last_seq == row.last_seq)
        .values(last_seq=seq)
    )
    if bumped.rowcount != 1:
        raise Conflict("消息并发冲突，请重试 (concurrent message, retry)")
    patient_ref = f"Patient/{row.patient_id}"
    if sender_role == "system":
        sender, recipients = None, [patient_ref] + ([f"Practitioner/{row.doctor_id}"] if row.doctor_id else [])
    elif sender_role == "patient":  # the patient, or their guardian in their own name
        sender = work.party.ref
        recipients = [f"Practitioner/{row.doctor_id}"] if row.doctor_id else ([row.department] if row.department else [])
    else:
        sender, recipients = work.party.ref, [patient_ref]
    comm: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": SEQ_SYSTEM, "value": f"{row.id}#{seq}"}],
        "status": "completed",
        "category": [{"coding": [coding(MESSAGE_SYSTEM, kind)]}],
        "subject": ref(patient_ref),
        "encounter": ref(f"Encounter/{row.id}"),
        "sent": instant_from_us(ts),
        "recipient": [ref(r) for r in recipients],
        "payload": [{"contentAttachment": attachment} if attachment is not None else {"contentString": text}],
    }
    if sender:
        comm["sender"] = ref(sender)
    if not comm["recipient"]:
        del comm["recipient"]
    stored = (await work.repo.create(comm)).stored
    try:
        await work.conn.execute(insert(consult_message).values(
            tenant=row.tenant, consultation_id=row.id, seq=seq, communication_id=stored.res_id,
            sender_role=sender_role, kind=kind, client_id=client_id, sent_us=ts))
    except IntegrityError as exc:  # the same client_id raced in: the unit of work rolls back
        raise Conflict("重复的消息 (duplicate message), retry to get the stored copy") from exc
    frame = message_frame(seq, kind, sender_role, client_id, stored.resource)
    work.publish(row.id, frame)
    return frame


async def _system_message(work: Work, cid: str, text: str, *, kind: str = "note", allow_closed: bool = False) -> dict:
    row = await _row(work, cid, lock=True)
    if not allow_closed:
        _require_open(row)
    return await _append(work, row, "system", kind, text=text)


async def messages_since(work: Work, cid: str, since: int = 0, limit: int = REPLAY_LIMIT) -> list[dict]:
    """Messages after sequence number `since`, in order (the replay after a reconnect)."""
    row, _ = await load(work, cid)
    return await _messages_after(work, row.tenant, cid, since, limit)


async def _messages_after(work: Work, tenant: str, cid: str, since: int, limit: int) -> list[dict]:
    m = consult_message.c
    rows = list(await work.conn.execute(
        select(consult_message).where(m.tenant == tenant, m.consultation_id == cid, m.seq > max(0, since))
        .order_by(m.seq).limit(max(1, min(limit, REPLAY_LIMIT)))
    ))
    found = await fetch_many(work.repo, [("Communication", r.communication_id) for r in rows])
    out = []
    for r in rows:
        stored = found.get(("Communication", r.communication_id))
        if stored is not None and not stored.deleted:
            out.append(message_frame(r.seq, r.kind, r.sender_role, r.client_id, stored.resource))
    return out


async def mark_read(work: Work, cid: str, seq: int) -> dict:
    """Read receipt: the caller has read everything up to `seq` (never moves back)."""
    row, relation = await load(work, cid)
    if relation == "candidate":
        return {"by": "doctor", "seq": row.doctor_read_seq}
    if not isinstance(seq, int) or seq < 0:
        raise BadRequest("seq 应为非负整数 (seq must be a non-negative integer)")
    seq = min(seq, row.last_seq)
    col = "patient_read_seq" if relation == "patient" else "doctor_read_seq"
    c = consult_session.c
    await work.conn.execute(
        update(consult_session).where(c.tenant == row.tenant, c.id == cid, getattr(c, col) < seq).values({col: seq})
    )
    current = max(seq, getattr(row, col))
    work.publish(cid, {"type": "read", "consultation": cid, "by": relation, "seq": current})
    return {"by": relation, "seq": current}


# ------------------------------------------------------------ calls
async def start_call(work: Work, cid: str) -> dict:
    """A video call in an in-progress consultation (one at a time: an unfinished call is
    returned again)."""
    row, relation = await load(work, cid, lock=True)
    if relation == "candidate":
        raise Forbidden("请先接诊再发起视频 (accept the consultation first)")
    if row.state != "active":
        raise Conflict("问诊未在进行中，不能视频通话 (video calls need an in-progress consultation)")
    k = consult_call.c
    open_call = (await work.conn.execute(select(consult_call).where(
        k.tenant == row.tenant, k.consultation_id == cid, k.ended_us.is_(None)))).first()
    if open_call is not None:
        return call_view(open_call)
    call_id = uuid.uuid4().hex
    await work.conn.execute(insert(consult_call).values(
        tenant=row.tenant, id=call_id, consultation_id=cid, started_by=relation, started_us=now_us(),
        connected_us=None, ended_us=None, ended_by=None))
    call = (await work.conn.execute(select(consult_call).where(k.tenant == row.tenant, k.id == call_id))).first()
    work.publish(cid, {"type": "state", "consultation": cid, "state": row.state, "call": call_view(call)})
    return call_view(call)


async def load_call(work: Work, cid: str, call_id: str, *, lock: bool = False):
    row, relation = await load(work, cid, lock=lock)
    k = consult_call.c
    call = (await work.conn.execute(select(consult_call).where(
        k.tenant == row.tenant, k.id == str(call_id)[:32], k.consultation_id == cid))).first()
    if call is None:
        raise NotFound(f"未找到视频通话 {call_id} (call not found)")
    return row, relation, call


async def call_connected(work: Work, cid: str, call_id: str) -> dict:
    row, relation, call = await load_call(work, cid, call_id)
    if relation == "candidate":
        raise Forbidden("请先接诊 (accept the consultation first)")
    k = consult_call.c
    if call.connected_us is None and call.ended_us is None:
        await work.conn.execute(update(consult_call).where(
            k.tenant == row.tenant, k.id == call.id, k.connected_us.is_(None)).values(connected_us=now_us()))
        call = (await work.conn.execute(select(consult_call).where(k.tenant == row.tenant, k.id == call.id))).first()
        work.publish(cid, {"type": "state", "consultation": cid, "state": row.state, "call": call_view(call)})
    return call_view(call)


async def end_call(work: Work, cid: str, call_id: str) -> dict:
    """Hang up: the call ends for both sides and is written into the conversation."""
    row, relation, call = await load_call(work, cid, call_id, lock=True)
    if relation == "candidate":
        raise Forbidden("请先接诊 (accept the consultation first)")
    if call.ended_us is not None:
        return call_view(call)
    ts = now_us()
    k = consult_call.c
    done = await work.conn.execute(update(consult_call).where(
        k.tenant == row.tenant, k.id == call.id, k.ended_us.is_(None)).values(ended_us=ts, ended_by=relation))
    call = (await work.conn.execute(select(consult_call).where(k.tenant == row.tenant, k.id == call.id))).first()
    if done.rowcount == 1:
        view = call_view(call)
        if view["duration_seconds"] is not None:
            minutes, seconds = divmod(view["duration_seconds"], 60)
            text = f"视频通话已结束，时长 {minutes} 分 {seconds} 秒"
        else:
            text = "视频通话未接通"
        await _append(work, await _row(work, cid, lock=True), "system", "call", text=text)
        work.publish(cid, {"type": "state", "consultation": cid, "state": row.state, "call": view})
        work.publish(cid, {"type": "hangup", "consultation": cid, "call_id": call.id, "from": relation})
    return call_view(call)


# ------------------------------------------------------------ retention
_KEPT = ("payload", "sender", "recipient", "sent", "encounter", "subject", "category", "identifier")


async def keep_consultation_messages(repo: FhirRepository, plans: list) -> None:
    """Write hook: a consultation's messages are kept as they were sent, by every door
    (REST, transactions, services). The whole online encounter must be retained
    (《互联网诊疗监管细则（试行）》2022 第二十条; chat, audio and video at least 3 years),
    so a message Communication is never deleted and its content never changed."""
    for plan in plans:
        old = plan.existing
        if old is None or old.deleted:
            continue
        categories = old.resource.get("category") or []
        if not any(cd.get("system") == MESSAGE_SYSTEM for cat in categories for cd in cat.get("coding") or []):
            continue
        if plan.resource is None:
            raise Conflict("问诊记录须完整保存，不能删除 (consultation messages are retained and cannot be deleted)")
        if any(plan.resource.get(k) != old.resource.get(k) for k in _KEPT):
            raise Conflict("问诊记录须完整保存，不能修改 (consultation messages are retained unchanged)")


def _register_hooks() -> None:
    from yiyun.fhir.hooks import register_write_hook

    register_write_hook("Communication", keep_consultation_messages)


_register_hooks()
