"""An administrator's changes to the hospital's catalogue: departments (HealthcareService)
and doctors (Practitioner + PractitionerRole). Consultation types and fees of a doctor are
Schedules (`yiyun.hospital.schedules.create_schedule`).

What patients browse (`yiyun.hospital.catalogue`) is read from these resources; every
change drops this process's cached directory of the hospital (other processes see it
within `catalogue.CACHE_SECONDS`). Input is checked here, with messages in Chinese and
English, so the JSON API, the pages and scripts refuse the same things the same way.

    dept = await save_department(repo, {"name": "心内科", "phone": "0731-1234567"})
    dept = await save_department(repo, {"active": False}, service_id="hs-cardio")   # update
    doc  = await save_doctor(repo, {"name": "王医生", "department": "hs-cardio", "title": "主治医师"})
"""

from __future__ import annotations

import re
import uuid

from yiyun.core.errors import BadRequest, NotFound
from yiyun.fhir.ids import is_valid_id
from yiyun.fhir.model import StoredResource
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital import catalogue
from yiyun.hospital.codes import EXT_INTRODUCTION

THO = "http://terminology.hl7.org/CodeSystem"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PHONE = re.compile(r"^[0-9+\-() ]{5,20}$")
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
GENDERS = ("male", "female", "other", "unknown")
DEPARTMENT_FIELDS = {"name", "phone", "comment", "appointment_required", "active", "opening_hours"}
DOCTOR_FIELDS = {"name", "department", "title", "gender", "specialty", "introduction", "phone", "active"}


