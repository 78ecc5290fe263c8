"""Page render benchmark: the doctor's queue (/doctor) and the patient's doctor list
(/patient/doctors), on SQLite and PostgreSQL.

A hospital of 40 doctors in 4 departments, each with a clinic schedule (08:00–12:00) and a
图文问诊 schedule (19:00–21:00), 20-minute slots for 7 days (3,360 Slots); doctor 0 has 30 consultations waiting and
5 in progress. Each page is requested by a signed-in browser session (the cookie, as a
real browser) through the ASGI app in process, sequentially after a warm-up; reported:
p50, p95, p99 and mean in milliseconds (whole request: session lookup, service calls,
template rendering). Saves `benchmarks/results/pages.json`.

    .venv/bin/python benchmarks/bench_pages.py [--backends sqlite,postgresql] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import drop_database, machine_info, new_database, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
HOSPITAL = "bench-pages"
DEPARTMENTS = ("呼吸内科", "内分泌科", "心血管内科", "皮肤科")
DOCTORS = 40
WAITING, ACTIVE = 30, 5


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 2)


def directory() -> list[dict]:
    out: list[dict] = [{"resourceType": "Organization", "id": "org-h", "name": "基准医院", "active": True}]
    for i, name in enumerate(DEPARTMENTS):
        out.append({"resourceType": "HealthcareService", "id": f"hs-{i}", "active": True, "name": f"{name}门诊",
                    "providedBy": {"reference": "Organization/org-h"}, "type": [{"text": name}]})
    for i in range(DOCTORS):
        dept = i % len(DEPARTMENTS)
        out.append({"resourceType": "Practitioner", "id": f"prac-{i}", "active": True, "name": [{"text": f"医生{i:02d}"}],
                    "qualification": [{"code": {"text": "主治医师"}}]})
        out.append({"resourceType": "PractitionerRole", "id": f"role-{i}", "active": True,
                    "practitioner": {"reference": f"Practitioner/prac-{i}", "display": f"医生{i:02d}"},
                    "organization": {"reference": "Organization/org-h"}, "specialty": [{"text": DEPARTMENTS[dept]}],
                    "healthcareService": [{"reference": f"HealthcareService/hs-{dept}"}]})
    for i in range(WAITING + ACTIVE):
        out.append({"resourceType": "Patient", "id": f"pat-{i}", "active": True, "name": [{"text": f"患者{i:02d}"}]})
    return out


async def build(engine) -> tuple[str, str]:
    """The hospital, its schedules and slots, the queue; returns the cookies (doctor, patient)."""
    from yiyun.core.db import unit_of_work
    from yiyun.fhir.model import RequestContext
    from yiyun.fhir.repository import FhirRepository
    from yiyun.hospital import schedules
    from yiyun.hospital.codes import today_local
    from yiyun.hospital.consultations import service
    from yiyun.identity import accounts, sessions

    t0 = time.perf_counter()
    async with unit_of_work(engine) as conn:
        await accounts.create_tenant(conn, HOSPITAL, name="基准医院", kind="hospital")
        repo = FhirRepository(conn, RequestContext(tenant=HOSPITAL, subject="bench"), validate=False)
        for r in directory():
            await repo.update(r["resourceType"], r["id"], r)
    print(f"  directory {time.perf_counter() - t0:.1f} s", flush=True)
    async with unit_of_work(engine) as conn:
        repo = FhirRepository(conn, RequestContext(tenant=HOSPITAL, subject="bench"), validate=False)
        for i in range(DOCTORS):
            for ctype, fee, start, end in (("clinic", 2500, "08:00", "12:00"), ("online-text", 3000, "19:00", "21:00")):
                sched = await schedules.create_schedule(repo, f"role-{i}", ctype, fee_fen=fee)
                await schedules.add_template(conn, HOSPITAL, sched.res_id, weekdays=[1, 2, 3, 4, 5, 6, 7],
                                             start=start, end=end, slot_minutes=20)
    print(f"  schedules {time.perf_counter() - t0:.1f} s", flush=True)
    async with unit_of_work(engine) as conn:
        repo = FhirRepository(conn, RequestContext(tenant=HOSPITAL, subject="bench"), validate=False)
        await schedules.generate_slots(repo, start_day=today_local(), days=7)
    print(f"  slots {time.perf_counter() - t0:.1f} s", flush=True)
    async with unit_of_work(engine) as conn:
        doctor = await accounts.create_staff(conn, username="bench-dr-0", display_name="医生00", password="x",
                                             tenant_slug=HOSPITAL, roles=["doctor"], fhir_ref="Practitioner/prac-0",
                                             password_hash="bench-not-a-hash")
        patient = await accounts.create_patient_account(conn, "13800000000", "患者00", tenant=HOSPITAL,
                                                        fhir_ref="Patient/pat-0")
        doctor_cookie, _ = await sessions.open_session(conn, doctor.id, HOSPITAL)
        patient_cookie, _ = await sessions.open_session(conn, patient.id, HOSPITAL)
    from real_name import verify_patients

    await verify_patients(engine, HOSPITAL, [f"pat-{i}" for i in range(WAITING + ACTIVE)])
    for i in range(WAITING + ACTIVE):
        party = service.Party(HOSPITAL, f"bench:pat-{i}", "patient", f"pat-{i}")
        async with service.open_work(party, engine=engine) as work:
            started = await service.start_consultation(work, mode="text", doctor="Practitioner/prac-0", form={
                "chief_complaint": f"咳嗽{i}天", "duration": f"{i}天", "allergies": "无"})
        if i >= WAITING:
            async with service.open_work(service.Party(HOSPITAL, "bench-dr-0", "doctor", "prac-0"),
                                         engine=engine) as work:
                await service.accept(work, started["id"])
    print(f"  consultations {time.perf_counter() - t0:.1f} s", flush=True)
    if engine.dialect.name == "postgresql":  # table statistics, as a running database has them
        from sqlalchemy import text

        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
    return doctor_cookie, patient_cookie


async def measure(app, cookie: str, url: str, n: int, check: str) -> dict:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        http.cookies.set("yiyun_session", cookie)
        for _ in range(10):  # warm-up: caches, prepared statements, templates
            r = await http.get(url)
            assert r.status_code == 200 and check in r.text, (url, r.status_code, r.text[:300])
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = await http.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
    return {"url": url, "requests": n, "p50_ms": pct(times, 0.50), "p95_ms": pct(times, 0.95),
            "p99_ms": pct(times, 0.99), "mean_ms": round(statistics.fmean(times), 2)}


async def run_backend(backend: str, n: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    url = new_database(backend, work, "pages")
    os.environ["YIYUN_DATABASE_URL"] = url
    os.environ["YIYUN_DATA_DIR"] = str(work)
    os.environ["YIYUN_LOG_LEVEL"] = "WARNING"
    subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    from yiyun.core.db import dispose_engines, get_engine
    from yiyun.core.settings import get_settings

    get_settings.cache_clear()
    try:
        from yiyun.app import create_app

        engine = get_engine()
        doctor_cookie, patient_cookie = await build(engine)
        app = create_app()
        queue = await measure(app, doctor_cookie, "/doctor", n, "候诊队列")
        doctors = await measure(app, patient_cookie, f"/patient/doctors?hospital={HOSPITAL}", n, f"医生{DOCTORS - 1:02d}")
        await app.state.policy.recorder.close()
        return {"doctor_queue": {**queue, "waiting": WAITING, "active": ACTIVE},
                "patient_doctor_list": {**doctors, "doctors": DOCTORS}}
    finally:
        await dispose_engines()
        get_settings.cache_clear()
        drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    results: dict = {"machine": machine_info(), "setup": {"doctors": DOCTORS, "departments": len(DEPARTMENTS),
                                                          "slot_days": 7, "waiting": WAITING, "active": ACTIVE}}
    for backend in args.backends.split(","):
        try:
            results[backend] = asyncio.run(run_backend(backend, args.requests))
        except Exception as exc:  # an unreachable PostgreSQL is reported, not fatal for SQLite's figures
            results[backend] = {"error": f"{type(exc).__name__}: {exc}"}
        print(backend, results[backend], flush=True)
    path = save_results("pages", results)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
