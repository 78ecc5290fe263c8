"""Search counts over real data equal counts computed independently by walking the JSON.

Loads all R4 specification examples and a handful of Synthea patient bundles (their
urn:uuid references rewritten to Type/id, as the transaction processing does), then checks a
set of searches against counts computed here in plain Python, without the extractor.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from search_helpers import put, q

from yiyun.fhir import search as fhir_search

REPO = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("YIYUN_SHARED_DATA", REPO.parent / "shared" / "data")) / "fhir"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SYNTHEA = [
    "Kathe_Zieme_646ca118-b7c4-45d3-b1a4-f01e8973873b.json",
    "Rudy_Macejkovic_99ba7389-7eaa-4f56-b355-9dd86046de4f.json",
    "Tom_Goodwin_e20de9eb-6f2d-4871-a43f-bbede53293ed.json",
    "Kendall_Keeling_fccdbd48-f03f-4e1d-9c29-6b0d16feff61.json",
    "Sherron_Kutch_497b1973-4ff3-494c-a122-6a23913c43a5.json",
]

pytestmark = pytest.mark.slow


def _rewrite(node, urls: dict[str, str]):
    if isinstance(node, dict):
        return {k: (urls.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, urls)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, urls) for v in node]
    return node


def load_resources() -> list[dict]:
    if not DATA.exists():
        (pytest.fail if IN_CI else pytest.skip)(f"shared FHIR data missing at {DATA}")
    out: dict[tuple[str, str], dict] = {}
    for f in sorted((DATA / "r4-spec" / "examples").glob("*.json")):
        r = json.loads(f.read_text(encoding="utf-8"))
        # ids longer than 64 characters are invalid FHIR ids (https://hl7.org/fhir/R4/datatypes.html#id)
        if r.get("id") and len(r["id"]) <= 64:
            out[(r["resourceType"], r["id"])] = r
    for name in SYNTHEA:
        b = json.loads((DATA / "synthea-r4" / name).read_text(encoding="utf-8"))
        urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in b["entry"]}
        for e in b["entry"]:
            r = _rewrite(e["resource"], urls)
            out[(r["resourceType"], r["id"])] = r
    return list(out.values())


def of(resources, t):
    return [r for r in resources if r["resourceType"] == t]


def codings(cc):
    return cc.get("coding", []) if isinstance(cc, dict) else []


def instant(s: str) -> datetime | None:
    if not isinstance(s, str) or "T" not in s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


async def count(conn, ctx, t, query):
    res = await fhir_search.search(conn, ctx, t, q(query + "&_summary=count"))
    assert not res.issues, res.issues
    return res.total


async def test_counts_match_independent_walk(sengine, ctx):
    resources = load_resources()
    async with sengine.connect() as conn:
        async with conn.begin():
            for i in range(0, len(resources), 300):
                await put(conn, ctx.tenant, [json.loads(json.dumps(r)) for r in resources[i : i + 300]])
            await fhir_search.analyze(conn)  # as autovacuum would after a bulk load

            obs = of(resources, "Observation")
            want = sum(any(c.get("system") == "http://loinc.org" and c.get("code") == "8867-4"
                           for c in codings(o.get("code"))) for o in obs)
            assert want > 0
            assert await count(conn, ctx, "Observation", "code=http://loinc.org|8867-4") == want

            pats = of(resources, "Patient")
            want = sum(1 for p in pats if isinstance(p.get("birthDate"), str) and int(p["birthDate"][:4]) < 1960)
            assert want > 0
            assert await count(conn, ctx, "Patient", "birthdate=lt1960") == want
            want = sum(1 for p in pats if p.get("gender") == "female")
            assert await count(conn, ctx, "Patient", "gender=female") == want

            conds = of(resources, "Condition")
            for status in ("active", "resolved"):
                want = sum(any(c.get("code") == status for c in codings(c_.get("clinicalStatus"))) for c_ in conds)
                assert await count(conn, ctx, "Condition", f"clinical-status={status}") == want, status

            # Encounters that started on or after 2015-01-01 and ended before 2016-01-01 (UTC)
            lo, hi = datetime(2015, 1, 1, tzinfo=timezone.utc), datetime(2016, 1, 1, tzinfo=timezone.utc)
            want = 0
            for e in of(resources, "Encounter"):
                p = e.get("period") or {}
                s, en = instant(p.get("start")), instant(p.get("end"))
                if s and en and s >= lo and en < hi:
                    want += 1
            assert want > 0
            assert await count(conn, ctx, "Encounter", "date=sa2014-12-31T23:59:59Z&date=eb2016-01-01") == want

            mrs = of(resources, "MedicationRequest")
            by_patient: dict[str, int] = {}
            for m in mrs:
                ref = (m.get("subject") or {}).get("reference", "")
                if ref.startswith("Patient/"):
                    by_patient[ref] = by_patient.get(ref, 0) + 1
            assert len(by_patient) >= 3
            for ref, n in by_patient.items():
                assert await count(conn, ctx, "MedicationRequest", f"patient={ref}") == n
                assert await count(conn, ctx, "MedicationRequest", f"subject={ref.split('/')[1]}") == n

            # body height above 150 cm: composite code + value on the same Observation
            want = sum(
                1 for o in obs
                if any(c.get("code") == "8302-2" and c.get("system") == "http://loinc.org" for c in codings(o.get("code")))
                and (o.get("valueQuantity") or {}).get("value", 0) > 150
            )
            assert want > 0
            assert await count(conn, ctx, "Observation", "code-value-quantity=http://loinc.org|8302-2$gt150") == want

            # chain and reverse chain: observations of male patients; patients with an active condition
            male = {f"Patient/{p['id']}" for p in pats if p.get("gender") == "male"}
            want = sum(1 for o in obs if (o.get("subject") or {}).get("reference") in male)
            assert await count(conn, ctx, "Observation", "subject:Patient.gender=male") == want
            with_active = {
                (c_.get("subject") or {}).get("reference") for c_ in conds
                if any(c.get("code") == "active" for c in codings(c_.get("clinicalStatus")))
            }
            want = sum(1 for p in pats if f"Patient/{p['id']}" in with_active)
            assert await count(conn, ctx, "Patient", "_has:Condition:subject:clinical-status=active") == want

            # paging through every Observation visits each exactly once
            seen, params = [], q("_count=97")
            while params is not None:
                res = await fhir_search.search(conn, ctx, "Observation", params)
                seen.extend(m.res_id for m in res.matches)
                params = res.next_params
            assert sorted(seen) == sorted(o["id"] for o in obs)
