"""Batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction)."""

from __future__ import annotations

import asyncio

FHIR = "/fhir/R4"


def tx(*entries, kind="transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource, full_url=None, **request):
    e = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        e["fullUrl"] = full_url
    return e


PATIENT = {"resourceType": "Patient", "name": [{"family": "李", "given": ["雷"]}], "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "11010519491231002X"}]}


def observation(subject_ref: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject_ref},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


async def count(client, res_type) -> int:
    r = await client.get(f"{FHIR}/{res_type}", params={"_summary": "count"})
    return r.json()["total"]


async def test_transaction_resolves_urn_uuid_references(client):
    bundle = tx(
        post(observation("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a")),
        post(PATIENT, "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
    )
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_loc, pat_loc = (e["response"]["location"] for e in body["entry"])
    pat_id = pat_loc.split("/")[1]
    obs = (await client.get(f"{FHIR}/{'/'.join(obs_loc.split('/')[:2])}")).json()
    assert obs["subject"]["reference"] == f"Patient/{pat_id}"


async def test_transaction_is_all_or_nothing(client):
    before = await count(client, "Patient")
    bundle = tx(
        post(PATIENT, "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"),
        post({"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}}),
    )
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert any(x.startswith("Bundle.entry[1].resource") for x in issue.get("expression", []))
    assert await count(client, "Patient") == before


async def test_transaction_unresolvable_reference_is_400_and_writes_nothing(client):
    before = await count(client, "Observation")
    r = await client.post(FHIR, json=tx(post(observation("urn:uuid:00000000-dead-beef-0000-000000000000"))))
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    assert await count(client, "Observation") == before


async def test_conditional_create_and_conditional_reference(client):
    ident = "identifier=urn:oid:2.16.156.10011.1.3|11010519491231002X"
    first = await client.post(FHIR, json=tx(post(PATIENT, ifNoneExist=ident)))
    assert first.json()["entry"][0]["response"]["status"] == "201 Created"
    second = await client.post(FHIR, json=tx(post(PATIENT, ifNoneExist=ident)))
    assert second.json()["entry"][0]["response"]["status"] == "200 OK"
    assert await count(client, "Patient") == 1
    pid = first.json()["entry"][0]["response"]["location"].split("/")[1]
    r = await client.post(FHIR, json=tx(post(observation(f"Patient?{ident}"))))
    assert r.status_code == 200, r.text
    loc = r.json()["entry"][0]["response"]["location"]
    obs = (await client.get(f"{FHIR}/{'/'.join(loc.split('/')[:2])}")).json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    none = await client.post(FHIR, json=tx(post(observation("Patient?identifier=urn:x|nobody"))))
    assert none.status_code == 412


async def test_transaction_orders_delete_post_put_get(client):
    p = (await client.post(f"{FHIR}/Patient", json=PATIENT)).json()
    bundle = tx(
        {"request": {"method": "GET", "url": f"Patient/{p['id']}"}},
        {"resource": {**PATIENT, "id": "put-1"}, "request": {"method": "PUT", "url": "Patient/put-1"}},
        {"request": {"method": "DELETE", "url": f"Patient/{p['id']}"}},
    )
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    # the GET runs last, after the DELETE in the same transaction
    assert entries[0]["response"]["status"] == "410"
    assert entries[1]["response"]["status"] == "201 Created"


async def test_batch_entries_fail_independently(client):
    bundle = tx(
        post(PATIENT),
        post({"resourceType": "Patient", "gender": "robot"}),
        {"request": {"method": "GET", "url": "Patient/missing"}},
        kind="batch",
    )
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0] == "201" and statuses[1] == "422" and statuses[2] == "404"
    assert r.json()["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert await count(client, "Patient") == 1


async def test_bad_bundles(client):
    for body in (
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": PATIENT}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": "x"},
    ):
        r = await client.post(FHIR, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"


async def test_parallel_transactions_never_interleave(client):
    """Each transaction writes a patient and a counter update; none may see half of another."""
    await client.put(f"{FHIR}/Basic/counter", json={"resourceType": "Basic", "id": "counter", "code": {"text": "0"}})

    async def bump(n):
        for _ in range(20):
            cur = (await client.get(f"{FHIR}/Basic/counter")).json()
            value = int(cur["code"]["text"])
            bundle = tx(
                post({**PATIENT, "name": [{"family": "并发", "given": [str(n)]}]}),
                {
                    "resource": {"resourceType": "Basic", "id": "counter", "code": {"text": str(value + 1)}},
                    "request": {"method": "PUT", "url": "Basic/counter", "ifMatch": f'W/"{cur["meta"]["versionId"]}"'},
                },
            )
            r = await client.post(FHIR, json=bundle)
            if r.status_code == 200:
                return True
            assert r.status_code in (409, 412), r.text
        return False

    results = await asyncio.gather(*(bump(n) for n in range(4)))
    final = (await client.get(f"{FHIR}/Basic/counter")).json()
    assert int(final["code"]["text"]) == sum(results)
    assert await count(client, "Patient") == sum(results)
