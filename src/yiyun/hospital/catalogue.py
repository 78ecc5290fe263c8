"""The region's hospitals, departments and doctors for patients to browse and search.

Directory data (Organization, Location, HealthcareService, PractitionerRole, Practitioner,
Schedule) is public information about a hospital, so it is read with a system repository
of each hospital's tenant (see `directory_repo`); patients' data is never read here.
A hospital's directory is cached in process for `CACHE_SECONDS` (and dropped when this
module changes it); free Slots are always read live.

Service API (plain async functions; `conn` is a connection of a unit of work):

    hospitals  = await list_hospitals(conn)                         # [dict]
    hospital   = await get_hospital(conn, slug)                     # dict with departments
    depts      = await list_departments(conn, slug)                 # [dict]
    doctors    = await list_doctors(conn, slug, department=None, consultation_type=None, q=None)
    doctor     = await get_doctor(conn, slug, role_id, days=7)      # with free slots by day
    result     = await search(conn, q)                              # hospitals, departments, doctors, disease
    slots      = await free_slots(conn, slug, schedule_ids, start=None, days=7, count=...)
    invalidate(slug)                                                 # after directory changes
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest, NotFound
from yiyun.fhir.ids import is_valid_id
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital.codes import (
    CONSULTATION_TYPES,
    EXT_INTRODUCTION,
    FEVER_CLINIC,
    ONLINE_TYPES,
    SERVICE_CHARACTERISTIC,
    consultation_type_of,
    fee_fen,
    instant,
    ref_id,
)

HOSPITAL_KINDS = ("hospital", "clinic")
CACHE_SECONDS = 30.0


def directory_repo(conn: AsyncConnection, tenant: str) -> FhirRepository:
    """A system repository of `tenant` for its public directory (and, in booking, for the
    writes this module has already authorised)."""
    return FhirRepository(conn, RequestContext(tenant=tenant, subject="system:hospital-directory"), validate=False)


@dataclass
class Directory:
    slug: str
    name: str
    kind: str
    organization: dict | None = None
    location: dict | None = None
    services: dict[str, dict] = field(default_factory=dict)
    roles: dict[str, dict] = field(default_factory=dict)
    practitioners: dict[str, dict] = field(default_factory=dict)
    schedules: dict[str, dict] = field(default_factory=dict)
    built: float = 0.0

    def schedules_of_role(self, role_id: str) -> list[tuple[str, dict]]:
        return [(sid, s) for sid, s in self.schedules.items() if s.get("active") is not False
                and f"PractitionerRole/{role_id}" in {a.get("reference") for a in s.get("actor") or []}]

    def service_of_role(self, role: dict) -> str | None:
        for hs in role.get("healthcareService") or []:
            sid = ref_id(hs, "HealthcareService")
            if sid in self.services:
                return sid
        return None


_cache: dict[tuple[str, str], Directory] = {}


def invalidate(slug: str | None = None) -> None:
    for key in list(_cache):
        if slug is None or key[1] == slug:
            del _cache[key]


async def _all(repo: FhirRepository, res_type: str, params: list[tuple[str, str]] | None = None) -> list[dict]:
    out, page = [], [*(params or []), ("_count", "1000")]
    result = await repo.search(res_type, page)
    out.extend(s.resource for s in result.matches)
    return out


async def _tenants(conn: AsyncConnection) -> list:
    from yiyun.identity.accounts import list_tenants

    return [t for t in await list_tenants(conn) if t.kind in HOSPITAL_KINDS and t.active]


async def load_directory(conn: AsyncConnection, slug: str) -> Directory:
    key = (str(conn.engine.url), slug)
    cached = _cache.get(key)
    if cached is not None and time.monotonic() - cached.built < CACHE_SECONDS:
        return cached
    from yiyun.identity.accounts import get_tenant

    if not is_valid_id(slug):
        raise NotFound(f"未找到医院 {slug!r} (hospital not found)")
    tenant = await get_tenant(conn, slug)
    if tenant.kind not in HOSPITAL_KINDS:
        raise NotFound(f"{tenant.name} 不是医疗机构 (not a hospital)")
    repo = directory_repo(conn, slug)
    d = Directory(slug, tenant.name, tenant.kind)
    orgs = await _all(repo, "Organization", [("active", "true")])
    tops = [o for o in orgs if not o.get("partOf")]
    d.organization = tops[0] if tops else None
    locations = await _all(repo, "Location")
    d.location = next((loc for loc in locations if loc.get("position")), locations[0] if locations else None)
    d.services = {s["id"]: s for s in await _all(repo, "HealthcareService") if s.get("active") is not False}
    d.roles = {r["id"]: r for r in await _all(repo, "PractitionerRole", [("active", "true")])}
    d.practitioners = {p["id"]: p for p in await _all(repo, "Practitioner")}
    d.schedules = {s["id"]: s for s in await _all(repo, "Schedule")}
    d.built = time.monotonic()
    _cache[key] = d
    return d


# ------------------------------------------------------------------ shaping
def _grade(org: dict | None) -> str | None:
    for ext in (org or {}).get("extension") or []:
        if ext.get("url", "").endswith("/hospital-grade"):
            return (ext.get("valueCoding") or {}).get("display")
    return None


def _phone(resource: dict | None) -> str | None:
    for t in (resource or {}).get("telecom") or []:
        if t.get("system") == "phone":
            return t.get("value")
    return None


def _position(d: Directory) -> dict | None:
    pos = (d.location or {}).get("position")
    if not pos:
        return None
    return {"latitude": pos.get("latitude"), "longitude": pos.get("longitude")}


def is_fever_clinic(service: dict) -> bool:
    return any(c.get("system") == SERVICE_CHARACTERISTIC and c.get("code") == FEVER_CLINIC
               for ch in service.get("characteristic") or [] for c in ch.get("coding") or [])


def hospital_summary(d: Directory) -> dict:
    org = d.organization or {}
    address = (org.get("address") or [{}])[0].get("text")
    types = {t for s in d.schedules.values() if s.get("active") is not False and (t := consultation_type_of(s))}
    return {
        "slug": d.slug,
        "name": org.get("name") or d.name,
        "alias": (org.get("alias") or [None])[0],
        "kind": d.kind,
        "grade": _grade(org),
        "address": address,
        "phone": _phone(org),
        "position": _position(d),
        "departments": sum(1 for s in d.services.values() if not is_fever_clinic(s)),
        "doctors": len(doctor_roles(d)),
        "fever_clinic": any(is_fever_clinic(s) for s in d.services.values()),
        "online": bool(types & set(ONLINE_TYPES)),
    }


def _department_name(service: dict) -> str:
    for t in service.get("type") or []:
        if t.get("text"):
            return t["text"]
    return (service.get("name") or "").removesuffix("门诊")


def department_summary(d: Directory, service_id: str) -> dict:
    s = d.services[service_id]
    roles = [rid for rid, r in doctor_roles(d).items() if d.service_of_role(r) == service_id]
    types = sorted({t for rid in roles for _, sch in d.schedules_of_role(rid) if (t := consultation_type_of(sch))},
                   key=list(CONSULTATION_TYPES).index)
    return {
        "id": service_id,
        "hospital": d.slug,
        "name": _department_name(s),
        "service_name": s.get("name"),
        "phone": _phone(s),
        "comment": s.get("comment"),
        "appointment_required": s.get("appointmentRequired"),
        "fever_clinic": is_fever_clinic(s),
        "doctors": len(roles),
        "consultation_types": [{"code": t, "name": CONSULTATION_TYPES[t][0]} for t in types],
        "opening_hours": opening_hours(s),
    }


_DAY_NAMES = {"mon": "周一", "tue": "周二", "wed": "周三", "thu": "周四", "fri": "周五", "sat": "周六", "sun": "周日"}


def opening_hours(service: dict) -> list[str]:
    out = []
    for t in service.get("availableTime") or []:
        if t.get("allDay"):
            days = t.get("daysOfWeek")
            out.append(("、".join(_DAY_NAMES.get(x, x) for x in days) + " " if days else "") + "24小时")
            continue
        days = "、".join(_DAY_NAMES.get(x, x) for x in t.get("daysOfWeek") or [])
        start, end = (t.get("availableStartTime") or "")[:5], (t.get("availableEndTime") or "")[:5]
        out.append(f"{days} {start}–{end}".strip())
    return out


def doctor_roles(d: Directory) -> dict[str, dict]:
    """Roles of doctors (not nurses or pharmacists) who see patients in a department."""
    out = {}
    for rid, r in d.roles.items():
        codes = {c.get("code") for cc in r.get("code") or [] for c in cc.get("coding") or []}
        if codes and "doctor" not in codes:
            continue
        if d.service_of_role(r) is None:
            continue
        out[rid] = r
    return out


def _title(practitioner: dict) -> str | None:
    for q in practitioner.get("qualification") or []:
        code = q.get("code") or {}
        if code.get("text"):
            return code["text"]
        for c in code.get("coding") or []:
            if c.get("display"):
                return c["display"]
    return None


def _name(resource: dict) -> str:
    for n in resource.get("name") or []:
        if n.get("text"):
            return n["text"]
        return (n.get("family") or "") + "".join(n.get("given") or [])
    return ""


def _introduction(role: dict, practitioner: dict) -> str | None:
    for source in (role, practitioner):
        for ext in source.get("extension") or []:
            if ext.get("url") == EXT_INTRODUCTION and ext.get("valueMarkdown" if "valueMarkdown" in ext else "valueString"):
                return ext.get("valueMarkdown") or ext.get("valueString")
    return None


def doctor_summary(d: Directory, role_id: str, next_slots: list[dict] | None = None) -> dict:
    role = d.roles[role_id]
    pid = ref_id(role.get("practitioner"), "Practitioner")
    prac = d.practitioners.get(pid or "", {})
    service_id = d.service_of_role(role)
    services = []
    for sid, sched in d.schedules_of_role(role_id):
        t = consultation_type_of(sched)
        if t is None:
            continue
        services.append({"schedule": sid, "type": t, "name": CONSULTATION_TYPES[t][0], "fee_fen": fee_fen(sched)})
    services.sort(key=lambda s: list(CONSULTATION_TYPES).index(s["type"]))
    specialty = [s.get("text") for s in role.get("specialty") or [] if s.get("text")]
    return {
        "id": role_id,
        "hospital": d.slug,
        "hospital_name": hospital_summary(d)["name"],
        "practitioner": pid,
        "name": _name(prac) or (role.get("practitioner") or {}).get("display"),
        "gender": prac.get("gender"),
        "title": _title(prac),
        "specialty": specialty,
        "department": _department_name(d.services[service_id]) if service_id else None,
        "department_id": service_id,
        "introduction": _introduction(role, prac),
        "services": services,
        "rating": None,  # filled from patients' ratings by `with_ratings`
        "next_slots": next_slots or [],
    }


async def with_ratings(conn: AsyncConnection, slug: str, docs) -> None:
    """Each doctor's average stars and count from patients' ratings of their consultations
    (read live: one grouped query per list)."""
    from yiyun.hospital.consultations.ratings import doctor_ratings, summary_of

    docs = list(docs)
    scores = await doctor_ratings(conn, slug, [doc["practitioner"] for doc in docs])
    for doc in docs:
        doc["rating"] = scores.get(doc["practitioner"]) or summary_of(None, 0)


# ------------------------------------------------------------------ slots
def slot_summary(slot: dict) -> dict:
    return {"id": slot.get("id"), "schedule": ref_id(slot.get("schedule"), "Schedule"), "start": slot.get("start"),
            "end": slot.get("end"), "status": slot.get("status"), "type": consultation_type_of(slot)}


async def free_slots(conn: AsyncConnection, slug: str, schedule_ids: list[str], *, start: datetime | None = None,
                     days: int = 7, count: int = 500) -> list[dict]:
    """Free Slots of these Schedules from `start` (default now) for `days` days, earliest first."""
    if not schedule_ids:
        return []
    start = start or datetime.now(timezone.utc)
    end = start + timedelta(days=days)
    repo = directory_repo(conn, slug)
    result = await repo.search("Slot", [
        ("schedule", ",".join(f"Schedule/{s}" for s in schedule_ids)), ("status", "free"),
        ("start", f"gt{instant(start)}"), ("start", f"lt{instant(end)}"), ("_sort", "start"),
        ("_count", str(count))])
    return [slot_summary(s.resource) for s in result.matches]


# Lists show each doctor's next free slots from a cache of NEXT_SLOTS_SECONDS: a list is
# read far more often than slots change, and a slot taken meanwhile is refused clearly at
# booking (409). The doctor's own page and booking always read live. Bookings and
# cancellations in this process drop the hospital's entries at once.
NEXT_SLOTS_SECONDS = 5.0
_next_cache: dict[tuple[str, str, str, int, int], tuple[float, list[dict]]] = {}


def slots_changed(slug: str, schedule: str | None = None, *, taken: str | None = None) -> None:
    """Drop cached next-slot lists of the hospital, or of one of its Schedules. A slot
    `taken` changes only the lists that show it: at a busy hour every booking would
    otherwise make the next doctor list search every doctor's slots again."""
    for key, (_, listed) in list(_next_cache.items()):
        if key[1] != slug or (schedule is not None and key[2] != schedule):
            continue
        if taken is not None and all(s.get("id") != taken for s in listed):
            continue
        _next_cache.pop(key, None)