# ------------------------------------------------------------------ checks
def _text(body: dict, key: str, label: str, *, limit: int, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRequest(f"{label}不能为空 ({key} is required)")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{label}须为文字 ({key} must be a string)")
    value = value.strip()
    if len(value) > limit:
        raise BadRequest(f"{label}最多 {limit} 个字 ({key}: at most {limit} characters)")
    return value


def _flag(body: dict, key: str, label: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{label}须为是或否 ({key} must be true or false)")
    return value


def _phone(body: dict) -> str | None:
    value = _text(body, "phone", "电话", limit=20)
    if value is not None and not PHONE.match(value):
        raise BadRequest("电话号码格式不正确 (phone: digits, +, -, spaces only)")
    return value


def _unknown(body: dict, allowed: set[str]) -> None:
    if not isinstance(body, dict):
        raise BadRequest("请求体须为 JSON 对象 (the body must be a JSON object)")
    extra = sorted(set(body) - allowed)
    if extra:
        raise BadRequest(f"不认识的字段：{', '.join(extra)} (unknown fields)")


def _opening_hours(value) -> list[dict] | None:
    """[{days: ["mon", …], start: "08:00", end: "12:00"} | {days: […], all_day: true}]"""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 14:
        raise BadRequest("出诊时间须为最多 14 项的列表 (opening_hours: a list of at most 14 items)")
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"days", "start", "end", "all_day"}:
            raise BadRequest("出诊时间每项须含 days、start、end 或 all_day (opening_hours item: days, start, end)")
        days = item.get("days") or []
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise BadRequest(f"出诊日须为 {', '.join(DAYS)} 中的值 (opening_hours days)")
        if item.get("all_day") is True:
            out.append({"daysOfWeek": days, "allDay": True})
            continue
        start, end = item.get("start"), item.get("end")
        if not (isinstance(start, str) and HHMM.match(start) and isinstance(end, str) and HHMM.match(end)):
            raise BadRequest("出诊时间须为 HH:MM 格式 (opening_hours start/end: HH:MM)")
        if start >= end:
            raise BadRequest("出诊开始时间须早于结束时间 (opening_hours: start before end)")
        out.append({"daysOfWeek": days, "availableStartTime": f"{start}:00", "availableEndTime": f"{end}:00"})
    return out


def _new_id(prefix: str, given) -> str:
    if given is None:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"
    if not isinstance(given, str) or not is_valid_id(given):
        raise BadRequest("id 只能含字母、数字、- 和 .，最长 64 位 (id: letters, digits, - and ., up to 64)")
    return given


async def _existing(repo: FhirRepository, res_type: str, res_id: str, label: str) -> dict:
    if not is_valid_id(res_id):
        raise NotFound(f"未找到{label} {res_id!r} ({res_type} not found)")
    try:
        return dict((await repo.read(res_type, res_id)).resource)
    except NotFound:
        raise NotFound(f"未找到{label} {res_id} ({res_type} not found)") from None


async def _hospital_org(repo: FhirRepository) -> dict | None:
    d = await catalogue.load_directory(repo.conn, repo.ctx.tenant)
    org = d.organization
    return {"reference": f"Organization/{org['id']}", "display": org.get("name")} if org else None


# ------------------------------------------------------------------ departments
async def save_department(repo: FhirRepository, body: dict, *, service_id: str | None = None) -> StoredResource:
    """Create (no `service_id`) or change a department; only the fields given change."""
    _unknown(body, DEPARTMENT_FIELDS | ({"id"} if service_id is None else set()))
    name = _text(body, "name", "科室名称", limit=40, required=service_id is None)
    phone, comment = _phone(body), _text(body, "comment", "科室简介", limit=500)
    required, active = _flag(body, "appointment_required", "是否需预约"), _flag(body, "active", "是否开放")
    hours = _opening_hours(body.get("opening_hours"))
    if service_id is None:
        service_id = _new_id("hs", body.get("id"))
        if await repo.exists("HealthcareService", service_id):
            raise BadRequest(f"科室 id {service_id} 已存在 (department id already exists)")
        resource: dict = {"resourceType": "HealthcareService", "id": service_id, "active": True,
                          "category": [{"text": "门诊"}]}
        org = await _hospital_org(repo)
        if org:
            resource["providedBy"] = org
    else:
        resource = await _existing(repo, "HealthcareService", service_id, "科室")
        resource.pop("meta", None)
    if name is not None:
        resource.update(name=name, type=[{"text": name}], specialty=[{"text": name}])
    if phone is not None:
        resource["telecom"] = [{"system": "phone", "value": phone, "use": "work"}]
    if comment is not None:
        resource["comment"] = comment
    if required is not None:
        resource["appointmentRequired"] = required
    if active is not None:
        resource["active"] = active
    if hours is not None:
        resource["availableTime"] = hours
    stored = (await repo.update("HealthcareService", service_id, resource)).stored
    catalogue.invalidate(repo.ctx.tenant)
    return stored


def department_view(resource: dict) -> dict:
    return {"id": resource.get("id"), "name": catalogue._department_name(resource),  # noqa: SLF001
            "active": resource.get("active", True), "phone": catalogue._phone(resource),  # noqa: SLF001
            "comment": resource.get("comment"), "appointment_required": resource.get("appointmentRequired"),
            "opening_hours": catalogue.opening_hours(resource), "fever_clinic": catalogue.is_fever_clinic(resource)}


async def departments(repo: FhirRepository) -> list[dict]:
    """All departments, closed ones included (patients see only open ones)."""
    found = await repo.search("HealthcareService", [("_count", "1000")])
    return sorted((department_view(s.resource) for s in found.matches), key=lambda d: (not d["active"], d["name"]))


# ------------------------------------------------------------------ doctors
async def _department_ref(repo: FhirRepository, service_id) -> dict:
    if not isinstance(service_id, str) or not service_id:
        raise BadRequest("请选择科室 (department is required)")
    service = await _existing(repo, "HealthcareService", service_id, "科室")
    if service.get("active") is False:
        raise BadRequest("该科室已关闭，不能加入医生 (the department is closed)")
    return {"reference": f"HealthcareService/{service_id}", "display": service.get("name")}


def _specialty(body: dict) -> list[dict] | None:
    value = body.get("specialty")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 10 or any(not isinstance(v, str) or not 0 < len(v) <= 40
                                                             for v in value):
        raise BadRequest("擅长须为最多 10 项、每项 40 字以内的列表 (specialty: up to 10 items of 40 characters)")
    return [{"text": v.strip()} for v in value]


def _doctor_fields(body: dict, creating: bool) -> dict:
    gender = body.get("gender")
    if gender is not None and gender not in GENDERS:
        raise BadRequest(f"性别须为 {', '.join(GENDERS)} 之一 (gender)")
    return {"name": _text(body, "name", "医生姓名", limit=30, required=creating),
            "title": _text(body, "title", "职称", limit=20), "gender": gender,
            "introduction": _text(body, "introduction", "医生简介", limit=2000), "phone": _phone(body),
            "specialty": _specialty(body), "active": _flag(body, "active", "是否出诊")}


def _practitioner(practitioner: dict, f: dict) -> dict:
    if f["name"] is not None:
        practitioner["name"] = [{"use": "official", "text": f["name"]}]
    if f["gender"] is not None:
        practitioner["gender"] = f["gender"]
    if f["title"] is not None:
        practitioner["qualification"] = [{"code": {"text": f["title"]}}]
    if f["active"] is not None:
        practitioner["active"] = f["active"]
    return practitioner


def _role(role: dict, f: dict, name: str | None) -> dict:
    if name and role.get("practitioner"):
        role["practitioner"]["display"] = name
    if f["specialty"] is not None:
        role["specialty"] = f["specialty"]
    if f["introduction"] is not None:
        others = [e for e in role.get("extension") or [] if e.get("url") != EXT_INTRODUCTION]
        role["extension"] = [*others, {"url": EXT_INTRODUCTION, "valueMarkdown": f["introduction"]}]
    if f["phone"] is not None:
        role["telecom"] = [{"system": "phone", "value": f["phone"], "use": "work"}]
    if f["active"] is not None:
        role["active"] = f["active"]
    return role


async def save_doctor(repo: FhirRepository, body: dict, *, role_id: str | None = None) -> StoredResource:
    """Create (no `role_id`: a Practitioner and their PractitionerRole in a department) or
    change a doctor; only the fields given change. Returns the PractitionerRole."""
    _unknown(body, DOCTOR_FIELDS | ({"id"} if role_id is None else set()))
    creating = role_id is None
    f = _doctor_fields(body, creating)
    department = await _department_ref(repo, body.get("department")) if (
        creating or body.get("department") is not None) else None
    if creating:
        role_id = _new_id("role", body.get("id"))
        if await repo.exists("PractitionerRole", role_id):
            raise BadRequest(f"医生岗位 id {role_id} 已存在 (role id already exists)")
        prac_id = f"prac-{role_id.removeprefix('role-')}"[:64]
        practitioner: dict = {"resourceType": "Practitioner", "id": prac_id, "active": True}
        role: dict = {"resourceType": "PractitionerRole", "id": role_id, "active": True,
                      "practitioner": {"reference": f"Practitioner/{prac_id}"},
                      "code": [{"coding": [{"system": f"{THO}/practitioner-role", "code": "doctor",
                                            "display": "Doctor"}], "text": "医师"}]}
        org = await _hospital_org(repo)
        if org:
            role["organization"] = org
    else:
        role = await _existing(repo, "PractitionerRole", role_id, "医生")
        prac_id = ((role.get("practitioner") or {}).get("reference") or "").removeprefix("Practitioner/")
        practitioner = await _existing(repo, "Practitioner", prac_id, "医生") if prac_id else {}
    if department is not None:
        role["healthcareService"] = [department]
        role.setdefault("specialty", [{"text": department.get("display") or ""}])
    if practitioner:
        practitioner.pop("meta", None)
        await repo.update("Practitioner", prac_id, _practitioner(practitioner, f))
    role.pop("meta", None)
    stored = (await repo.update("PractitionerRole", role_id, _role(role, f, f["name"]))).stored
    catalogue.invalidate(repo.ctx.tenant)
    return stored


async def doctor_view(repo: FhirRepository, role: dict) -> dict:
    prac_id = ((role.get("practitioner") or {}).get("reference") or "").removeprefix("Practitioner/")
    prac = {}
    if prac_id and is_valid_id(prac_id):
        try:
            prac = (await repo.read("Practitioner", prac_id)).resource
        except NotFound:
            prac = {}
    service = next((hs.get("reference", "").removeprefix("HealthcareService/")
                    for hs in role.get("healthcareService") or []), None)
    return {"id": role.get("id"), "practitioner": prac_id or None,
            "name": catalogue._name(prac) or (role.get("practitioner") or {}).get("display"),  # noqa: SLF001
            "title": catalogue._title(prac), "gender": prac.get("gender"),  # noqa: SLF001
            "department": service, "specialty": [s.get("text") for s in role.get("specialty") or []],
            "introduction": catalogue._introduction(role, prac), "active": role.get("active", True)}  # noqa: SLF001
