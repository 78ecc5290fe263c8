"""Demo hospital services: online services, schedules and slots relative to today.

For every demo hospital and the community health centre: each doctor who sees booked
patients gets a clinic (门诊) Schedule, and in departments that offer Internet follow-up
(《互联网诊疗管理办法（试行）》) a text-and-image (图文问诊) one, heads of department a
video (视频问诊) one too; weekly templates (a deterministic pattern per doctor), the Slots
of the next 14 days from today, each hospital's booking rules, an online-service
HealthcareService and the region's fever clinics (发热门诊; a 发热哨点诊室 at the
community centre). Emergency and fever clinics take walk-ins and have no Slots.

Fees are demo values in fen, in the range of public-hospital consultation fees
(诊查费) by professional title; online consultations cost the same as the clinic visit,
as online follow-up may not be priced above its offline counterpart (国家医保局
《关于完善"互联网+"医疗服务价格和医保支付政策的指导意见》医保发〔2019〕47号).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository

FEE_BY_TITLE = {
    "chief-physician": 5000,
    "associate-chief-physician": 3500,
    "attending-physician": 2000,
    "resident-physician": 1500,
}
WALK_IN_DEPARTMENTS = ("emergency", "infectious")
# Fever clinics of the demo region: the central hospital's infectious-disease department
# is its fever clinic; the others get a service of their own.
FEVER_CLINICS = {
    "cs-childrens-hospital": ("儿童发热门诊", True),
    "tianxin-district-hospital": ("发热门诊", True),
    "wangyuehu-chc": ("发热哨点诊室", False),
}
DAYS_AHEAD = 14


def _title_code(practitioner: dict) -> str | None:
    for q in practitioner.get("qualification") or []:
        for c in (q.get("code") or {}).get("coding") or []:
            return c.get("code")
    return None


def _introduction(practitioner: dict, department: str, title: str) -> str:
    since = ((practitioner.get("qualification") or [{}])[0].get("period") or {}).get("start", "")[:4]
    years = f"，{since}年起执业" if since else ""
    return f"{department}{title}{years}。"


def _dept_key(service_id: str, prefix: str) -> str:
    return service_id.removeprefix(prefix)


async def create_demo_services(engine: AsyncEngine, data) -> dict:
    """Schedules, slots and booking rules for the demo hospitals; returns counts."""
    from yiyun.hospital import booking, catalogue, schedules
    from yiyun.hospital.codes import today_local

    counts = {"schedules": 0, "slots": 0, "fever_clinics": 0}
    for tenant in data.tenants:
        if tenant.kind not in ("hospital", "clinic"):
            continue
        resources = data.for_tenant(tenant.slug)
        async with unit_of_work(engine) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=tenant.slug, subject="demo"))
            await booking.set_rules(conn, tenant.slug)
            counts["fever_clinics"] += await _fever_clinic(repo, tenant, resources)
            await _online_service(repo, tenant, resources)
            counts["schedules"] += await _schedules(repo, tenant, resources)
            report = await schedules.generate_slots(repo, start_day=today_local(), days=DAYS_AHEAD)
            counts["slots"] += report.created
        catalogue.invalidate(tenant.slug)
    return counts


async def _fever_clinic(repo: FhirRepository, tenant, resources: list[dict]) -> int:
    from yiyun.hospital.codes import FEVER_CLINIC, SERVICE_CHARACTERISTIC

    characteristic = {"coding": [{"system": SERVICE_CHARACTERISTIC, "code": FEVER_CLINIC, "display": "发热门诊"}],
                      "text": "发热门诊"}
    for r in resources:
        if r["resourceType"] == "HealthcareService" and r["id"].endswith("-infectious"):
            service = dict(r)
            service["characteristic"] = [*(r.get("characteristic") or []), characteristic]
            service["comment"] = "发热患者请先到发热门诊就诊，24小时开放"
            await repo.update("HealthcareService", r["id"], service)
            return 1
    known = next((v for k, v in FEVER_CLINICS.items() if tenant.slug.endswith(k)), None)
    if known is None:
        return 0
    name, all_day = known
    hours = [{"allDay": True}] if all_day else [
        {"daysOfWeek": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
         "availableStartTime": "08:00:00", "availableEndTime": "17:30:00"}]
    await repo.update("HealthcareService", f"hs-fever-{tenant.slug}"[:64], {
        "resourceType": "HealthcareService",
        "id": f"hs-fever-{tenant.slug}"[:64],
        "active": True,
        "providedBy": {"reference": f"Organization/{tenant.organization_id}", "display": tenant.name},
        "category": [{"text": "门诊"}],
        "type": [{"text": name}],
        "characteristic": [characteristic],
        "location": [{"reference": f"Location/loc-{tenant.slug}", "display": tenant.name}],
        "name": name,
        "comment": "发热患者请先到发热门诊（诊室）就诊" + ("，24小时开放" if all_day else ""),
        "appointmentRequired": False,
        "availableTime": hours,
    })
    return 1


async def _online_service(repo: FhirRepository, tenant, resources: list[dict]) -> None:
    from yiyun.hospital.codes import ONLINE_SERVICE, SERVICE_CHARACTERISTIC

    if not any(r["resourceType"] == "HealthcareService" and r.get("characteristic") for r in resources):
        return
    sid = f"hs-online-{tenant.slug}"[:64]
    await repo.update("HealthcareService", sid, {
        "resourceType": "HealthcareService",
        "id": sid,
        "active": True,
        "providedBy": {"reference": f"Organization/{tenant.organization_id}", "display": tenant.name},
        "category": [{"text": "互联网诊疗"}],
        "type": [{"text": "互联网医院"}],
        "characteristic": [{"coding": [{"system": SERVICE_CHARACTERISTIC, "code": ONLINE_SERVICE,
                                        "display": "在线问诊"}], "text": "在线复诊（图文、视频）"}],
        "name": f"{tenant.name}互联网医院",
        "comment": "已在本院确诊的常见病、慢性病复诊可在线问诊；首诊请到医院就诊（互联网诊疗管理办法（试行））",
        "appointmentRequired": True,
        "availableTime": [{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                           "availableStartTime": "08:00:00", "availableEndTime": "22:00:00"}],
    })


async def _schedules(repo: FhirRepository, tenant, resources: list[dict]) -> int:
    from yiyun.hospital import schedules
    from yiyun.hospital.codes import EXT_INTRODUCTION

    practitioners = {r["id"]: r for r in resources if r["resourceType"] == "Practitioner"}
    services = {r["id"]: r for r in resources if r["resourceType"] == "HealthcareService"}
    doctors = [r for r in resources if r["resourceType"] == "PractitionerRole" and r.get("healthcareService")
               and any(c.get("code") == "doctor" for cc in r.get("code") or [] for c in cc.get("coding") or [])]
    made = 0
    for index, role in enumerate(doctors):
        service_id = role["healthcareService"][0]["reference"].split("/", 1)[1]
        service = services.get(service_id, {})
        if any(service_id.endswith(f"-{k}") for k in WALK_IN_DEPARTMENTS):
            continue
        prac = practitioners.get(role["practitioner"]["reference"].split("/", 1)[1], {})
        code = _title_code(prac) or "attending-physician"
        title = ((prac.get("qualification") or [{}])[0].get("code") or {}).get("text", "")
        department = (service.get("type") or [{}])[0].get("text", "")
        role = {**role, "extension": [{"url": EXT_INTRODUCTION,
                                       "valueMarkdown": _introduction(prac, department, title)}]}
        await repo.update("PractitionerRole", role["id"], role)
        fee = FEE_BY_TITLE.get(code, 2000)
        clinic = await schedules.create_schedule(repo, role["id"], "clinic", fee_fen=fee)
        made += 1
        await _templates(repo, tenant.slug, clinic.res_id, [
            ([index % 5 + 1, (index + 2) % 5 + 1], "08:00", "12:00", 30),
            ([(index + 4) % 5 + 1], "14:00", "17:00", 30),
            ([6] if index % 3 == 0 else [], "08:00", "12:00", 30),
        ])
        if not service.get("characteristic"):
            continue  # no Internet follow-up in this department
        text = await schedules.create_schedule(repo, role["id"], "online-text", fee_fen=fee)
        made += 1
        await _templates(repo, tenant.slug, text.res_id, [([(index + 1) % 5 + 1, (index + 3) % 5 + 1],
                                                           "19:00", "21:00", 15)])
        if code in ("chief-physician", "associate-chief-physician"):
            video = await schedules.create_schedule(repo, role["id"], "online-video", fee_fen=fee)
            made += 1
            await _templates(repo, tenant.slug, video.res_id, [([(index + 2) % 7 + 1], "20:00", "21:00", 15)])
    return made


async def _templates(repo: FhirRepository, tenant: str, schedule_id: str, sessions) -> None:
    from yiyun.hospital import schedules

    if await schedules.templates_of(repo.conn, tenant, [schedule_id]):
        return  # already configured
    for weekdays, start, end, minutes in sessions:
        if weekdays:
            await schedules.add_template(repo.conn, tenant, schedule_id, weekdays=weekdays, start=start, end=end,
                                         slot_minutes=minutes)
