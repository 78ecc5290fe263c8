"""Code systems, extensions and time helpers of the hospital module.

Consultation types (``Schedule.serviceType``, ``Slot.serviceType``,
``Appointment.appointmentType``) use the yiyun CodeSystem
``https://yiyun.example.cn/fhir/CodeSystem/consultation-type``:

=============  ==========  =====================================================
code           display     meaning
=============  ==========  =====================================================
clinic         门诊         offline visit at the hospital (线下门诊)
online-text    图文问诊     online consultation by text and images (互联网诊疗)
online-video   视频问诊     online consultation by video (互联网诊疗)
=============  ==========  =====================================================

Times: stored and exchanged as UTC instants; a hospital's day and its schedule templates
are in China Standard Time (Asia/Shanghai, UTC+8 all year: no daylight saving since 1991).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta, timezone

BASE = "https://yiyun.example.cn/fhir"
CS = f"{BASE}/CodeSystem"
SD = f"{BASE}/StructureDefinition"
SID = f"{BASE}/sid"

CONSULTATION_TYPE = f"{CS}/consultation-type"
CONSULTATION_TYPES: dict[str, tuple[str, str]] = {
    # code: (Chinese display, English display)
    "clinic": ("门诊", "Clinic visit"),
    "online-text": ("图文问诊", "Online consultation (text and images)"),
    "online-video": ("视频问诊", "Online consultation (video)"),
}
ONLINE_TYPES = ("online-text", "online-video")

SERVICE_CHARACTERISTIC = f"{CS}/service-characteristic"
FEVER_CLINIC = "fever-clinic"  # HealthcareService.characteristic of a fever clinic (发热门诊)
ONLINE_SERVICE = "online-consultation"  # HealthcareService.characteristic of online services

# Consultation fee on a Schedule (per doctor and consultation type): Money in CNY yuan as
# FHIR requires a decimal; the module works in integer fen.
EXT_FEE = f"{SD}/consultation-fee"
EXT_INTRODUCTION = f"{SD}/practitioner-introduction"
EXT_DEPARTMENT = f"{SD}/department"
# A RelatedPerson who is the guardian of its `patient` names the guardian's own Patient here.
EXT_GUARDIAN_PATIENT = f"{SD}/guardian-patient"
QUEUE_NUMBER_SYSTEM = f"{SID}/queue-number"
CANCEL_REASON = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"

CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

# Appointment statuses that hold a slot (https://hl7.org/fhir/R4/valueset-appointmentstatus.html).
ACTIVE_STATUSES = frozenset({"proposed", "pending", "booked", "arrived", "checked-in", "waitlist"})


def consultation_coding(code: str) -> dict:
    zh, _en = CONSULTATION_TYPES[code]
    return {"system": CONSULTATION_TYPE, "code": code, "display": zh}


def consultation_concept(code: str) -> dict:
    return {"coding": [consultation_coding(code)], "text": CONSULTATION_TYPES[code][0]}


def consultation_type_of(resource: dict, element: str = "serviceType") -> str | None:
    value = resource.get(element)
    concepts = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    for concept in concepts:
        for c in (concept or {}).get("coding") or []:
            if c.get("system") == CONSULTATION_TYPE and c.get("code") in CONSULTATION_TYPES:
                return c["code"]
    return None


def fee_fen(resource: dict) -> int | None:
    for ext in resource.get("extension") or []:
        if ext.get("url") == EXT_FEE and isinstance(ext.get("valueMoney"), dict):
            value = ext["valueMoney"].get("value")
            if isinstance(value, (int, float)):
                return int(round(value * 100))
    return None


def fee_extension(fen: int) -> dict:
    return {"url": EXT_FEE, "valueMoney": {"value": fen / 100, "currency": "CNY"}}


def instant(dt: datetime) -> str:
    """A UTC FHIR instant, seconds precision."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(value: str | None) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else None


def to_us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)


def local_day(dt: datetime) -> date:
    return dt.astimezone(CHINA_TZ).date()


def local_moment(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=CHINA_TZ)


def today_local(now: datetime | None = None) -> date:
    return local_day(now or datetime.now(timezone.utc))


def ref_id(reference: dict | None, res_type: str) -> str | None:
    """`{"reference": "Slot/abc"}` → "abc" when it names `res_type` (relative reference)."""
    if not isinstance(reference, dict):
        return None
    value = reference.get("reference")
    if not isinstance(value, str):
        return None
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == res_type:
        return parts[-1]
    return None


def latest_birth_date(birth: str | None) -> date | None:
    """Patient.birthDate (YYYY, YYYY-MM or YYYY-MM-DD) as the latest day it can mean: a
    partial date counts the child as young as it may be, so the rule errs towards care."""
    if not isinstance(birth, str) or not birth:
        return None
    parts = birth[:10].split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 12
        day = int(parts[2]) if len(parts) > 2 else calendar.monthrange(year, month)[1]
        return date(year, month, day)
    except (ValueError, IndexError):
        return None


def age_in_years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
