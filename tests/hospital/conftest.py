"""A small hospital for booking tests: one department, two doctors, patients and Slots.

Personas: patient Zhang (pat-zhang) and his daughter (pat-zhang-child, he is her
guardian), outsider Wang (pat-wang), doctor Li (role-li).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest_asyncio

from tests.conftest import auth_headers
from tests.hospital.people import verify_patients

FHIR = "/fhir/R4"


@dataclass
class Hospital:
    tenant: str
    service: str = "hs-resp"
    role: str = "role-li"
    other_role: str = "role-zhao"
    schedule: str = ""
    online_schedule: str = ""
    first_day: date | None = None
    slots: list[dict] = field(default_factory=list)  # free clinic slots, earliest first

    def patient_headers(self, patient: str = "pat-zhang") -> dict[str, str]:
        return auth_headers(self.tenant, scope="patient/*.cruds", subject=f"user:{patient}", roles=("patient",),
                            patient=patient, fhir_user=f"Patient/{patient}")

    def staff_headers(self, role: str = "doctor") -> dict[str, str]:
        return auth_headers(self.tenant, scope="user/*.cruds", subject="user:dr-li", roles=(role,),
                            fhir_user="Practitioner/prac-li")


def directory(tenant: str) -> list[dict]:
    org = {"resourceType": "Organization", "id": "org-h", "name": "测试医院", "active": True}
    dept = {"resourceType": "Organization", "id": "dept-resp", "name": "呼吸内科", "partOf": {"reference": "Organization/org-h"}}
    loc = {"resourceType": "Location", "id": "loc-h", "name": "测试医院", "status": "active",
           "position": {"longitude": 112.98, "latitude": 28.19}, "managingOrganization": {"reference": "Organization/org-h"}}
    hs = {"resourceType": "HealthcareService", "id": "hs-resp", "active": True, "name": "呼吸内科门诊",
          "providedBy": {"reference": "Organization/org-h"},
          "type": [{"text": "呼吸内科"}], "specialty": [{"text": "呼吸内科"}],
          "location": [{"reference": "Location/loc-h"}]}
    out = [org, dept, loc, hs]
    for pid, name, title in (("prac-li", "李医生", "主任医师"), ("prac-zhao", "赵医生", "主治医师")):
        out.append({"resourceType": "Practitioner", "id": pid, "active": True, "name": [{"text": name}],
                    "qualification": [{"code": {"text": title}}]})
        out.append({"resourceType": "PractitionerRole", "id": pid.replace("prac", "role"), "active": True,
                    "practitioner": {"reference": f"Practitioner/{pid}", "display": name},
                    "organization": {"reference": "Organization/org-h"},
                    "specialty": [{"text": "呼吸内科"}],
                    "healthcareService": [{"reference": "HealthcareService/hs-resp", "display": "呼吸内科门诊"}]})
    for pid, name in (("pat-zhang", "张三"), ("pat-zhang-child", "张小三"), ("pat-wang", "王五")):
        out.append({"resourceType": "Patient", "id": pid, "active": True, "name": [{"text": name}]})
    out.append({"resourceType": "RelatedPerson", "id": "rp-zhang-child", "active": True,
                "patient": {"reference": "Patient/pat-zhang-child"},
                "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                              "code": "FTH"}], "text": "父亲"}],
                "extension": [{"url": "https://yiyun.example.cn/fhir/StructureDefinition/guardian-patient",
                               "valueReference": {"reference": "Patient/pat-zhang"}}]})
    return out


async def build_hospital(repo_factory, tenant: str, *, days: int = 3, slot_minutes: int = 30) -> Hospital:
    from yiyun.hospital import schedules
    from yiyun.hospital.codes import today_local

    from yiyun.identity.accounts import create_tenant

    h = Hospital(tenant)
    async with repo_factory() as repo:
        await create_tenant(repo.conn, tenant, name="测试医院", kind="hospital")
        for r in directory(tenant):
            await repo.update(r["resourceType"], r["id"], r)
        sched = await schedules.create_schedule(repo, h.role, "clinic", fee_fen=2500)
        online = await schedules.create_schedule(repo, h.role, "online-text", fee_fen=3000)
        await schedules.create_schedule(repo, h.other_role, "clinic", fee_fen=1500)
        h.schedule, h.online_schedule = sched.res_id, online.res_id
        every_day = [1, 2, 3, 4, 5, 6, 7]
        await schedules.add_template(repo.conn, tenant, h.schedule, weekdays=every_day, start="08:00", end="12:00",
                                     slot_minutes=slot_minutes)
        await schedules.add_template(repo.conn, tenant, h.online_schedule, weekdays=every_day, start="19:00",
                                     end="21:00", slot_minutes=slot_minutes)
        h.first_day = today_local() + timedelta(days=1)
        await schedules.generate_slots(repo, start_day=h.first_day, days=days)
        h.slots = await schedules.find_slots(repo, h.schedule)
    return h


@pytest_asyncio.fixture
async def hospital(repo_factory, tenant, engine):
    from yiyun.fhir.hooks import register_write_hook
    from yiyun.hospital.booking import appointment_write_hook

    register_write_hook("Appointment", appointment_write_hook)
    h = await build_hospital(repo_factory, tenant)
    await verify_patients(engine, tenant, {"pat-zhang": "张三", "pat-wang": "王五"})
    return h


def book_parameters(slot_id: str, patient: str = "pat-zhang", status: str = "proposed") -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "appointment", "resource": {
        "resourceType": "Appointment", "status": status,
        "slot": [{"reference": f"Slot/{slot_id}"}],
        "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}],
    }}]}
