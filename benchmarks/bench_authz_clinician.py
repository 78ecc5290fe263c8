"""Added cost of authorisation and audit for a clinician's FHIR reads and searches.

A doctor token (`user/*.cruds`, role doctor, fhirUser Practitioner/dr1) reads Observations
of the 100 patients (of 500) the doctor has an Encounter with: the care-relationship policy
with its audit trail ("on") against tenant isolation alone ("off"), in alternating rounds so
that both see the same machine. Saves `benchmarks/results/authz_clinician.json`.

    .venv/bin/python benchmarks/bench_authz_clinician.py [--backends sqlite,postgresql] [--n 600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("YIYUN_SECRET_KEY", "bench-clinician-" + "k" * 32)

import bench_authz as base  # noqa: E402
from common import drop_database, machine_info, new_database, save_results  # noqa: E402

PATIENTS, RELATED = 500, 100


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 3)


async def run(backend: str, n: int) -> dict:
    from yiyun.core import migrations
    from yiyun.core.db import dispose_engines, get_engine, unit_of_work
    from yiyun.core.settings import get_settings
    from yiyun.fhir.model import RequestContext
    from yiyun.fhir.repository import FhirRepository
    from yiyun.identity.tokens import issue_access_token

    workdir = Path(tempfile.mkdtemp())
    url = new_database(backend, workdir, "clinician")
    os.environ.update(YIYUN_DATABASE_URL=url, YIYUN_DATA_DIR=str(workdir), YIYUN_LOG_LEVEL="WARNING")
    get_settings.cache_clear()
    try:
        migrations.upgrade("head", database_url=url)
        await base.seed(get_engine(), PATIENTS)
        async with unit_of_work(get_engine()) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=base.TENANT), validate=False)
            for i in range(PATIENTS):  # dr1 saw the first RELATED patients; colleagues the rest
                who = 1 if i < RELATED else 2 + i % 7
                await repo.create({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                                   "subject": {"reference": f"Patient/p{i}"},
                                   "participant": [{"individual": {"reference": f"Practitioner/dr{who}"}}]})
        from yiyun.app import create_app

        base.APP = create_app()
        token, _ = issue_access_token(subject="dr1", tenant=base.TENANT, scope="user/*.cruds", roles=("doctor",),
                                      fhir_user="Practitioner/dr1", minutes=600)
        headers = {"Authorization": f"Bearer {token}"}
        lat: dict[tuple[str, str], list[float]] = {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=base.APP), base_url="http://b") as c:
            for rnd in range(11):  # round 0 warms up; then alternate which mode goes first
                for mode in (("off", "on") if rnd % 2 else ("on", "off")):
                    base.set_mode(mode)
                    for _ in range(n // 10):
                        i = random.randrange(RELATED)
                        t0 = time.perf_counter()
                        r = await c.get(f"/fhir/R4/Observation/o{i}-{random.randrange(4)}", headers=headers)
                        t1 = time.perf_counter()
                        assert r.status_code == 200, r.text[:200]
                        s = await c.get("/fhir/R4/Observation", params={"subject": f"Patient/p{i}"}, headers=headers)
                        t2 = time.perf_counter()
                        assert s.status_code == 200 and s.json().get("entry"), s.text[:200]
                        if rnd:
                            lat.setdefault(("read", mode), []).append((t1 - t0) * 1000)
                            lat.setdefault(("search", mode), []).append((t2 - t1) * 1000)
            await base.APP.state.policy.recorder.flush()
        out = {}
        for kind in ("read", "search"):
            off, on = lat[(kind, "off")], lat[(kind, "on")]
            out[kind] = {"off": {"p50_ms": pct(off, .5), "p95_ms": pct(off, .95)},
                         "on": {"p50_ms": pct(on, .5), "p95_ms": pct(on, .95)},
                         "added_p95_pct": round(100 * (pct(on, .95) / pct(off, .95) - 1), 1),
                         "added_p50_pct": round(100 * (pct(on, .5) / pct(off, .5) - 1), 1)}
            print(f"  {backend:10} doctor {kind:6} off p95 {out[kind]['off']['p95_ms']:6.2f} | "
                  f"on p95 {out[kind]['on']['p95_ms']:6.2f} | p95 {out[kind]['added_p95_pct']:+.1f}% "
                  f"p50 {out[kind]['added_p50_pct']:+.1f}%", flush=True)
        return out
    finally:
        await dispose_engines()
        drop_database(url)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--n", type=int, default=600)
    args = ap.parse_args()
    results = {"benchmark": "authz_clinician", "machine": machine_info(), "patients": PATIENTS,
               "related": RELATED, "target": {"added_read_p95_pct": 20}, "backends": {}}
    for backend in args.backends.split(","):
        results["backends"][backend] = asyncio.run(run(backend, args.n))
    print(f"saved {save_results('authz_clinician', results)}")


if __name__ == "__main__":
    main()
