"""Write-time validation throughput on Synthea content (one core).

    python benchmarks/bench_validation.py [--repeat N]

Validates every resource of every synthea-r4 Bundle (as the store does on create) and
reports resources/s, the best of N passes; also times whole transaction Bundles.
Target: >= 10,000 resources/s, so that loading Synthea end-to-end can reach 2,000/s.
Saves benchmarks/results/validation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

from yiyun.fhir.validation import validate_resource

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("YIYUN_SHARED_DATA") or REPO.parent / "shared" / "data")
SYNTHEA = SHARED / "fhir" / "synthea-r4"
RESULT = REPO / "benchmarks" / "results" / "validation.json"
TARGET = 10_000


def best_rate(items: list[dict], weight: int, repeat: int) -> tuple[float, float]:
    """(best items-weight per second, its seconds) over `repeat` passes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            validate_resource(item)
        best = min(best, time.perf_counter() - start)
    return weight / best, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not SYNTHEA.is_dir():
        print(f"Synthea bundles not found under {SHARED}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    validate_resource({"resourceType": "Patient"})  # the first call loads the schema
    schema_load_s = time.perf_counter() - start
    bundles = [orjson.loads(p.read_bytes()) for p in sorted(SYNTHEA.glob("*.json"))]
    resources = [e["resource"] for b in bundles for e in b["entry"]]
    invalid = sum(1 for r in resources if any(i.severity == "error" for i in validate_resource(r)))

    rate, seconds = best_rate(resources, len(resources), args.repeat)
    bundle_rate, bundle_seconds = best_rate(bundles, len(resources), args.repeat)
    result = {
        "benchmark": "validation",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": "synthea-r4 (all Bundles, every entry.resource)",
        "resources": len(resources),
        "bundles": len(bundles),
        "invalid_resources": invalid,
        "repeat": args.repeat,
        "resources_per_s": round(rate),
        "seconds_best_pass": round(seconds, 4),
        "resources_per_s_as_bundles": round(bundle_rate),
        "seconds_best_pass_as_bundles": round(bundle_seconds, 4),
        "us_per_resource": round(1e6 / rate, 1),
        "target_resources_per_s": TARGET,
        "meets_target": rate >= TARGET,
        "schema_load_s": round(schema_load_s, 4),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "cores_used": 1,
        },
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"validation: {rate:,.0f} resources/s one at a time ({1e6 / rate:.1f} us each), "
        f"{bundle_rate:,.0f} resources/s as Bundles; {len(resources):,} Synthea resources, "
        f"{invalid} invalid; target {TARGET:,}/s {'met' if rate >= TARGET else 'NOT met'}"
    )
    print(f"saved {RESULT.relative_to(REPO)}")
    return 0 if invalid == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
