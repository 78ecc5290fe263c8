"""Search through the HTTP API: links, POST _search, strict handling, custom parameters."""

from __future__ import annotations

FHIR = "/fhir/R4"


async def _patients(client, n: int):
    for i in range(n):
        r = await client.post(f"{FHIR}/Patient", json={
            "resourceType": "Patient", "name": [{"family": "欧阳", "given": [f"{i}"]}],
            "gender": "female" if i % 2 else "male", "birthDate": f"19{50 + i}-01-01",
            "extension": [{"url": "https://yiyun.example.cn/fhir/StructureDefinition/blood-type", "valueString": "AB" if i == 3 else "O"}],
        })
        assert r.status_code == 201


async def test_paging_links_are_followable_and_stable(client):
    await _patients(client, 7)
    page = (await client.get(f"{FHIR}/Patient", params={"family": "欧阳", "_count": 3})).json()
    seen = [e["resource"]["id"] for e in page["entry"]]
    # a resource created between page fetches does not shift or repeat the pages
    await _patients(client, 1)
    while (nxt := [link["url"] for link in page["link"] if link["relation"] == "next"]):
        page = (await client.get(nxt[0].replace("http://testserver", ""))).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
    assert len(seen) == len(set(seen)) == 8


async def test_post_search_and_summary_count(client):
    await _patients(client, 4)
    r = await client.post(f"{FHIR}/Patient/_search", data={"gender": "female"},
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and len(r.json()["entry"]) == 2
    count = (await client.get(f"{FHIR}/Patient", params={"_summary": "count"})).json()
    assert count["total"] == 4 and "entry" not in count


async def test_unknown_parameters_lenient_and_strict(client):
    await _patients(client, 1)
    lenient = (await client.get(f"{FHIR}/Patient", params={"shoe-size": "42"})).json()
    assert [e for e in lenient["entry"] if e["search"]["mode"] == "match"]
    assert any(e["search"]["mode"] == "outcome" for e in lenient["entry"])
    assert "shoe-size" not in lenient["link"][0]["url"]
    strict = await client.get(f"{FHIR}/Patient", params={"shoe-size": "42"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "shoe-size" in strict.json()["issue"][0]["diagnostics"]
    bad = await client.get(f"{FHIR}/Patient", params={"birthdate": "not-a-date"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


async def test_custom_search_parameter_after_reindex(client):
    await _patients(client, 5)
    sp = {
        "resourceType": "SearchParameter", "url": "https://yiyun.example.cn/fhir/SearchParameter/blood-type",
        "name": "blood-type", "status": "active", "description": "血型", "code": "blood-type", "base": ["Patient"],
        "type": "string",
        "expression": "Patient.extension.where(url='https://yiyun.example.cn/fhir/StructureDefinition/blood-type').value",
    }
    assert (await client.post(f"{FHIR}/SearchParameter", json=sp)).status_code == 201
    r = await client.post(f"{FHIR}/$reindex")
    assert r.status_code == 200 and r.json()["parameter"][0]["valueInteger"] >= 6
    found = (await client.get(f"{FHIR}/Patient", params={"blood-type": "AB"}, headers={"Prefer": "handling=strict"})).json()
    assert [e["resource"]["name"][0]["given"] for e in found["entry"]] == [["3"]]


async def test_read_with_elements_and_summary(client):
    await _patients(client, 1)
    pid = (await client.get(f"{FHIR}/Patient")).json()["entry"][0]["resource"]["id"]
    r = (await client.get(f"{FHIR}/Patient/{pid}", params={"_elements": "gender"})).json()
    assert set(r) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in r["meta"]["tag"])
    s = (await client.get(f"{FHIR}/Patient/{pid}", params={"_summary": "true"})).json()
    assert "extension" not in s and s["birthDate"]
