"""Search index extraction rate over all Synthea R4 resources.

Prints and saves benchmarks/results/search_extract.json:
- extract: resources/s of `yiyun.fhir.search.extract` on one core (compiled extractors over
  every R4 SearchParameter of each resource type), best of --repeat runs;
- write_index: resources/s of extraction + inserting the index rows into a fresh SQLite file
  (300 resources per call, as one Synthea transaction), without the resource rows themselves.

Usage: python benchmarks/bench_search_extract.py [--data DIR] [--repeat N] [--no-db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import machine_info, save_results  # noqa: E402

from yiyun.fhir.search import extract, write_index  # noqa: E402
from yiyun.fhir.search.registry import builtin_registry, fallback_report  # noqa: E402


def _rewrite(node, urls):
    if isinstance(node, dict):
        return {k: (urls.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, urls)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, urls) for v in node]
    return node


def load(data: Path) -> list[dict]:
    """Every resource of the Synthea bundles, urn:uuid references rewritten to Type/id as stored."""
    out = []
    for f in sorted((data / "fhir" / "synthea-r4").glob("*.json")):
        b = json.loads(f.read_text(encoding="utf-8"))
        urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in b["entry"] if "fullUrl" in e}
        out.extend(_rewrite(e["resource"], urls) for e in b["entry"])
    return out


def bench_extract(resources: list[dict], repeat: int) -> tuple[float, int]:
    reg = builtin_registry()
    for r in resources[:2000]:
        extract(r, reg)  # warm the per-type compilation
    best, rows = 0.0, 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = 0
        for r in resources:
            n += sum(len(v) for v in extract(r, reg).values())
        rate = len(resources) / (time.perf_counter() - t)
        best, rows = max(best, rate), n
    return best, rows


async def bench_write(resources: list[dict]) -> float:
    from sqlalchemy import create_engine

    from yiyun.core.db import create_engine_for, unit_of_work
    from yiyun.fhir.tables import metadata

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        sync = create_engine(f"sqlite:///{path}")
        metadata.create_all(sync)
        sync.dispose()
        engine = create_engine_for(f"sqlite:///{path}")
        t = time.perf_counter()
        for i in range(0, len(resources), 300):
            items = [(i + j + 1, "bench", r) for j, r in enumerate(resources[i : i + 300])]
            async with unit_of_work(engine) as conn:
                await write_index(conn, items, replace=False)
        rate = len(resources) / (time.perf_counter() - t)
        await engine.dispose()
        return rate


def main() -> None:
    ap = argparse.ArgumentParser(description="search index extraction benchmark")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("YIYUN_SHARED_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-db", action="store_true")
    args = ap.parse_args()
    resources = load(args.data)
    rate, rows = bench_extract(resources, args.repeat)
    result = {
        "benchmark": "search_extract",
        "resources": len(resources),
        "index_rows": rows,
        "extract_resources_per_s_one_core": round(rate),
        "fallback_expressions": len(fallback_report()),
        "machine": machine_info(),
    }
    if not args.no_db:
        result["write_index_sqlite_resources_per_s"] = round(asyncio.run(bench_write(resources)))
    print(json.dumps(result, indent=2))
    print(f"saved {save_results('search_extract', result)}")


if __name__ == "__main__":
    main()
