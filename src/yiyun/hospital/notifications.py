"""Messages from the hospital to a patient: in the app and by SMS.

In the app a message is a FHIR `Communication` (category `notification`, the patient as
subject and recipient, `about` the Appointment it concerns), so it is part of the record a
hospital system can read, and the patient's site lists it on the bookings page. The same
text goes by SMS to the phone on the Patient record through the platform's SMS provider
(`yiyun.identity.sms`, `YIYUN_SMS_PROVIDER`); an SMS that cannot be sent is logged and does
not undo what the message reports.

    await notify_patient(repo, "pat-1", "…", kind=DOCTOR_UNAVAILABLE, about="Appointment/a1")
    items = await notifications_of(repo, "pat-1")      # newest first, as dicts for pages
"""

from __future__ import annotations

from datetime import datetime, timezone

from yiyun.core.errors import YiyunError
from yiyun.core.logging import get_logger
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital.codes import CS

log = get_logger("yiyun.hospital.notifications")

CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
KIND_SYSTEM = f"{CS}/patient-notification"
DOCTOR_UNAVAILABLE = "doctor-unavailable"  # a booking cancelled because the doctor is away (停诊)
WAITLIST_BOOKED = "waitlist-booked"  # a waitlist entry turned into a booking (候补成功)
KINDS = {DOCTOR_UNAVAILABLE: ("停诊通知", "Doctor unavailable"), WAITLIST_BOOKED: ("候补成功", "Waitlist booking")}
SMS_SIGNATURE = "【医云】"


def _communication(patient_id: str, text: str, kind: str, about: str | None) -> dict:
    zh, en = KINDS[kind]
    resource = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY, "code": "notification", "display": "Notification"}],
                      "text": "通知"}],
        "topic": {"coding": [{"system": KIND_SYSTEM, "code": kind, "display": en}], "text": zh},
        "subject": {"reference": f"Patient/{patient_id}"},
        "recipient": [{"reference": f"Patient/{patient_id}"}],
        "sent": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "payload": [{"contentString": text[:1000]}],
    }
    if about:
        resource["about"] = [{"reference": about}]
    return resource


def _phone(patient: dict) -> str | None:
    for t in patient.get("telecom") or []:
        value = str(t.get("value") or "")
        if t.get("system") in ("phone", "sms") and value.replace("+86", "").isdigit():
            return value.replace("+86", "")
    return None


async def notify_patient(repo: FhirRepository, patient_id: str, text: str, *, kind: str,
                         about: str | None = None) -> str:
    """Record the message for the app and send it by SMS; returns the Communication's id.
    `repo` is the hospital's repository acting for the hospital (the caller has decided
    the patient is to be told)."""
    stored = (await repo.create(_communication(patient_id, text, kind, about))).stored
    await _send_sms(repo, patient_id, text)
    return stored.res_id


async def _send_sms(repo: FhirRepository, patient_id: str, text: str) -> None:
    from yiyun.identity import sms

    try:
        patient = (await repo.read("Patient", patient_id)).resource
    except YiyunError:
        return
    phone = _phone(patient)
    if phone is None:
        return
    try:
        # a savepoint: a provider that fails must not take the cancellation or booking with it
        async with repo.conn.begin_nested():
            await sms.provider().send(repo.conn, phone, SMS_SIGNATURE + text)
    except (YiyunError, OSError, ValueError) as err:
        log.warning("notification_sms_failed", patient=patient_id, error=str(err)[:200])


def notification_view(resource: dict) -> dict:
    topic = (resource.get("topic") or {}).get("coding") or [{}]
    about = [(a.get("reference") or "") for a in resource.get("about") or []]
    return {
        "id": resource.get("id"),
        "kind": topic[0].get("code"),
        "title": (resource.get("topic") or {}).get("text"),
        "text": ((resource.get("payload") or [{}])[0]).get("contentString"),
        "sent": resource.get("sent"),
        "appointment": next((a.split("/", 1)[1] for a in about if a.startswith("Appointment/")), None),
    }


async def notifications_of(repo: FhirRepository, patient_id: str, *, count: int = 20) -> list[dict]:
    """The hospital's messages to this patient, newest first."""
    result = await repo.search("Communication", [
        ("category", f"{CATEGORY}|notification"), ("recipient", f"Patient/{patient_id}"), ("_sort", "-sent"),
        ("_count", str(count))])
    return [notification_view(s.resource) for s in result.matches]