async def next_free_slots(conn: AsyncConnection, slug: str, schedule_ids: list[str], *, per: int = 3,
                          days: int = 7) -> dict[str, list[dict]]:
    """The next `per` free Slots of each Schedule (one small search each, cached briefly)."""
    now = time.monotonic()
    out: dict[str, list[dict]] = {}
    missing = []
    for sid in schedule_ids:
        hit = _next_cache.get((str(conn.engine.url), slug, sid, per, days))
        if hit is not None and now - hit[0] < NEXT_SLOTS_SECONDS:
            out[sid] = hit[1]
        else:
            missing.append(sid)
    start = datetime.now(timezone.utc)
    end = start + timedelta(days=days)
    repo = directory_repo(conn, slug)
    for sid in missing:
        result = await repo.search("Slot", [
            ("schedule", f"Schedule/{sid}"), ("status", "free"), ("start", f"gt{instant(start)}"),
            ("start", f"lt{instant(end)}"), ("_sort", "start"), ("_count", str(per))])
        out[sid] = [slot_summary(s.resource) for s in result.matches]
        _next_cache[(str(conn.engine.url), slug, sid, per, days)] = (now, out[sid])
    return out


# ------------------------------------------------------------------ services
async def list_hospitals(conn: AsyncConnection) -> list[dict]:
    return [hospital_summary(await load_directory(conn, t.slug)) for t in await _tenants(conn)]


