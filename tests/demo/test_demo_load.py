"""`yiyun demo` end to end: the generated region loads into the store, once."""

from __future__ import annotations

import pytest

from tests.conftest import auth_headers

FHIR = "/fhir/R4"


@pytest.mark.slow
async def test_demo_loads_once_and_is_searchable(engine, client):
    from yiyun.core.db import unit_of_work
    from yiyun.demo import generate_demo
    from yiyun.demo.load import load_demo
    from yiyun.identity.accounts import list_tenants

    first = await load_demo(engine, seed=20240601, if_empty=True)
    assert first["status"] == "loaded"
    expected = generate_demo(20240601)
    assert first["resources"] == len(expected.resources)
    async with unit_of_work(engine, write=False) as conn:
        slugs = {t.slug for t in await list_tenants(conn)}
    assert {t.slug for t in expected.tenants} <= slugs
    again = await load_demo(engine, seed=20240601, if_empty=True)
    assert again["status"] == "already-loaded"

    hospital = expected.tenants[0].slug
    patients = [r for t, r in expected.resources if t == hospital and r["resourceType"] == "Patient"]
    headers = auth_headers(hospital)
    total = (await client.get(f"{FHIR}/Patient", params={"_summary": "count"}, headers=headers)).json()["total"]
    assert total == len(patients)
    p = patients[0]
    ident = next(i for i in p["identifier"] if i["system"] == "urn:oid:2.16.156.10011.1.3")
    found = (await client.get(f"{FHIR}/Patient", params={"identifier": f"{ident['system']}|{ident['value']}"},
                              headers=headers)).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [p["id"]]
    family = p["name"][0]["family"]
    by_name = (await client.get(f"{FHIR}/Patient", params={"family": family, "_count": 500}, headers=headers)).json()
    assert p["id"] in {e["resource"]["id"] for e in by_name["entry"]}
