"""FHIR store benchmark: one server process, on SQLite and PostgreSQL.

Measures creates/s, Synthea transaction load (resources/s), read latency, typical search
latency at several store sizes (the store is grown with copies of the Synthea patients
under fresh ids) and $export throughput. Prints a table and saves
`benchmarks/results/fhir.json`.

    .venv/bin/python benchmarks/bench_fhir.py [--sizes 10000,100000,1000000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, drop_database, machine_info, new_database, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("YIYUN_SHARED_DATA", REPO.parent / "shared" / "data"))
SYNTHEA = SHARED / "fhir" / "synthea-r4"
TENANT = "bench"
# The server verifies, and this script signs, bearer tokens with one key.
SECRET = os.environ.setdefault("YIYUN_SECRET_KEY", "bench-signing-key-" + uuid.uuid4().hex)


def bearer(tenant: str = TENANT, scope: str = "system/*.cruds", **claims) -> dict[str, str]:
    sys.path.insert(0, str(REPO / "src"))
    from yiyun.identity.tokens import issue_access_token

    token, _ = issue_access_token(subject="service:bench", tenant=tenant, scope=scope, minutes=24 * 60, **claims)
    return {"Authorization": f"Bearer {token}"}
UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 2)


# ------------------------------------------------------------------ databases




# ------------------------------------------------------------------- workload
def synthea_bundles() -> list[tuple[str, bytes]]:
    files = sorted(SYNTHEA.glob("*.json"), key=lambda p: (0 if "Information" in p.name else 1, p.name))
    return [(p.name, p.read_bytes()) for p in files]


def as_upsert(bundle: bytes) -> bytes:
    data = orjson.loads(bundle)
    for e in data.get("entry", []):
        r = e["resource"]
        e["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
    return orjson.dumps(data)


def replica(bundle: bytes, n: int) -> bytes:
    """The same patient record under fresh ids (Organization/Practitioner stay shared)."""
    data = orjson.loads(bundle)
    keep = {e["resource"]["id"] for e in data["entry"] if e["resource"]["resourceType"] in ("Organization", "Practitioner")}
    mapping: dict[bytes, bytes] = {}

    def swap(m: re.Match) -> bytes:
        old = m.group(0)
        if old.decode() in keep:
            return old
        if old not in mapping:
            mapping[old] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{old.decode()}/{n}")).encode()
        return mapping[old]

    return as_upsert(UUID_RE.sub(swap, bundle))


async def post_bundles(client: httpx.AsyncClient, bundles: list[bytes], concurrency: int = 2) -> int:
    queue = list(bundles)
    loaded = 0

    async def worker():
        nonlocal loaded
        while queue:
            body = queue.pop()
            r = await client.post("/fhir/R4", content=body, headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
            r.raise_for_status()
            loaded += len(orjson.loads(body)["entry"])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return loaded


async def count(client) -> int:
    r = await client.get("/fhir/R4/Patient", params={"_summary": "count"})
    total = r.json()["total"]
    r = await client.get("/fhir/R4/Observation", params={"_summary": "count"})
    return total + r.json()["total"]


async def store_size(db_url: str) -> int:
    from sqlalchemy import func, select

    from yiyun.core.db import create_engine_for
    from yiyun.fhir.tables import resource

    engine = create_engine_for(db_url)
    async with engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(resource))).scalar()
    await engine.dispose()
    return n


async def timed(client, method, url, **kw) -> float:
    t = time.perf_counter()
    r = await client.request(method, url, **kw)
    assert r.status_code < 400, (url, r.status_code, r.text[:300])
    return (time.perf_counter() - t) * 1000


async def measure_creates(client, n=1000, concurrency=8) -> dict:
    body = orjson.dumps({"resourceType": "Patient", "name": [{"family": "测试", "given": ["患者"]}], "gender": "female", "birthDate": "1990-01-01"})
    started = time.perf_counter()
    lat: list[float] = []

    async def worker(k):
        for _ in range(k):
            lat.append(await timed(client, "POST", "/fhir/R4/Patient", content=body,
                                   headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}))

    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    secs = time.perf_counter() - started
    return {"creates_per_s": round(len(lat) / secs, 1), "create_p50_ms": pct(lat, .5), "create_p95_ms": pct(lat, .95)}


async def sample_ids(client) -> tuple[list[str], list[str]]:
    r = await client.get("/fhir/R4/Patient", params={"_count": 200, "_elements": "id"})
    patients = [e["resource"]["id"] for e in r.json().get("entry", [])]
    r = await client.get("/fhir/R4/Observation", params={"_count": 200, "_elements": "id"})
    obs = [e["resource"]["id"] for e in r.json().get("entry", [])]
    return patients, obs


async def measure_reads(client, n=1000) -> dict:
    patients, obs = await sample_ids(client)
    ids = [("Patient", i) for i in patients] + [("Observation", i) for i in obs]
    lat = [await timed(client, "GET", f"/fhir/R4/{t}/{i}") for t, i in random.choices(ids, k=n)]
    return {"read_p50_ms": pct(lat, .5), "read_p95_ms": pct(lat, .95)}


SEARCHES = {
    "observations_of_patient_by_code_and_date": lambda p: (
        "/fhir/R4/Observation", {"subject": f"Patient/{p}", "code": "http://loinc.org|8867-4,http://loinc.org|29463-7", "date": "ge2010-01-01"}),
    "patients_by_name": lambda p: ("/fhir/R4/Patient", {"name": random.choice(["Smith", "Jo", "Mar", "Ke", "Wil"]), "_count": 20}),
    "observations_with_include": lambda p: (
        "/fhir/R4/Observation", {"code": "http://loinc.org|8302-2", "_include": "Observation:subject", "_count": 20}),
    "conditions_of_patient": lambda p: ("/fhir/R4/Condition", {"patient": p}),
}


async def measure_searches(client, n=200) -> dict:
    patients, _ = await sample_ids(client)
    out = {}
    for name, make in SEARCHES.items():
        lat = []
        for _ in range(n):
            url, params = make(random.choice(patients))
            lat.append(await timed(client, "GET", url, params=params))
        out[name] = {"p50_ms": pct(lat, .5), "p95_ms": pct(lat, .95)}
    return out


async def measure_export(client) -> dict:
    started = time.perf_counter()
    r = await client.get("/fhir/R4/$export", headers={"Prefer": "respond-async"})
    status = r.headers["content-location"].split("/fhir/R4", 1)[1]
    while True:
        p = await client.get("/fhir/R4" + status)
        if p.status_code == 200:
            break
        await asyncio.sleep(0.2)
    secs = time.perf_counter() - started
    total = sum(o["count"] for o in p.json()["output"])
    return {"exported": total, "export_seconds": round(secs, 2), "export_resources_per_s": round(total / secs, 1)}


async def grow_to(client, target: int, db_url: str, bundles: list[tuple[str, bytes]]) -> int:
    """Add copies of the Synthea patients (fresh ids) until the store holds `target` resources.

    The copies go through the store's own loader (transactions, index extraction) in
    parallel worker processes, without re-validating content already validated once;
    growing a million-resource store over HTTP alone would take an hour on this machine.
    """
    size = await store_size(db_url)
    per_round = sum(len(orjson.loads(b)["entry"]) for name, b in bundles if "Information" not in name)
    rounds_needed = max(0, -(-(target - size) // per_round))
    if rounds_needed:
        workers = max(1, min(4, os.cpu_count() or 1))
        start = _grow_counter.get(db_url, 1)
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--grow-worker", db_url, str(start + w), str(start + rounds_needed), str(workers)],
                cwd=REPO,
            )
            for w in range(workers)
        ]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("grow worker failed")
        _grow_counter[db_url] = start + rounds_needed
        size = await store_size(db_url)
        print(f"    grown to {size} resources", flush=True)
    await analyze(db_url)
    return size


_grow_counter: dict[str, int] = {}


def grow_worker(db_url: str, first: int, stop: int, step: int) -> None:
    from yiyun.core.db import create_engine_for
    from yiyun.fhir.loader import Loader, LoadReport
    from yiyun.fhir.model import RequestContext

    patient_bundles = [b for name, b in synthea_bundles() if "Information" not in name]

    async def run() -> None:
        engine = create_engine_for(db_url)
        loader = Loader(engine, RequestContext(tenant=TENANT), validate=False)
        report = LoadReport()
        for n in range(first, stop, step):
            for i, b in enumerate(patient_bundles):
                await loader.load_bundle(orjson.loads(replica(b, n * 10_000 + i)), report)
        await engine.dispose()
        if report.failed:
            raise SystemExit(f"failed: {report.failed[:2]}")

    asyncio.run(run())


async def analyze(db_url: str) -> None:
    """What an operator does after a bulk load (`yiyun db analyze`)."""
    from yiyun.core.db import create_engine_for, refresh_statistics

    engine = create_engine_for(db_url)
    await refresh_statistics(engine)
    await engine.dispose()


async def run_backend(backend: str, sizes: list[int]) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"yiyun-bench-{backend}-"))
    db_url = new_database(backend, workdir)
    result: dict = {"backend": backend}
    try:
        env = {**os.environ, "YIYUN_DATABASE_URL": db_url, "YIYUN_DATA_DIR": str(workdir),
               "YIYUN_LOG_LEVEL": "WARNING", "YIYUN_DEFAULT_TENANT": TENANT, "YIYUN_SECRET_KEY": SECRET}
        with Server(env, 8765, upgrade=True) as server:
            async with httpx.AsyncClient(base_url=server.base, timeout=600,
                                         headers=bearer()) as client:
                bundles = synthea_bundles()
                started = time.perf_counter()
                info = [as_upsert(b) for name, b in bundles if "Information" in name]
                await post_bundles(client, info, concurrency=1)  # shared organisations first
                loaded = await post_bundles(client, [as_upsert(b) for name, b in bundles if "Information" not in name])
                secs = time.perf_counter() - started
                result["synthea_load"] = {"resources": loaded, "seconds": round(secs, 2),
                                          "resources_per_s": round(loaded / secs, 1)}
                print(f"  {backend}: synthea load {result['synthea_load']}", flush=True)
                result["creates"] = await measure_creates(client)
                print(f"  {backend}: creates {result['creates']}", flush=True)
                result["by_size"] = {}
                for target in sizes:
                    size = await grow_to(client, target, db_url, bundles)
                    point = {"stored_resources": size, **await measure_reads(client),
                             "search": await measure_searches(client)}
                    result["by_size"][str(target)] = point
                    print(f"  {backend} @ {size}: {point}", flush=True)
                result["export"] = await measure_export(client)
                print(f"  {backend}: export {result['export']}", flush=True)
    finally:
        drop_database(db_url)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--grow-worker":
        grow_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {"machine": machine_info(), "sizes": sizes, "backends": []}
    for backend in args.backends.split(","):
        results["backends"].append(asyncio.run(run_backend(backend, sizes)))
        save_results("fhir" if len(results["backends"]) > 1 or "," in args.backends else f"fhir-{backend}", results)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
