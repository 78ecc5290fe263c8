"""The administrator's daily view: bookings, cancellations, no-shows, free capacity and
waiting times of one local day, by department and consultation type.

    view = await daily_view(repo, day)      # repo: the hospital's repository

Waiting time is measured from the booked start to the start of the Encounter that
references the Appointment (`Encounter.appointment`), for visits that have one; lead time
is from booking (`Appointment.created`) to the booked start.

Online consultations (`online_waiting`): for those created (queued) that local day, the
minutes from creation to a doctor accepting it, median and 90th percentile (nearest rank)
per department, with how many are still waiting and how many were given up unanswered.
The department is the consultation's own, else that of the accepting doctor's role.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

from sqlalchemy import select

from yiyun.fhir.repository import FhirRepository
from yiyun.hospital.booking import participant_ids
from yiyun.hospital.codes import CONSULTATION_TYPES, EXT_DEPARTMENT, consultation_type_of, local_moment, parse_instant, to_us
from yiyun.hospital.consultation_models import consult_session

PAGE = 1000


async def _all(repo: FhirRepository, res_type: str, params: list[tuple[str, str]]) -> list[dict]:
    out: list[dict] = []
    params = [*params, ("_count", str(PAGE))]
    while True:
        result = await repo.search(res_type, params)
        out.extend(s.resource for s in result.matches)
        if result.next_params is None or not result.matches:
            return out
        params = result.next_params


def _minutes(a: str | None, b: str | None) -> float | None:
    x, y = parse_instant(a), parse_instant(b)
    return (y - x).total_seconds() / 60 if x and y else None


def _stats(values: list[float]) -> dict:
    if not values:
        return {"count": 0, "mean": None, "median": None}
    return {"count": len(values), "mean": round(statistics.fmean(values), 1),
            "median": round(statistics.median(values), 1)}


async def daily_view(repo: FhirRepository, day: date, service_names: dict[str, str] | None = None) -> dict:
    lo = local_moment(day, datetime.min.time())
    hi = lo + timedelta(days=1)
    bounds = [("date", f"ge{lo.isoformat()}"), ("date", f"lt{hi.isoformat()}")]
    appts = await _all(repo, "Appointment", bounds)
    slots = await _all(repo, "Slot", [("start", f"ge{lo.isoformat()}"), ("start", f"lt{hi.isoformat()}")])
    encounters = await _all(repo, "Encounter", bounds)
    by_status = Counter(a.get("status") for a in appts)
    by_dept: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str, Counter] = defaultdict(Counter)
    lead: list[float] = []
    start_of = {}
    for a in appts:
        dept = (participant_ids(a, "HealthcareService") or ["-"])[0]
        ctype = consultation_type_of(a) or "-"
        by_dept[dept][a.get("status")] += 1
        by_type[ctype][a.get("status")] += 1
        start_of[a.get("id")] = a.get("start")
        if a.get("status") not in ("cancelled", "entered-in-error") and (m := _minutes(a.get("created"), a.get("start"))) is not None:
            lead.append(m / 60)
    waits = []
    for e in encounters:
        for ref in e.get("appointment") or []:
            aid = (ref.get("reference") or "").split("/")[-1]
            if aid in start_of and (m := _minutes(start_of[aid], (e.get("period") or {}).get("start"))) is not None:
                waits.append(max(m, 0.0))
    slot_status = Counter(s.get("status") for s in slots)
    names = service_names or {}
    return {
        "day": day.isoformat(),
        "appointments": len(appts),
        "by_status": dict(by_status),
        "by_department": [{"id": k, "name": names.get(k, k), **dict(v), "total": sum(v.values())}
                          for k, v in sorted(by_dept.items())],
        "by_consultation_type": [{"type": k, "name": CONSULTATION_TYPES.get(k, ("-",))[0], **dict(v),
                                  "total": sum(v.values())} for k, v in sorted(by_type.items())],
        "slots": {"total": len(slots), **dict(slot_status)},
        "lead_time_hours": _stats(lead),
        "waiting_minutes": _stats(waits),
        "online_waiting": await online_waiting(repo, lo, hi, names),
    }


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p% of values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n·p/100)
    return ordered[int(rank) - 1]


async def _department_services(repo: FhirRepository) -> dict[str, str]:
    """Practitioner/<id> (for consultations with no department) and Organization/<id> (a
    department named by its Organization) → the HealthcareService id of that department."""
    out: dict[str, str] = {}
    for s in await _all(repo, "HealthcareService", []):
        for ext in s.get("extension") or []:
            if ext.get("url") == EXT_DEPARTMENT and (ref := (ext.get("valueReference") or {}).get("reference")):
                out.setdefault(ref, s["id"])
    roles = await _all(repo, "PractitionerRole", [])
    for r in roles:
        prac = ((r.get("practitioner") or {}).get("reference") or "").removeprefix("Practitioner/")
        service = next((hs.get("reference", "").removeprefix("HealthcareService/")
                        for hs in r.get("healthcareService") or []), None)
        if prac and service:
            out.setdefault(f"Practitioner/{prac}", service)
    return out


async def online_waiting(repo: FhirRepository, lo: datetime, hi: datetime, names: dict[str, str]) -> list[dict]:
    c = consult_session.c
    rows = (await repo.conn.execute(select(c.department, c.doctor_id, c.state, c.created_us, c.accepted_us).where(
        c.tenant == repo.ctx.tenant, c.created_us >= to_us(lo), c.created_us < to_us(hi)))).all()
    if not rows:
        return []
    services = await _department_services(repo)
    groups: dict[str, dict] = defaultdict(lambda: {"waits": [], "waiting": 0, "abandoned": 0, "total": 0})
    for r in rows:
        dept = r.department or ""
        dept = services.get(dept, dept).removeprefix("HealthcareService/") or services.get(
            f"Practitioner/{r.doctor_id}", "-")
        g = groups[dept]
        g["total"] += 1
        if r.accepted_us is not None:
            g["waits"].append(max(r.accepted_us - r.created_us, 0) / 60_000_000)
        elif r.state == "waiting":
            g["waiting"] += 1
        else:
            g["abandoned"] += 1
    out = []
    for dept, g in sorted(groups.items()):
        waits = g["waits"]
        out.append({"id": dept, "name": names.get(dept, dept), "consultations": g["total"], "accepted": len(waits),
                    "still_waiting": g["waiting"], "unanswered": g["abandoned"],
                    "median_minutes": round(statistics.median(waits), 1) if waits else None,
                    "p90_minutes": round(percentile(waits, 90), 1) if waits else None})
    return out