async def get_hospital(conn: AsyncConnection, slug: str) -> dict:
    d = await load_directory(conn, slug)
    return {**hospital_summary(d), "departments": await list_departments(conn, slug)}


async def list_departments(conn: AsyncConnection, slug: str) -> list[dict]:
    d = await load_directory(conn, slug)
    return sorted((department_summary(d, sid) for sid in d.services), key=lambda x: (x["fever_clinic"], x["name"]))


def _matches(doc: dict, q: str) -> bool:
    hay = " ".join(str(x) for x in (doc["name"], doc["department"], doc["title"], *doc["specialty"]) if x)
    return q in hay


async def list_doctors(conn: AsyncConnection, slug: str, *, department: str | None = None,
                       consultation_type: str | None = None, q: str | None = None, next_count: int = 3,
                       days: int = 7) -> list[dict]:
    """Doctors of a hospital with their consultation types, fees and next free slots."""
    if consultation_type is not None and consultation_type not in CONSULTATION_TYPES:
        raise BadRequest(f"未知的问诊类型 {consultation_type!r} (unknown consultation type)")
    d = await load_directory(conn, slug)
    if department is not None and department not in d.services:
        raise NotFound(f"未找到科室 {department!r} (department not found)")
    roles = [rid for rid, r in doctor_roles(d).items() if department is None or d.service_of_role(r) == department]
    docs = {rid: doctor_summary(d, rid) for rid in roles}
    if q:
        docs = {rid: doc for rid, doc in docs.items() if _matches(doc, q)}
    if consultation_type:
        docs = {rid: doc for rid, doc in docs.items() if any(s["type"] == consultation_type for s in doc["services"])}
    schedule_ids = [s["schedule"] for doc in docs.values() for s in doc["services"]
                    if consultation_type is None or s["type"] == consultation_type]
    by_schedule = await next_free_slots(conn, slug, schedule_ids, per=next_count, days=days)
    for doc in docs.values():
        nxt = sorted((s for sv in doc["services"] for s in by_schedule.get(sv["schedule"], [])),
                     key=lambda s: s["start"])
        doc["next_slots"] = nxt[:next_count]
    await with_ratings(conn, slug, docs.values())
    return sorted(docs.values(), key=lambda doc: (doc["department"] or "", doc["name"] or ""))


