"""Hospital jobs: booking reminders by SMS (every minute), automatic no-shows and the
waitlist sweep (every 5 minutes).

Reminders (`deliver_due_reminders`): booking schedules a reminder 24 h and 2 h before each
booked visit (`booking._schedule_reminders`, table `hospital_reminder`). Each due one is
claimed in its own transaction (`UPDATE … WHERE sent_us IS NULL`; on PostgreSQL the row
is first locked with SKIP LOCKED so a second worker passes it by), and the SMS is sent in
that same transaction: if sending fails the claim rolls back and the failure is counted,
the reminder is tried again on a later run, up to `MAX_ATTEMPTS` times. Two workers
therefore never send one reminder twice. A reminder is dropped, not sent, once the visit
is cancelled (the booking hook deletes it), no longer booked, already started, or when
the patient has no mobile number.

No-shows (`mark_overdue_noshows`): a booked visit whose end passed more than the
hospital's `noshow_grace_minutes` ago, that nobody checked in (status still booked) and
that has no Encounter (an online consultation started from the booking has one), is
marked a no-show through `booking.mark_noshow`, so the no-show block applies exactly as
when staff record it. Visits that ended more than `NOSHOW_LOOKBACK_DAYS` ago are left to
staff: a worker that was down for a week must not block patients for old data.

Waitlists (`sweep_waitlists`): a slot freed by a cancellation through the booking service
goes to the first waiting patient at once; one freed by another path (a plain FHIR write
from a hospital system, a Slot reopened by hand) is offered by this sweep
(`waitlist.fill_waitlists`), which also expires the entries of past days.

All run with the hospital's own authority (`RequestContext` purpose HOPERAT, healthcare
operations) through the FHIR repository, so every read and write is audited.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from yiyun.core import jobs
from yiyun.core.db import is_sqlite, unit_of_work
from yiyun.core.errors import NotFound, YiyunError
from yiyun.core.logging import get_logger
from yiyun.fhir.model import RequestContext, instant_from_us, now_us
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital import booking, catalogue
from yiyun.hospital.codes import CHINA_TZ, CONSULTATION_TYPES, ONLINE_TYPES, consultation_type_of, parse_instant, to_us
from yiyun.identity.accounts import list_tenants
from yiyun.hospital.models import reminder

log = get_logger("yiyun.hospital.tasks")

REMINDER_JOB = "hospital.send_reminders"
NOSHOW_JOB = "hospital.mark_noshows"
WAITLIST_JOB = "hospital.fill_waitlists"
MAX_ATTEMPTS = 5
NOSHOW_LOOKBACK_DAYS = 7
SWEEP_PAGE = 500
SWEEP_LIMIT = 20_000  # bookings looked at per hospital and run
# Encounter statuses of a visit that took place or is under way
# (https://hl7.org/fhir/R4/valueset-encounter-status.html): all but cancelled and entered-in-error.
VISIT_STATES = ("planned", "arrived", "triaged", "in-progress", "onleave", "finished", "unknown")
STARTED_ENCOUNTER = "_has:Encounter:appointment:status"
REMINDABLE = frozenset({"booked", "pending"})
US_PER_MIN = booking.US_PER_MIN
JOBS_ACTOR = booking.Actor("system", "system:hospital-jobs")
LEAD_TEXT = {"24h": "明天", "2h": "约 2 小时后"}
WEEKDAYS = "一二三四五六日"


# ------------------------------------------------------------------ jobs
def _run_counted(work, event: str) -> int:
    """Run one sweep (an async function of the engine) and log how much it did."""
    count = jobs.run_async(work)
    if count:
        log.info(event, count=count)
    return count


@jobs.periodic(REMINDER_JOB, minute="*")
def send_reminders() -> int:
    return _run_counted(deliver_due_reminders, "reminders_sent")


@jobs.periodic(NOSHOW_JOB, minute="*/5")
def mark_noshows() -> int:
    return _run_counted(mark_overdue_noshows, "noshows_marked")


@jobs.periodic(WAITLIST_JOB, minute="*/5")
def fill_waitlists() -> int:
    return _run_counted(sweep_waitlists, "waitlists_served")


def _ensure_hooks() -> None:
    """A worker process has no web app to register the booking hook: do it here, so a
    no-show frees its Slot and counts towards a block on this path too."""
    from yiyun.fhir.hooks import register_write_hook
    from yiyun.identity.protection import store as _protection_store  # noqa: F401  (reveals sealed phones)

    register_write_hook("Appointment", booking.appointment_write_hook)


class _Audit:
    """One authorisation policy per run; its buffered read entries are written at the end."""

    async def __aenter__(self):
        from yiyun.identity.policy import AuthorizationPolicy

        self.policy = AuthorizationPolicy()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.policy.recorder.close()

    def repo(self, conn: AsyncConnection, tenant: str, subject: str) -> FhirRepository:
        ctx = RequestContext(tenant=tenant, subject=subject, purpose="HOPERAT")
        return FhirRepository(conn, ctx, policy=self.policy, validate=False)


# ------------------------------------------------------------------ reminders
async def deliver_due_reminders(engine: AsyncEngine, *, now: int | None = None, sms=None, limit: int = 500,
                                tenants: list[str] | None = None) -> int:
    """Send every due reminder (of `tenants`, default all) once; returns how many SMS were sent."""
    from yiyun.identity import sms as sms_module

    sender = sms or sms_module.provider()
    if sender.name == "disabled":
        return 0  # nothing can be sent: reminders stay due (GET /api/hospital/reminders/due)
    _ensure_hooks()
    now = now or now_us()
    async with unit_of_work(engine, write=False) as conn:
        due = await booking.due_reminders(conn, now_us_=now, limit=limit, tenants=tenants)
    sent = 0
    async with _Audit() as audit:
        for item in due:
            sent += await _deliver(engine, audit, item, now, sender)
    return sent


async def _deliver(engine: AsyncEngine, audit: _Audit, item: dict, now: int, sender) -> int:
    try:
        async with unit_of_work(engine) as conn:
            if not await _claim(conn, item, now):
                return 0  # another worker has it, or had it
            outcome = await _send_one(audit.repo(conn, item["tenant"], "system:hospital-reminders"), item, now, sender)
            await conn.execute(update(reminder).where(*_key(item)).values(outcome=outcome))
        return 1 if outcome == "sent" else 0
    except Exception as exc:  # the gateway or the database failed: count it, try again later
        log.warning("reminder_failed", tenant=item["tenant"], appointment=item["appointment"], kind=item["kind"],
                    error=str(exc)[:200])
        async with unit_of_work(engine) as conn:
            await _record_failure(conn, item, exc, now)
        return 0


def _key(item: dict) -> tuple:
    return (reminder.c.tenant == item["tenant"], reminder.c.appointment == item["appointment"],
            reminder.c.kind == item["kind"])


async def _claim(conn: AsyncConnection, item: dict, now: int) -> bool:
    """Take the reminder for this transaction: exactly one worker gets each one."""
    if not is_sqlite(conn.engine):  # SQLite: BEGIN IMMEDIATE already serialises writers
        locked = (await conn.execute(select(reminder.c.kind).where(*_key(item), reminder.c.sent_us.is_(None))
                                     .with_for_update(skip_locked=True))).first()
        if locked is None:
            return False
    claimed = await conn.execute(update(reminder).where(*_key(item), reminder.c.sent_us.is_(None))
                                 .values(sent_us=now, attempts=reminder.c.attempts + 1))
    return claimed.rowcount == 1


async def _record_failure(conn: AsyncConnection, item: dict, exc: Exception, now: int) -> None:
    row = (await conn.execute(select(reminder.c.attempts).where(*_key(item), reminder.c.sent_us.is_(None)))).first()
    if row is None:
        return
    attempts = row.attempts + 1
    values: dict = {"attempts": attempts, "last_error": f"{type(exc).__name__}: {exc}"[:200]}
    if attempts >= MAX_ATTEMPTS:
        values.update(sent_us=now, outcome="failed")
    await conn.execute(update(reminder).where(*_key(item), reminder.c.sent_us.is_(None)).values(**values))


async def _send_one(repo: FhirRepository, item: dict, now: int, sender) -> str:
    """Send one claimed reminder; returns its outcome (sent, or why it was not)."""
    try:
        appt = (await repo.read("Appointment", item["appointment"])).resource
    except NotFound:
        return "inactive"
    if appt.get("status") not in REMINDABLE:
        return "inactive"
    start = parse_instant(appt.get("start"))
    if start is None or to_us(start) <= now:
        return "late"
    if item["kind"] == "24h" and to_us(start) - 2 * 60 * US_PER_MIN <= now:
        return "late"  # the 2 h reminder is due as well: one message, not two
    phone = await patient_phone(repo, booking.patient_of(appt))
    if phone is None:
        return "no-phone"
    await sender.send(repo.conn, phone, await reminder_text(repo.conn, repo.ctx.tenant, appt, item["kind"]))
    return "sent"


async def patient_phone(repo: FhirRepository, patient_id: str | None) -> str | None:
    """The patient's mobile number: from their Patient record (revealed to the hospital's own
    in-process services), else from the patient account linked to it."""
    from yiyun.identity.accounts import linked_account_phone
    from yiyun.identity.protection.fields import normalize_phone

    if not patient_id:
        return None
    try:
        patient = (await repo.read("Patient", patient_id)).resource
    except NotFound:
        return None
    for value in _phones(patient):
        digits = normalize_phone(value)
        if len(digits) == 11 and digits.startswith("1"):
            return digits
    return await linked_account_phone(repo.conn, repo.ctx.tenant, f"Patient/{patient_id}")


def _phones(patient: dict) -> list[str]:
    """Phone numbers of a Patient, mobiles first, then by rank (https://hl7.org/fhir/R4/datatypes.html#ContactPoint)."""
    points = [t for t in patient.get("telecom") or [] if t.get("system") in ("phone", "sms") and t.get("value")
              and not (t.get("period") or {}).get("end")]
    points.sort(key=lambda t: (t.get("use") != "mobile", t.get("rank") or 1000))
    return [t["value"] for t in points]


async def reminder_text(conn: AsyncConnection, tenant: str, appt: dict, kind: str) -> str:
    """The reminder SMS in Chinese: hospital, department, doctor, time and queue number."""
    where = await _where(conn, tenant, appt)
    start = parse_instant(appt.get("start")).astimezone(CHINA_TZ)
    when = f"{start.month}月{start.day}日（周{WEEKDAYS[start.weekday()]}）{start:%H:%M}"
    ctype = consultation_type_of(appt)
    what = CONSULTATION_TYPES[ctype][0] if ctype in CONSULTATION_TYPES else "就诊"
    number = booking.queue_number_of(appt)
    queue = f"，就诊序号 {number} 号" if number else ""
    how = "请届时登录医云进入问诊" if ctype in ONLINE_TYPES else "请提前到医院签到候诊"
    return (f"【医云】就诊提醒：您预约的{where}{what}将于{LEAD_TEXT.get(kind, '')} {when} 开始{queue}。"
            f"{how}；如不能按时就诊，请提前取消预约，爽约将影响今后的预约。")


async def _where(conn: AsyncConnection, tenant: str, appt: dict) -> str:
    """"某医院 呼吸内科 李医生（主任医师）" from the hospital's public directory."""
    try:
        d = await catalogue.load_directory(conn, tenant)
    except YiyunError:
        return ""
    parts = [catalogue.hospital_summary(d)["name"]]
    role = next(iter(booking.participant_ids(appt, "PractitionerRole")), None)
    doctor = catalogue.doctor_summary(d, role) if role in d.roles else None
    service = next(iter(booking.participant_ids(appt, "HealthcareService")), None)
    if doctor and doctor["department"]:
        parts.append(doctor["department"])
    elif service in d.services:
        parts.append(catalogue.department_summary(d, service)["name"])
    if doctor and doctor["name"]:
        parts.append(f"{doctor['name']}（{doctor['title']}）" if doctor["title"] else doctor["name"])
    return " ".join(p for p in parts if p) + " "


# ------------------------------------------------------------------ no-shows
async def mark_overdue_noshows(engine: AsyncEngine, *, now: int | None = None,
                               tenants: list[str] | None = None) -> int:
    """Mark overdue, unstarted bookings as no-shows; returns how many were marked."""
    _ensure_hooks()
    now = now or now_us()
    if tenants is None:
        tenants = await _hospitals(engine)
    marked = 0
    async with _Audit() as audit:
        for tenant in tenants:
            marked += await _sweep_hospital(engine, audit, tenant, now)
    return marked


async def sweep_waitlists(engine: AsyncEngine, *, tenants: list[str] | None = None) -> int:
    """Serve waiting patients from free slots of their days, hospital by hospital; returns how many."""
    from yiyun.hospital import waitlist

    _ensure_hooks()
    tenants = tenants if tenants is not None else await _hospitals(engine)
    served = 0
    async with _Audit() as audit:
        for tenant in tenants:
            try:
                async with unit_of_work(engine) as conn:
                    served += len(await waitlist.fill_waitlists(audit.repo(conn, tenant, "system:hospital-waitlist")))
            except Exception:  # one hospital's failure must not stop the others'
                log.exception("waitlist_sweep_failed", tenant=tenant)
    return served


async def _hospitals(engine: AsyncEngine) -> list[str]:
    async with unit_of_work(engine, write=False) as conn:
        return [t.slug for t in await list_tenants(conn) if t.kind in catalogue.HOSPITAL_KINDS and t.active]


async def _sweep_hospital(engine: AsyncEngine, audit: _Audit, tenant: str, now: int) -> int:
    marked = 0
    for appointment_id in await overdue_bookings(engine, audit, tenant, now):
        try:
            async with unit_of_work(engine) as conn:
                repo = audit.repo(conn, tenant, "system:hospital-noshows")
                if await was_started(repo, appointment_id):
                    continue
                await booking.mark_noshow(repo, JOBS_ACTOR, appointment_id)
            marked += 1
        except YiyunError as err:  # checked in, cancelled or marked meanwhile (another worker)
            log.info("noshow_skipped", tenant=tenant, appointment=appointment_id, reason=err.message[:120])
        except Exception:  # one bad booking must not stop the sweep of the others
            log.exception("noshow_failed", tenant=tenant, appointment=appointment_id)
    return marked


async def overdue_bookings(engine: AsyncEngine, audit: _Audit, tenant: str, now: int) -> list[str]:
    """Ids of bookings of `tenant` still booked although they ended more than the grace ago
    and no visit was started for them, oldest first."""
    async with unit_of_work(engine, write=False) as conn:
        rules = await booking.get_rules(conn, tenant)
        cutoff = now - rules.noshow_grace_minutes * US_PER_MIN
        oldest = now - NOSHOW_LOOKBACK_DAYS * 24 * 60 * US_PER_MIN
        repo = audit.repo(conn, tenant, "system:hospital-noshows")
        window = [("status", "booked"), ("date", f"ge{instant_from_us(oldest)}"),
                  ("date", f"lt{instant_from_us(cutoff)}")]
        booked = await _all_pages(repo, window)
        # online consultations started from a booking leave it booked: found once here
        # rather than one search per booking (https://hl7.org/fhir/R4/search.html#has)
        started = {s.res_id for s in await _all_pages(repo, [*window, (STARTED_ENCOUNTER, ",".join(VISIT_STATES))])}
    return [s.res_id for s in booked if s.res_id not in started and _ended_between(s.resource, oldest, cutoff)]


async def _all_pages(repo: FhirRepository, params: list[tuple[str, str]]) -> list:
    out: list = []
    while len(out) < SWEEP_LIMIT:
        page = await repo.search("Appointment", [*params, ("_sort", "date"), ("_count", str(SWEEP_PAGE)),
                                                 ("_offset", str(len(out)))])
        out.extend(page.matches)
        if len(page.matches) < SWEEP_PAGE:
            break
    return out


def _ended_between(appt: dict, oldest: int, cutoff: int) -> bool:
    end = parse_instant(appt.get("end")) or parse_instant(appt.get("start"))
    return end is not None and oldest <= to_us(end) <= cutoff


async def was_started(repo: FhirRepository, appointment_id: str) -> bool:
    """Whether the visit took place in some form: an Encounter for the booking (an online
    consultation started from it, or a visit opened at the hospital) that is not cancelled."""
    found = await repo.search("Encounter", [("appointment", f"Appointment/{appointment_id}"),
                                            ("status", ",".join(VISIT_STATES)), ("_count", "1")])
    return bool(found.matches)
