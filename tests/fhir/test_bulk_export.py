"""FHIR Bulk Data Access v2 export: kick-off, polling, files, cancellation."""

from __future__ import annotations

import asyncio

import orjson

FHIR = "/fhir/R4"
ASYNC = {"Prefer": "respond-async"}


async def _seed(client) -> tuple[str, str]:
    p1 = (await client.post(f"{FHIR}/Patient", json={"resourceType": "Patient", "name": [{"family": "孙"}]})).json()
    p2 = (await client.post(f"{FHIR}/Patient", json={"resourceType": "Patient", "name": [{"family": "周"}]})).json()
    for pid, n in ((p1["id"], 3), (p2["id"], 2)):
        for _ in range(n):
            await client.post(f"{FHIR}/Observation", json={
                "resourceType": "Observation", "status": "final", "code": {"text": "体温"},
                "subject": {"reference": f"Patient/{pid}"},
            })
    await client.post(f"{FHIR}/Organization", json={"resourceType": "Organization", "name": "社区卫生服务中心"})
    return p1["id"], p2["id"]


async def _run_export(client, url: str, params=None) -> dict:
    kick = await client.get(url, params=params or {}, headers=ASYNC)
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["content-location"].replace("http://testserver", "")
    for _ in range(200):
        poll = await client.get(status_url)
        if poll.status_code == 200:
            return poll.json()
        assert poll.status_code == 202 and poll.headers.get("x-progress")
        await asyncio.sleep(0.05)
    raise AssertionError("export did not finish")


async def _lines(client, manifest: dict, res_type: str) -> list[dict]:
    out = next(o for o in manifest["output"] if o["type"] == res_type)
    r = await client.get(out["url"].replace("http://testserver", ""))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in r.content.splitlines() if line]


async def test_system_export_with_type_filter(client):
    await _seed(client)
    manifest = await _run_export(client, f"{FHIR}/$export", {"_type": "Patient,Observation"})
    assert {o["type"] for o in manifest["output"]} == {"Patient", "Observation"}
    assert manifest["requiresAccessToken"] is True and manifest["transactionTime"]
    assert len(await _lines(client, manifest, "Observation")) == 5


async def test_group_export_only_members(client):
    p1, _ = await _seed(client)
    group = (await client.post(f"{FHIR}/Group", json={
        "resourceType": "Group", "type": "person", "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p1}"}}],
    })).json()
    manifest = await _run_export(client, f"{FHIR}/Group/{group['id']}/$export")
    patients = await _lines(client, manifest, "Patient")
    assert [p["id"] for p in patients] == [p1]
    assert len(await _lines(client, manifest, "Observation")) == 3
    assert "Organization" not in {o["type"] for o in manifest["output"]}


async def test_patient_level_and_since(client):
    await _seed(client)
    manifest = await _run_export(client, f"{FHIR}/Patient/$export")
    assert len(await _lines(client, manifest, "Observation")) == 5
    later = await _run_export(client, f"{FHIR}/$export", {"_since": "2999-01-01T00:00:00Z"})
    assert later["output"] == []


async def test_export_errors_and_cancel(client):
    assert (await client.get(f"{FHIR}/$export")).status_code == 400  # no respond-async
    bad = await client.get(f"{FHIR}/$export", params={"_type": "Nope"}, headers=ASYNC)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    bad = await client.get(f"{FHIR}/$export", params={"_outputFormat": "text/csv"}, headers=ASYNC)
    assert bad.status_code == 400
    missing = await client.get(f"{FHIR}/Group/nope/$export", headers=ASYNC)
    assert missing.status_code == 404
    kick = await client.get(f"{FHIR}/$export", headers=ASYNC)
    status_url = kick.headers["content-location"].replace("http://testserver", "")
    assert (await client.delete(status_url)).status_code == 202
    assert (await client.get(status_url)).status_code == 404
    assert (await client.get(f"{FHIR}/$export-poll-status", params={"_jobId": "nope"})).status_code == 404