async def get_doctor(conn: AsyncConnection, slug: str, role_id: str, *, days: int = 7) -> dict:
    d = await load_directory(conn, slug)
    if role_id not in doctor_roles(d):
        raise NotFound(f"未找到医生 {role_id!r} (doctor not found)")
    doc = doctor_summary(d, role_id)
    await with_ratings(conn, slug, [doc])
    slots = await free_slots(conn, slug, [s["schedule"] for s in doc["services"]], days=days, count=1000)
    doc["next_slots"] = slots[:3]
    doc["slots"] = slots
    return doc


async def search(conn: AsyncConnection, q: str, *, limit: int = 30) -> dict:
    """Hospitals, departments and doctors whose names match `q`; when `q` names a disease
    (or an alias of one), the departments that treat it (the knowledge base's
    disease → department data) and their doctors."""
    q = (q or "").strip()
    if not q or len(q) > 50:
        raise BadRequest("请输入 1–50 个字的检索词 (query of 1 to 50 characters)")
    disease = _disease_departments(q)
    hospitals, departments, doctors = [], [], []
    for t in await _tenants(conn):
        d = await load_directory(conn, t.slug)
        summary = hospital_summary(d)
        if q in (summary["name"] or "") or q in (summary["alias"] or ""):
            hospitals.append(summary)
        for sid in d.services:
            dept = department_summary(d, sid)
            if q in dept["name"] or (disease and _treats(dept["name"], disease["departments"])):
                departments.append(dept)
        wanted = {x["id"] for x in departments if x["hospital"] == t.slug}
        found = []
        for rid, role in doctor_roles(d).items():
            doc = doctor_summary(d, rid)
            if _matches(doc, q) or d.service_of_role(role) in wanted:
                found.append(doc)
        await with_ratings(conn, t.slug, found)
        doctors.extend(found)
    return {"query": q, "disease": disease, "hospitals": hospitals[:limit], "departments": departments[:limit],
            "doctors": doctors[:limit]}


def _disease_departments(q: str) -> dict | None:
    from yiyun.knowledge.service import get_kb

    kb = get_kb()
    disease = kb.disease(q)
    if disease is None:
        return None
    names = list(disease.departments)
    for name in list(names):
        dept = kb.department(name)
        if dept is not None and dept.parent and dept.parent not in names:
            names.append(dept.parent)
    return {"name": disease.name, "departments": names}


def _treats(department_name: str, names: list[str]) -> bool:
    # hospital department names may carry a qualifier (感染性疾病科（发热门诊）); 妇产科 covers 妇科 and 产科
    base = department_name.split("（")[0]
    return any(base == n or base.startswith(n) or (base == "妇产科" and n in ("妇科", "产科")) for n in names)
