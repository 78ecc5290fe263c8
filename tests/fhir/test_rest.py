"""FHIR REST interactions over HTTP, on SQLite and PostgreSQL.

https://hl7.org/fhir/R4/http.html
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.conftest import auth_headers

FHIR = "/fhir/R4"


def patient(family="张", given="三", **extra) -> dict:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "male",
        "birthDate": "1980-05-01",
        **extra,
    }


async def create(client, resource, **headers):
    r = await client.post(f"{FHIR}/{resource['resourceType']}", json=resource, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def outcome_of(r) -> dict:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert r.headers["content-type"].startswith("application/fhir+json")
    return body


async def test_create_read_vread(client):
    r = await client.post(f"{FHIR}/Patient", json=patient())
    assert r.status_code == 201
    body = r.json()
    pid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/Patient/{pid}/_history/1")
    got = await client.get(f"{FHIR}/Patient/{pid}")
    assert got.status_code == 200
    assert got.json()["name"][0]["family"] == "张"
    assert got.headers["last-modified"]
    v1 = await client.get(f"{FHIR}/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["id"] == pid
    missing = await client.get(f"{FHIR}/Patient/{pid}/_history/9")
    assert missing.status_code == 404
    outcome_of(missing)


async def test_update_versions_and_update_as_create(client):
    r = await client.put(f"{FHIR}/Patient/zhang-1", json={**patient(), "id": "zhang-1"})
    assert r.status_code == 201, r.text
    r2 = await client.put(f"{FHIR}/Patient/zhang-1", json={**patient(given="四"), "id": "zhang-1"})
    assert r2.status_code == 200
    assert r2.json()["meta"]["versionId"] == "2"
    assert (await client.get(f"{FHIR}/Patient/zhang-1/_history/1")).json()["name"][0]["given"] == ["三"]
    mismatch = await client.put(f"{FHIR}/Patient/zhang-1", json={**patient(), "id": "other"})
    assert mismatch.status_code == 400
    outcome_of(mismatch)


async def test_if_match_conflict_is_412(client):
    p = await create(client, patient())
    url = f"{FHIR}/Patient/{p['id']}"
    ok = await client.put(url, json={**p, "gender": "female"}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = await client.put(url, json={**p, "gender": "other"}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    outcome_of(stale)
    assert (await client.get(url)).json()["gender"] == "female"


async def test_delete_then_read_is_410_and_history_keeps_it(client):
    p = await create(client, patient())
    url = f"{FHIR}/Patient/{p['id']}"
    d = await client.delete(url)
    assert d.status_code == 200
    gone = await client.get(url)
    assert gone.status_code == 410
    outcome_of(gone)
    again = await client.delete(url)
    assert again.status_code == 200  # idempotent
    hist = (await client.get(f"{url}/_history")).json()
    assert hist["type"] == "history"
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "POST"]
    # a deleted resource can be brought back by update
    back = await client.put(url, json=p)
    assert back.status_code == 201
    assert back.json()["meta"]["versionId"] == "3"


async def test_history_type_and_system_with_since_and_paging(client):
    ids = [(await create(client, patient(given=f"{n}")))["id"] for n in range(5)]
    await create(client, {"resourceType": "Organization", "name": "市第一人民医院"})
    type_hist = (await client.get(f"{FHIR}/Patient/_history")).json()
    assert len(type_hist["entry"]) == 5
    system = (await client.get(f"{FHIR}/_history", params={"_count": 2})).json()
    assert len(system["entry"]) == 2
    seen = [e["fullUrl"] for e in system["entry"]]
    nxt = [link["url"] for link in system["link"] if link["relation"] == "next"]
    while nxt:
        page = (await client.get(nxt[0].replace("http://testserver", ""))).json()
        seen += [e["fullUrl"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert len(seen) == 6 and len(set(seen)) == 6
    assert all(any(s.endswith(f"/Patient/{i}") for s in seen) for i in ids)
    future = (await client.get(f"{FHIR}/_history", params={"_since": "2999-01-01T00:00:00Z"})).json()
    assert future["entry"] == []
    bad = await client.get(f"{FHIR}/_history", params={"_since": "yesterday"})
    assert bad.status_code == 400


async def test_json_patch(client):
    p = await create(client, patient())
    url = f"{FHIR}/Patient/{p['id']}"
    ops = [{"op": "replace", "path": "/gender", "value": "female"}, {"op": "add", "path": "/active", "value": True}]
    r = await client.patch(url, content=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "female" and r.json()["active"] is True
    failing = [{"op": "test", "path": "/gender", "value": "male"}]
    r = await client.patch(url, content=json.dumps(failing), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    invalid = [{"op": "replace", "path": "/gender", "value": "robot"}]
    r = await client.patch(url, content=json.dumps(invalid), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    assert (await client.get(url)).json()["meta"]["versionId"] == "2"


async def test_prefer_return(client):
    r = await client.post(f"{FHIR}/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b""
    r = await client.post(f"{FHIR}/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "method,path,body,status",
    [
        ("post", "/Patient", b"{not json", 400),
        ("post", "/Patient", json.dumps({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}), 400),
        ("post", "/Patient", json.dumps({"resourceType": "Patient", "gender": "robot"}), 422),
        ("post", "/Patient", json.dumps({"resourceType": "Patient", "birthDate": "1980-13-45"}), 422),
        ("post", "/Patient", json.dumps({"resourceType": "Patient", "foo": 1}), 422),
        ("post", "/Patient", json.dumps([1, 2]), 400),
        ("get", "/NotAType/1", None, 404),
        ("get", "/Patient/bad id with spaces", None, 404),
        ("put", "/Patient/bad$id", json.dumps({"resourceType": "Patient", "id": "bad$id"}), 400),
        ("get", "/Patient/does-not-exist", None, 404),
        ("delete", "/metadata", None, 405),
    ],
)
async def test_bad_input_gets_operation_outcome(client, method, path, body, status):
    kwargs = {"content": body, "headers": {"Content-Type": "application/fhir+json"}} if body is not None else {}
    r = await client.request(method.upper(), FHIR + path, **kwargs)
    assert r.status_code == status, r.text
    outcome_of(r)


async def test_body_too_large_is_413(client, monkeypatch):
    from yiyun.core.settings import get_settings

    monkeypatch.setenv("YIYUN_MAX_BODY_BYTES", "1000")
    get_settings.cache_clear()
    big = patient(text={"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">" + "x" * 5000 + "</div>"})
    r = await client.post(f"{FHIR}/Patient", json=big)
    assert r.status_code == 413
    outcome_of(r)


async def test_xml_is_not_acceptable(client):
    r = await client.get(f"{FHIR}/metadata", params={"_format": "xml"})
    assert r.status_code == 406
    r = await client.get(f"{FHIR}/metadata", params={"_format": "application/fhir+json"})
    assert r.status_code == 200


async def test_capability_statement_is_truthful(client):
    cs = (await client.get(f"{FHIR}/metadata")).json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    types = {r["type"] for r in rest["resource"]}
    assert {"Patient", "Observation", "Appointment", "Consent"} <= types
    patient_params = {p["name"] for r in rest["resource"] if r["type"] == "Patient" for p in r["searchParam"]}
    assert {"name", "birthdate", "identifier", "gender"} <= patient_params
    assert {"transaction", "batch"} <= {i["code"] for i in rest["interaction"]}
    assert "export" in {o["name"] for o in rest["operation"]}


async def test_tenants_are_isolated(client, tenant):
    p = await create(client, patient())
    elsewhere = auth_headers(tenant + "-other")
    other = await client.get(f"{FHIR}/Patient/{p['id']}", headers=elsewhere)
    assert other.status_code == 404
    put = await client.put(f"{FHIR}/Patient/{p['id']}", json={**p, "gender": "female"}, headers=elsewhere)
    assert put.status_code == 201  # a separate resource in the other tenant
    assert (await client.get(f"{FHIR}/Patient/{p['id']}")).json()["gender"] == "male"


async def test_validate_operation(client):
    ok = await client.post(f"{FHIR}/Patient/$validate", json=patient())
    assert ok.status_code == 200
    assert ok.json()["issue"][0]["severity"] == "information"
    bad = await client.post(f"{FHIR}/Patient/$validate", json={"resourceType": "Patient", "gender": 5})
    issues = bad.json()["issue"]
    assert any(i["severity"] == "error" and "Patient.gender" in i.get("expression", []) for i in issues)


async def test_parallel_conflicting_updates_one_winner(client):
    p = await create(client, patient())
    url = f"{FHIR}/Patient/{p['id']}"

    async def attempt(n):
        body = {**p, "name": [{"family": "张", "given": [f"v{n}"]}]}
        return (await client.put(url, json=body, headers={"If-Match": 'W/"1"'})).status_code

    codes = await asyncio.gather(*(attempt(n) for n in range(8)))
    assert sorted(codes) == [200] + [412] * 7, codes
    assert (await client.get(url)).json()["meta"]["versionId"] == "2"
