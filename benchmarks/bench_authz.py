"""What authorisation and audit add to FHIR reads and searches, on SQLite and PostgreSQL.

The same application answers with and without them: "off" installs the tenant-only policy
and a fixed context (what the store did before tokens), "on" is the application as it
ships (bearer token verified, SMART scopes decided, every access audited; for the
patient-scoped token, the compartment filter too). Requests go through the ASGI app
in-process so that the difference is not drowned in network noise; modes alternate in
rounds so that drift (caches, autovacuum) hits both alike. Target: p95 +20% at most.
Prints a table and saves `benchmarks/results/authz.json`.

    .venv/bin/python benchmarks/bench_authz.py [--backends sqlite,postgresql] [--n 2000] [--patients 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
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
TENANT = "bench-authz"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 3)






async def seed(engine, patients: int) -> tuple[list[str], list[str]]:
    from yiyun.core.db import refresh_statistics, unit_of_work
    from yiyun.fhir.model import RequestContext
    from yiyun.fhir.repository import FhirRepository, PlannedWrite

    pids, oids = [], []
    ctx = RequestContext(tenant=TENANT, base_url="http://bench/fhir/R4")
    for start in range(0, patients, 100):
        async with unit_of_work(engine) as conn:
            repo = FhirRepository(conn, ctx, validate=False)
            plans = []
            for i in range(start, min(start + 100, patients)):
                pid = f"p{i}"
                pids.append(pid)
                plans.append(PlannedWrite("Patient", pid, "PUT", {
                    "resourceType": "Patient", "id": pid, "gender": "female" if i % 2 else "male",
                    "name": [{"family": random.choice(["Smith", "Wang", "Li", "Zhang"]), "given": [f"N{i}"]}]}))
                for k in range(4):
                    oid = f"o{i}-{k}"
                    oids.append(oid)
                    plans.append(PlannedWrite("Observation", oid, "PUT", {
                        "resourceType": "Observation", "id": oid, "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "subject": {"reference": f"Patient/{pid}"},
                        "effectiveDateTime": f"2024-0{k + 1}-01", "valueQuantity": {"value": 60 + k}}))
            await repo.persist_planned(plans)
    await refresh_statistics(engine)
    return pids, oids


def set_mode(mode: str) -> None:
    from yiyun.fhir import api as fhir_api
    from yiyun.fhir.access import TenantPolicy, install_policy
    from yiyun.fhir.model import RequestContext
    from yiyun.identity.auth import fhir_request_context

    if mode == "off":
        install_policy(TenantPolicy())
        fhir_api.context_provider = lambda request, base: RequestContext(tenant=TENANT, base_url=base)
    else:
        install_policy(APP.state.policy)
        fhir_api.context_provider = fhir_request_context


async def timed(client, url, params=None, headers=None) -> float:
    t = time.perf_counter()
    r = await client.get(url, params=params, headers=headers)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return (time.perf_counter() - t) * 1000


APP = None


async def run_backend(backend: str, n: int, patients: int) -> dict:
    global APP
    from yiyun.core import migrations
    from yiyun.core.db import dispose_engines, get_engine
    from yiyun.core.settings import get_settings
    from yiyun.identity.tokens import issue_access_token

    workdir = Path(tempfile.mkdtemp(prefix=f"yiyun-authz-{backend}-"))
    url = new_database(backend, workdir, "authz")
    os.environ.update(YIYUN_DATABASE_URL=url, YIYUN_DATA_DIR=str(workdir), YIYUN_LOG_LEVEL="WARNING")
    get_settings.cache_clear()
    try:
        migrations.upgrade("head", database_url=url)
        pids, oids = await seed(get_engine(), patients)
        from yiyun.app import create_app

        APP = create_app()
        system, _ = issue_access_token(subject="service:bench", tenant=TENANT, scope="system/*.cruds", minutes=600)
        tokens = {"system": {"Authorization": f"Bearer {system}"}}
        for pid in pids[:50]:
            t, _ = issue_access_token(subject=f"patient:{pid}", tenant=TENANT, scope="patient/*.rs", patient=pid,
                                      minutes=600)
            tokens[pid] = {"Authorization": f"Bearer {t}"}
        lat: dict[str, list[float]] = {}

        def add(key, v):
            lat.setdefault(key, []).append(v)

        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            rounds = 10
            for rnd in range(rounds + 1):  # round 0 warms up
                for mode in (("off", "on") if rnd % 2 else ("on", "off")):
                    set_mode(mode)
                    for _ in range(n // rounds):
                        i = random.randrange(50)
                        pid, oid = pids[i], f"o{i}-{random.randrange(4)}"
                        h = tokens["system"]
                        ph = tokens[pid]
                        samples = {
                            "read": await timed(c, f"/fhir/R4/Observation/{oid}", headers=h),
                            "search": await timed(c, "/fhir/R4/Observation", {"subject": f"Patient/{pid}"}, h),
                            "read_patient_token": await timed(c, f"/fhir/R4/Observation/{oid}",
                                                              headers=ph if mode == "on" else h),
                            "search_patient_token": await timed(c, "/fhir/R4/Observation", {"code": "8867-4"},
                                                                headers=ph if mode == "on" else h),
                        }
                        if rnd:
                            for k, v in samples.items():
                                add(f"{k}:{mode}", v)
            await APP.state.policy.recorder.flush()
        out: dict = {"backend": backend, "patients": patients, "observations": len(oids)}
        for name in ("read", "search", "read_patient_token", "search_patient_token"):
            off, on = lat[f"{name}:off"], lat[f"{name}:on"]
            row = {"n": len(on), "off_p50_ms": pct(off, .5), "off_p95_ms": pct(off, .95),
                   "on_p50_ms": pct(on, .5), "on_p95_ms": pct(on, .95)}
            row["p95_added_pct"] = round(100 * (row["on_p95_ms"] / row["off_p95_ms"] - 1), 1)
            row["p50_added_pct"] = round(100 * (row["on_p50_ms"] / row["off_p50_ms"] - 1), 1)
            out[name] = row
            print(f"  {backend:10} {name:22} off p50 {row['off_p50_ms']:7.2f} p95 {row['off_p95_ms']:7.2f} | "
                  f"on p50 {row['on_p50_ms']:7.2f} p95 {row['on_p95_ms']:7.2f} | p95 {row['p95_added_pct']:+.1f}%",
                  flush=True)
        return out
    finally:
        await dispose_engines()
        drop_database(url)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--n", type=int, default=2000, help="requests per kind and mode")
    ap.add_argument("--patients", type=int, default=500)
    args = ap.parse_args()
    os.environ.setdefault("YIYUN_SECRET_KEY", "bench-authz-" + uuid.uuid4().hex)
    results = {"machine": machine_info(), "target": "authorisation + audit add <= 20% to read p95",
               "note": "in-process ASGI; 'off' = tenant-only policy and no token; patient-token rows compare a "
                       "patient/*.rs token (compartment filter) with the unrestricted 'off' request",
               "backends": []}
    for b in args.backends.split(","):
        results["backends"].append(await run_backend(b.strip(), args.n, args.patients))
    print("saved", save_results("authz", results))


if __name__ == "__main__":
    asyncio.run(main())
