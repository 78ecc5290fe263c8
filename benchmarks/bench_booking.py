"""Booking benchmark: 200 concurrent patients against one server process, SQLite and PostgreSQL.

Phases (each on its own day of slots, so the one-booking-per-department-a-day rule never
refuses a patient):

- distinct:  200 patients book 200 different slots at once through the JSON API;
- contended: 200 patients race for 20 slots (10 per slot) through the JSON API;
- fhir:      200 `POST Appointment/$book` by a hospital system on 200 different slots;
- paced:     200 patients arriving at a steady rate (--paced-rate, default 25/s; JSON API);
- patients:  (run first) 200 concurrent patients, each a session as a load-testing tool models a user
             (Locust's `wait_time = between(1, 3)`): started 20 a second, each opens the
             doctor list, thinks 1–3 s, opens a doctor's slots for the day, thinks, books one of
             the first free slots (another patient may take it first: then they reload and
             choose again, at most 3 times), thinks, and opens their bookings. This is the
             headline figure for "200 concurrent patients"; the bursts above are stress tests
             (200 bookings sent in the same instant queue behind one another);
- doctor list: the patient's doctor list (`GET /api/hospital/directory/hospitals/{slug}/doctors`)
  sequentially and 20 at a time.

Reports bookings/s, latency percentiles, and double bookings counted in the database
afterwards (active Appointments per Slot > 1, or a booked Slot not marked busy). Saves
`benchmarks/results/booking.json`.

    .venv/bin/python benchmarks/bench_booking.py [--backends sqlite,postgresql] [--patients 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, drop_database, machine_info, new_database, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
HOSPITAL = "bench-hospital"
SECRET = os.environ.setdefault("YIYUN_SECRET_KEY", "bench-signing-key-" + uuid.uuid4().hex)
DOCTORS = 10


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 1)


def latency(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": pct(values, 0.5), "p95_ms": pct(values, 0.95), "p99_ms": pct(values, 0.99),
            "mean_ms": round(statistics.fmean(values), 1), "max_ms": round(max(values), 1)}


def token(**claims) -> dict[str, str]:
    from yiyun.identity.tokens import issue_access_token

    tok, _ = issue_access_token(tenant=HOSPITAL, minutes=24 * 60, **claims)
    return {"Authorization": f"Bearer {tok}"}


async def search_all(repo, res_type: str, params: list[tuple[str, str]]) -> list:
    out, params = [], [*params, ("_count", "1000")]
    while True:
        result = await repo.search(res_type, params)
        out.extend(result.matches)
        if result.next_params is None or not result.matches:
            return out
        params = result.next_params


async def seed(db_url: str, patients: int) -> dict:
    """A hospital with one department, DOCTORS doctors, each with 5-minute clinic slots
    08:00–18:00 on the next three days, and the patients."""
    from yiyun.core.db import create_engine_for, refresh_statistics, unit_of_work
    from yiyun.fhir.model import RequestContext
    from yiyun.fhir.repository import FhirRepository
    from yiyun.hospital import booking, schedules
    from yiyun.hospital.codes import today_local
    from yiyun.identity.accounts import create_tenant

    engine = create_engine_for(db_url)
    first = today_local() + timedelta(days=1)
    async with unit_of_work(engine) as conn:
        await create_tenant(conn, HOSPITAL, name="压测医院", kind="hospital")
        await booking.set_rules(conn, HOSPITAL, max_active_per_day=5)
        repo = FhirRepository(conn, RequestContext(tenant=HOSPITAL, subject="bench"))
        base = [
            {"resourceType": "Organization", "id": "org-bench", "name": "压测医院", "active": True},
            {"resourceType": "Location", "id": "loc-bench", "name": "压测医院", "status": "active",
             "position": {"latitude": 28.19, "longitude": 112.98}},
            {"resourceType": "HealthcareService", "id": "hs-bench", "active": True, "name": "内科门诊",
             "type": [{"text": "内科"}], "providedBy": {"reference": "Organization/org-bench"}},
        ]
        for i in range(DOCTORS):
            base.append({"resourceType": "Practitioner", "id": f"prac-{i}", "name": [{"text": f"医生{i}"}],
                         "qualification": [{"code": {"text": "主治医师"}}]})
            base.append({"resourceType": "PractitionerRole", "id": f"role-{i}", "active": True,
                         "practitioner": {"reference": f"Practitioner/prac-{i}", "display": f"医生{i}"},
                         "healthcareService": [{"reference": "HealthcareService/hs-bench"}]})
        base += [{"resourceType": "Patient", "id": f"pat-{n}", "name": [{"text": f"患者{n}"}]} for n in range(patients)]
        for r in base:
            await repo.update(r["resourceType"], r["id"], r)
        for i in range(DOCTORS):
            sched = await schedules.create_schedule(repo, f"role-{i}", "clinic", fee_fen=2000)
            await schedules.add_template(conn, HOSPITAL, sched.res_id, weekdays=[1, 2, 3, 4, 5, 6, 7], start="08:00",
                                         end="18:00", slot_minutes=5)
        report = await schedules.generate_slots(repo, start_day=first, days=5)
        by_day: dict[str, list[str]] = {}
        for s in await search_all(repo, "Slot", [("_sort", "start")]):
            by_day.setdefault(s.resource["start"][:10], []).append(s.res_id)
    await refresh_statistics(engine)  # as autovacuum would: plan searches on the loaded sizes
    await engine.dispose()
    days = sorted(by_day)
    return {"slots": report.created, "days": [by_day[d] for d in days], "day_names": days}


async def timed_post(client, url, json, headers) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = await client.post(url, json=json, headers=headers)
    return r.status_code, (time.perf_counter() - t0) * 1000


async def burst(client, calls) -> dict:
    t0 = time.perf_counter()
    results = await asyncio.gather(*calls)
    wall = time.perf_counter() - t0
    codes = Counter(code for code, _ in results)
    ok = codes.get(201, 0)
    return {"requests": len(results), "booked": ok, "status_codes": dict(codes), "wall_s": round(wall, 2),
            "bookings_per_s": round(ok / wall, 1), "requests_per_s": round(len(results) / wall, 1),
            "latency": latency([ms for _, ms in results])}


async def check_double_bookings(db_url: str) -> dict:
    from yiyun.core.db import create_engine_for, unit_of_work
    from yiyun.fhir.model import RequestContext
    from yiyun.fhir.repository import FhirRepository
    from yiyun.hospital.booking import ACTIVE_STATUSES, slot_ids

    engine = create_engine_for(db_url)
    async with unit_of_work(engine, write=False) as conn:
        repo = FhirRepository(conn, RequestContext(tenant=HOSPITAL))
        appts = await search_all(repo, "Appointment", [])
        busy = await search_all(repo, "Slot", [("status", "busy")])
    await engine.dispose()
    per_slot = Counter(sid for a in appts if a.resource.get("status") in ACTIVE_STATUSES for sid in slot_ids(a.resource))
    doubles = sum(1 for n in per_slot.values() if n > 1)
    busy_ids = {s.res_id for s in busy}
    return {"active_appointments": sum(per_slot.values()), "busy_slots": len(busy_ids),
            "double_bookings": doubles, "booked_slots_not_busy": len(set(per_slot) - busy_ids)}


async def doctor_list(client, n: int = 200, concurrency: int = 20) -> dict:
    url = f"/api/hospital/directory/hospitals/{HOSPITAL}/doctors"
    await client.get(url)  # warm the directory cache
    seq = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.get(url)
        assert r.status_code == 200, r.text
        seq.append((time.perf_counter() - t0) * 1000)
    conc: list[float] = []

    async def one():
        t0 = time.perf_counter()
        await client.get(url)
        conc.append((time.perf_counter() - t0) * 1000)

    for _ in range(n // concurrency):
        await asyncio.gather(*[one() for _ in range(concurrency)])
    return {"sequential": latency(seq), f"concurrent_{concurrency}": latency(conc)}


def client_for(base: str, patients: int) -> httpx.AsyncClient:
    # a fresh client per phase: the server closes keep-alive connections idle for 5 s
    limits = httpx.Limits(max_connections=patients + 10, max_keepalive_connections=patients + 10)
    return httpx.AsyncClient(base_url=base, timeout=300, limits=limits)


async def run_phases(base: str, plan: dict, patients: int) -> dict:
    heads = [token(subject=f"user:p{n}", scope="patient/*.cruds", roles=("patient",), patient=f"pat-{n}")
             for n in range(patients)]
    system = token(subject="service:bench", scope="system/*.cruds")
    day1, day2, day3, day4 = plan["days"][:4]
    async with client_for(base, patients) as client:
        # warm up the server's code paths on a slot nobody races for
        await client.post("/api/hospital/appointments", json={"slot": day3[-1]}, headers=heads[0])
        # first, on the store as loaded and analysed: the bursts after it add 600 bookings in
        # seconds, faster than PostgreSQL's autovacuum refreshes the planner's statistics
        sessions = await patient_sessions(client, plan["day_names"][4], heads)
    async with client_for(base, patients) as client:
        distinct = await burst(client, [
            timed_post(client, "/api/hospital/appointments", {"slot": day1[n]}, heads[n]) for n in range(patients)])
    contested = day2[: patients // 10]
    async with client_for(base, patients) as client:
        contended = await burst(client, [
            timed_post(client, "/api/hospital/appointments", {"slot": contested[n % len(contested)]}, heads[n])
            for n in range(patients)])
    contended["contested_slots"] = len(contested)
    async with client_for(base, patients) as client:
        fhir = await burst(client, [
            timed_post(client, "/fhir/R4/Appointment/$book", {"resourceType": "Parameters", "parameter": [
                {"name": "appointment", "resource": {
                    "resourceType": "Appointment", "status": "proposed", "slot": [{"reference": f"Slot/{day3[n]}"}],
                    "participant": [{"actor": {"reference": f"Patient/pat-{n}"}, "status": "accepted"}]}}]},
                       system) for n in range(patients)])
    async with client_for(base, patients) as client:
        paced = await paced_bookings(client, day4, heads, PACED_RATE)
    async with client_for(base, patients) as client:
        pages = await doctor_list(client)
    return {"distinct": distinct, "contended": contended, "fhir_book": fhir, "paced": paced, "patients": sessions,
            "doctor_list": pages}


# -- 200 concurrent patients, each with a user's think time between steps
SPAWN_RATE = 20.0  # patients started per second
THINK_S = (1.0, 3.0)  # Locust's `between(1, 3)`
FIRST_FREE = 10  # a patient picks among the first free slots of the day shown


async def patient_sessions(client, day: str, heads: list[dict], seed: int = 7) -> dict:
    rng = random.Random(seed)
    lat: dict[str, list[float]] = {"doctor_list": [], "slots": [], "book": [], "my_bookings": []}
    outcome = Counter()
    url = f"/api/hospital/directory/hospitals/{HOSPITAL}"
    start = f"{day}T00:00:00+08:00"

    async def get(kind: str, path: str, **kw):
        t0 = time.perf_counter()
        r = await client.get(path, **kw)
        lat[kind].append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text[:200]
        return r.json()

    async def think():
        await asyncio.sleep(rng.uniform(*THINK_S))

    async def session(n: int):
        await asyncio.sleep(n / SPAWN_RATE)
        doctors = (await get("doctor_list", url + "/doctors"))["doctors"]
        await think()
        doctor = rng.choice(doctors)
        schedules = ",".join(s["schedule"] for s in doctor["services"])
        for _attempt in range(3):
            free = (await get("slots", url + "/slots", params={"schedule": schedules, "days": 1, "start": start}))["slots"]
            await think()
            slot = rng.choice(free[:FIRST_FREE])
            t0 = time.perf_counter()
            r = await client.post("/api/hospital/appointments", json={"slot": slot["id"]}, headers=heads[n])
            lat["book"].append((time.perf_counter() - t0) * 1000)
            outcome[r.status_code] += 1
            if r.status_code == 201:
                break
        await think()
        await get("my_bookings", "/api/hospital/appointments", headers=heads[n])

    t0 = time.perf_counter()
    await asyncio.gather(*[session(n) for n in range(len(heads))])
    wall = time.perf_counter() - t0
    booked = outcome.get(201, 0)
    return {"patients": len(heads), "spawn_rate_per_s": SPAWN_RATE, "think_s": list(THINK_S), "wall_s": round(wall, 1),
            "booked": booked, "requests": sum(outcome.values()), "status_codes": dict(outcome),
            "bookings_per_s": round(booked / wall, 1), "latency": latency(lat["book"]),
            "other_requests": {k: latency(v) for k, v in lat.items() if k != "book" and v}}


# Patients arriving at a steady rate rather than all in the same instant: the latency a
# patient sees when the hospital's bookings run at that rate.
PACED_RATE = 25.0  # --paced-rate


async def paced_bookings(client, slots: list[str], heads: list[dict], rate: float) -> dict:
    async def at(delay: float, n: int):
        await asyncio.sleep(delay)
        return await timed_post(client, "/api/hospital/appointments", {"slot": slots[n]}, heads[n])

    result = await burst(client, [at(n / rate, n) for n in range(len(heads))])
    result["arrival_rate_per_s"] = rate
    return result


def run_backend(backend: str, patients: int, port: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = new_database(backend, Path(tmp), "booking")
        try:
            env = {**os.environ, "YIYUN_DATABASE_URL": db_url, "YIYUN_DATA_DIR": tmp, "YIYUN_SECRET_KEY": SECRET}
            subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], env=env, check=True,
                           capture_output=True, cwd=REPO)
            plan = asyncio.run(seed(db_url, patients))
            server_env = {**env, "YIYUN_LOG_LEVEL": "WARNING"}
            with Server(server_env, port) as server:
                phases = asyncio.run(run_phases(server.base, plan, patients))
            integrity = asyncio.run(check_double_bookings(db_url))
        finally:
            drop_database(db_url)
    return {"slots": plan["slots"], **phases, "integrity": integrity}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--port", type=int, default=8771)
    ap.add_argument("--paced-rate", type=float, default=PACED_RATE,
                    help="arrivals per second of the paced phase (200 patients spread over time)")
    args = ap.parse_args()
    globals()["PACED_RATE"] = args.paced_rate
    results = {"benchmark": "booking", "machine": machine_info(), "patients": args.patients,
               "target": {"booking_p95_ms": 200}, "backends": {}}
    for backend in args.backends.split(","):
        print(f"-- {backend}", flush=True)
        r = run_backend(backend, args.patients, args.port)
        results["backends"][backend] = r
        for phase in ("distinct", "contended", "fhir_book", "paced", "patients"):
            p = r[phase]
            print(f"{phase:10s} booked {p['booked']:4d}/{p['requests']} {p['bookings_per_s']:7.1f} bookings/s "
                  f"p50 {p['latency']['p50_ms']} ms p95 {p['latency']['p95_ms']} ms codes {p['status_codes']}")
        d = r["doctor_list"]
        print(f"doctor list p95 sequential {d['sequential']['p95_ms']} ms, 20 concurrent "
              f"{d['concurrent_20']['p95_ms']} ms")
        print(f"integrity {r['integrity']}", flush=True)
    path = save_results("booking", results)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
