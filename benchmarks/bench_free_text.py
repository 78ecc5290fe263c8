"""Cost of the free-text guard on writes (one core).

    python benchmarks/bench_free_text.py [--repeat N] [--synthea N]

Times `yiyun.fhir.protection.seal_resource` (the repository's sealing step) with the guard on
and off for three typical resources: an Observation without long digit runs (the pre-check
says no), a Patient with a structured resident ID and mobile number (the pre-check says yes,
the walk finds nothing in free text) and an Observation whose note holds both numbers (masked);
then over the first N resources of the synthea-r4 Bundles when they are present.
Saves benchmarks/results/free_text.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("YIYUN_SHARED_DATA") or REPO.parent / "shared" / "data")
SYNTHEA = SHARED / "fhir" / "synthea-r4"
RESULT = REPO / "benchmarks" / "results" / "free_text.json"

DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>{}</p></div>'
OBSERVATION = {
    "resourceType": "Observation", "id": "obs-1", "meta": {"versionId": "1", "lastUpdated": "2026-11-25T01:00:00Z"},
    "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}]},
    "subject": {"reference": "Patient/pat-00042"}, "effectiveDateTime": "2026-11-24T08:00:00+08:00",
    "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 152, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": 95, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
    ],
    "note": [{"text": "晨起测量，患者自述头晕"}],
    "text": {"status": "generated", "div": DIV.format("血压 152/95 mmHg")},
}
PATIENT = {
    "resourceType": "Patient", "id": "pat-1", "meta": {"versionId": "1", "lastUpdated": "2026-11-25T01:00:00Z"},
    "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "11010519491231002X"},
                   {"system": "http://hospital.example.cn/mrn", "value": "00001234"}],
    "name": [{"family": "张", "given": ["三"]}], "telecom": [{"system": "phone", "value": "13812345678"}],
    "gender": "male", "birthDate": "1949-12-31",
    "address": [{"text": "湖南省长沙市岳麓区麓山南路932号", "city": "长沙市", "district": "岳麓区"}],
    "text": {"status": "generated", "div": DIV.format("张三，男，1949-12-31")},
}
WITH_NUMBERS = {**OBSERVATION, "note": [{"text": "家属电话13987654321，身份证11010519491231002X"}]}


def per_call_us(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def synthea_resources(limit: int) -> list[dict]:
    out: list[dict] = []
    for path in sorted(SYNTHEA.glob("*.json")):
        for entry in orjson.loads(path.read_bytes()).get("entry", []):
            out.append(entry["resource"])
            if len(out) >= limit:
                return out
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--synthea", type=int, default=5000)
    args = ap.parse_args()
    os.environ.setdefault("YIYUN_ENCRYPTION_KEYS", "bench:" + base64.b64encode(bytes(32)).decode())
    logging.disable(logging.INFO)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from yiyun.fhir import free_text, protection
    from yiyun.identity.protection import store  # noqa: F401  (installs the key-ring protector)

    figures: dict[str, dict] = {}
    for name, res in (("observation-no-digit-run", OBSERVATION), ("patient-structured-id-phone", PATIENT),
                      ("observation-numbers-in-note", WITH_NUMBERS)):
        content = orjson.dumps(res)
        row = {"bytes": len(content)}
        for state in (False, True, False, True):  # alternating: the key ring and caches warm up on the first
            free_text.enable_guard(state)
            row["on_us" if state else "off_us"] = round(
                per_call_us(lambda r=res, c=content: protection.seal_resource(r, c), 2000, args.repeat), 2)
        row["precheck_us"] = round(per_call_us(lambda c=content: free_text.may_hold(c), 20000, args.repeat), 3)
        figures[name] = row
        print(f"{name:30} {row['bytes']:5} B  guard on {row['on_us']:7.2f} µs  off {row['off_us']:7.2f} µs  "
              f"pre-check {row['precheck_us']:.3f} µs")
    items = [(r, orjson.dumps(r)) for r in synthea_resources(args.synthea)] if SYNTHEA.exists() else []
    if items:
        row = {"resources": len(items), "bytes": sum(len(c) for _, c in items)}
        for state in (False, True, False, True):  # alternating: the key ring and caches warm up on the first
            free_text.enable_guard(state)
            row["on_us" if state else "off_us"] = round(per_call_us(
                lambda: [protection.seal_resource(r, c) for r, c in items], 1, args.repeat) / len(items), 2)
        figures["synthea-per-resource"] = row
        print(f"synthea ({len(items)} resources)  guard on {row['on_us']:.2f} µs  off {row['off_us']:.2f} µs per resource")
    free_text.enable_guard(True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(), "machine": platform.platform(),
        "python": sys.version.split()[0], "cpu_count": os.cpu_count(), "figures": figures,
    }, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
