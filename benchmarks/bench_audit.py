"""Audit-log benchmark: append rate (entries/s) on SQLite and PostgreSQL.

Each append runs in its own write transaction, as a request's audit entry does:
single entries one after another, batches of 10/100/1000, several tasks appending to one
tenant's chain at once (they queue on its head) and to different tenants' chains; then
the rate `verify` walks a chain. Also field encryption, blind index and de-identification
throughput. Prints a table and saves `benchmarks/results/audit.json`.

    .venv/bin/python benchmarks/bench_audit.py [--backends sqlite,postgresql] [--single 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import drop_database, machine_info, new_database, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("YIYUN_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("YIYUN_AUDIT_KEYS", "bench:" + base64.b64encode(b"b" * 32).decode())
os.environ.setdefault("YIYUN_ENCRYPTION_KEYS", "bench:" + base64.b64encode(b"e" * 32).decode())
os.environ.setdefault("YIYUN_LOG_LEVEL", "WARNING")






def entry(tenant: str, i: int):
    from yiyun.identity.audit import AuditEntry

    return AuditEntry(tenant=tenant, actor=f"Practitioner/d{i % 50}", role="doctor", action="read",
                      resource_type="Observation", resource_id=f"obs-{i}", patient=f"Patient/p{i % 1000}",
                      purpose="TREAT", client_address="10.1.2.3")


async def run_backend(url: str, single: int) -> dict:
    from yiyun.core.db import create_engine_for, unit_of_work
    from yiyun.identity.audit import append, verify

    engine = create_engine_for(url)
    out: dict = {}

    async def appends(tenant: str, n: int, batch: int) -> None:
        for start in range(0, n, batch):
            async with unit_of_work(engine) as conn:
                await append(conn, [entry(tenant, i) for i in range(start, min(start + batch, n))])

    async def timed(label: str, n: int, coro) -> None:
        t0 = time.perf_counter()
        await coro
        secs = time.perf_counter() - t0
        out[label] = {"entries": n, "seconds": round(secs, 3), "entries_per_s": round(n / secs)}
        print(f"  {label:<38} {n:>7} entries  {n / secs:>10,.0f} /s", flush=True)

    async def empty_transactions(n: int) -> None:
        for _ in range(n):
            async with unit_of_work(engine):
                pass

    async def appends_in_one_transaction(tenant: str, n: int) -> None:
        async with unit_of_work(engine) as conn:
            for i in range(n):
                await append(conn, [entry(tenant, i)])

    await appends("warmup", 50, 1)
    # Baseline: what a write transaction costs with no audit at all, and the cost an append
    # adds to a transaction that is open anyway (a request's own unit of work).
    await timed("empty write transaction (baseline)", single, empty_transactions(single))
    await timed("single, inside an open transaction", single, appends_in_one_transaction("t-marginal", single))
    await timed("single (1 per transaction)", single, appends("t-single", single, 1))
    for batch in (10, 100, 1000):
        n = max(single * 5, batch * 10)
        await timed(f"batch of {batch}", n, appends(f"t-batch-{batch}", n, batch))
    workers = 8
    per = single // workers
    await timed(f"{workers} tasks, one tenant", per * workers,
                asyncio.gather(*(appends("t-shared", per, 1) for _ in range(workers))))
    await timed(f"{workers} tasks, {workers} tenants", per * workers,
                asyncio.gather(*(appends(f"t-own-{w}", per, 1) for w in range(workers))))
    async with unit_of_work(engine, write=False) as conn:
        t0 = time.perf_counter()
        report = await verify(conn, tenant="t-batch-1000")
        secs = time.perf_counter() - t0
    assert report.ok, report.as_dict()
    out["verify"] = {"entries": report.checked, "seconds": round(secs, 3), "entries_per_s": round(report.checked / secs)}
    print(f"  {'verify':<38} {report.checked:>7} entries  {report.checked / secs:>10,.0f} /s", flush=True)
    await engine.dispose()
    return out


def protection_figures() -> dict:
    from yiyun.identity.protection import RESIDENT_ID, deidentify, protector

    fp = protector()
    n = 20_000
    values = [f"43010419{50 + i % 50:02d}0101{i % 1000:03d}X" for i in range(n)]
    t0 = time.perf_counter()
    tokens = [fp.encrypt(v, RESIDENT_ID) for v in values]
    enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in tokens:
        fp.decrypt(t, RESIDENT_ID)
    dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    for v in values:
        fp.blind_index(v, RESIDENT_ID)
    bi = time.perf_counter() - t0
    out = {"encrypt_per_s": round(n / enc), "decrypt_per_s": round(n / dec), "blind_index_per_s": round(n / bi)}
    folder = SHARED / "fhir" / "synthea-r4"
    files = sorted(folder.glob("*.json"))[:10] if folder.exists() else []
    if files:
        bundles = [[e["resource"] for e in json.loads(p.read_text(encoding="utf-8"))["entry"]] for p in files]
        total = sum(len(b) for b in bundles)
        t0 = time.perf_counter()
        for b in bundles:
            deidentify(b, salt=b"benchmark-salt-0123456789")
        secs = time.perf_counter() - t0
        out["deidentify"] = {"resources": total, "seconds": round(secs, 3), "resources_per_s": round(total / secs)}
    for k, v in out.items():
        print(f"  {k:<32} {v}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--single", type=int, default=2000, help="entries in the one-per-transaction run")
    args = parser.parse_args()
    from yiyun.core import migrations

    results: dict = {"machine": machine_info(), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            try:
                url = new_database(backend, Path(tmp), "audit")
            except Exception as exc:  # no server here
                print(f"{backend}: skipped ({exc.__class__.__name__})")
                results["backends"][backend] = {"skipped": str(exc)[:200]}
                continue
            try:
                migrations.upgrade("head", database_url=url)
                print(f"{backend}:", flush=True)
                results["backends"][backend] = asyncio.run(run_backend(url, args.single))
            finally:
                drop_database(url)
    print("protection:", flush=True)
    results["protection"] = protection_figures()
    print("saved", save_results("audit", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
