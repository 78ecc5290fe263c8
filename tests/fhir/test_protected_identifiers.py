"""Resident IDs and phone numbers in the FHIR store: encrypted at rest, found by exact search,
shown in full or masked by who asks, re-sealed by key rotation."""

from __future__ import annotations

import base64

import orjson
import pytest
from sqlalchemy import select

from tests.conftest import auth_headers
from yiyun.core.db import unit_of_work
from yiyun.fhir import protection
from yiyun.fhir.search.tables import INDEX_TABLES
from yiyun.fhir.tables import resource as resource_t
from yiyun.fhir.tables import resource_version as version_t
from yiyun.identity.protection import reset_keyrings
from yiyun.identity.protection import store as protection_store

RID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
RID = "11010519491231002X"  # GB 11643-1999 worked example
PHONE = "13812345678"
GUARDIAN_PHONE = "13987654321"
K1 = "k1:" + base64.b64encode(bytes(range(32))).decode()
K2 = "k2:" + base64.b64encode(bytes(range(32, 64))).decode()
FHIR = "/fhir/R4"


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("YIYUN_ENCRYPTION_KEYS", K1)
    reset_keyrings()
    protection_store.install()
    yield monkeypatch
    reset_keyrings()


def patient(**extra) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [
            {"use": "official", "system": RID_SYSTEM, "value": RID},
            {"system": "http://hospital.example.cn/mrn", "value": "MRN-0001"},
        ],
        "name": [{"family": "张", "given": ["三"]}],
        "telecom": [{"system": "phone", "value": PHONE, "use": "mobile"}, {"system": "email", "value": "z@example.cn"}],
        "contact": [{"name": {"text": "张父"}, "telecom": [{"system": "phone", "value": GUARDIAN_PHONE}]}],
        **extra,
    }


async def raw_rows(engine, rid: int) -> bytes:
    """Everything the database holds about one resource: current row, history and index rows."""
    out = []
    async with unit_of_work(engine, write=False) as conn:
        out += [bytes(r.content) for r in await conn.execute(select(resource_t.c.content).where(resource_t.c.rid == rid))]
        out += [bytes(r.content) for r in await conn.execute(select(version_t.c.content).where(version_t.c.rid == rid))]
        for table in INDEX_TABLES:
            for row in await conn.execute(select(table).where(table.c.rid == rid)):
                out.append(repr(tuple(row)).encode())
    return b"\n".join(out)


async def rid_of(engine, tenant: str, res_id: str) -> int:
    async with unit_of_work(engine, write=False) as conn:
        return (
            await conn.execute(
                select(resource_t.c.rid).where(resource_t.c.tenant == tenant, resource_t.c.res_id == res_id)
            )
        ).scalar_one()


async def found(client, query: str, headers=None) -> list[str]:
    r = await client.get(f"{FHIR}/Patient?{query}", headers=headers or {})
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", [])]


async def treating_doctor(client, tenant: str, pid: str) -> dict:
    """A doctor's token with a care relationship (an Encounter) with Patient/`pid`."""
    doc = (await client.post(f"{FHIR}/Practitioner", json={"resourceType": "Practitioner",
                                                           "name": [{"text": "李医生"}]})).json()["id"]
    enc = {"resourceType": "Encounter", "status": "in-progress",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
           "subject": {"reference": f"Patient/{pid}"},
           "participant": [{"individual": {"reference": f"Practitioner/{doc}"}}]}
    assert (await client.post(f"{FHIR}/Encounter", json=enc)).status_code == 201
    return auth_headers(tenant, scope="user/*.cruds", subject=f"doc-{doc}", roles=("doctor",),
                        fhir_user=f"Practitioner/{doc}")


def values(resource: dict) -> dict:
    return {
        "rid": next(i["value"] for i in resource["identifier"] if i["system"] == RID_SYSTEM),
        "phone": resource["telecom"][0]["value"],
        "guardian": resource["contact"][0]["telecom"][0]["value"],
    }


async def test_encrypted_at_rest_and_found_by_exact_search(client, engine, tenant):
    r = await client.post(f"{FHIR}/Patient", json=patient())
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert values(r.json()) == {"rid": RID, "phone": PHONE, "guardian": GUARDIAN_PHONE}
    raw = await raw_rows(engine, await rid_of(engine, tenant, pid))
    for secret in (RID, PHONE, GUARDIAN_PHONE, RID.lower()):
        assert secret.encode() not in raw
    assert b"v1.k1." in raw and b"110105********002X" in raw and b"MRN-0001" in raw

    for query in (
        f"identifier={RID_SYSTEM}|{RID}", f"identifier={RID}", f"phone={PHONE}", f"telecom=phone|{PHONE}",
        f"telecom={PHONE}", "identifier=http://hospital.example.cn/mrn|MRN-0001",
    ):
        assert await found(client, query) == [pid], query
    for query in (
        f"identifier={RID_SYSTEM}|110105194912310021", f"identifier=http://other.example/ids|{RID}",
        f"phone=13812345679", f"identifier={RID_SYSTEM}|110105********002X", f"identifier:not={RID_SYSTEM}|{RID}",
    ):
        assert await found(client, query) == [], query
    # the stored value's read-back is the value written, for the system caller
    read = (await client.get(f"{FHIR}/Patient/{pid}")).json()
    assert read["identifier"][0] == {"use": "official", "system": RID_SYSTEM, "value": RID}
    assert "_value" not in orjson.dumps(read).decode()


async def test_masked_unless_the_caller_needs_the_value(client, tenant):
    pid = (await client.post(f"{FHIR}/Patient", json=patient())).json()["id"]
    other = (await client.post(f"{FHIR}/Patient", json=patient(identifier=[{"system": RID_SYSTEM, "value": "440524188001010014"}]))).json()["id"]
    doctor = await treating_doctor(client, tenant, pid)
    admin = auth_headers(tenant, scope="user/*.rs", subject="admin-zhao", roles=("admin",))
    own = auth_headers(tenant, scope="patient/*.rs", subject="pat-zhang", roles=("patient",), patient=pid,
                       fhir_user=f"Patient/{pid}")

    masked = (await client.get(f"{FHIR}/Patient/{pid}", headers=doctor)).json()
    assert values(masked) == {"rid": "110105********002X", "phone": "138****5678", "guardian": "139****4321"}
    searched = (await client.get(f"{FHIR}/Patient?phone={PHONE}", headers=doctor)).json()
    assert values(searched["entry"][0]["resource"]) == values(masked)
    history = (await client.get(f"{FHIR}/Patient/{pid}/_history", headers=doctor)).json()
    assert RID not in orjson.dumps(history).decode()
    for headers in (admin, own):
        full = (await client.get(f"{FHIR}/Patient/{pid}", headers=headers)).json()
        assert values(full) == {"rid": RID, "phone": PHONE, "guardian": GUARDIAN_PHONE}
    # a patient sees only their own record in full; the other patient's is outside their compartment
    assert (await client.get(f"{FHIR}/Patient/{other}", headers=own)).status_code == 404

    # a masked caller writing the record back (e.g. to change the name) keeps the real values
    masked["name"] = [{"family": "张", "given": ["叁"]}]
    r = await client.put(f"{FHIR}/Patient/{pid}", json=masked, headers=doctor)
    assert r.status_code == 200, r.text
    assert values(r.json())["rid"] == "110105********002X"
    after = (await client.get(f"{FHIR}/Patient/{pid}")).json()
    assert values(after) == {"rid": RID, "phone": PHONE, "guardian": GUARDIAN_PHONE}
    assert after["name"][0]["given"] == ["叁"]
    # ... and changing a value while writing back stores the new value
    masked = (await client.get(f"{FHIR}/Patient/{pid}", headers=doctor)).json()
    masked["telecom"][0]["value"] = "13700001111"
    assert (await client.put(f"{FHIR}/Patient/{pid}", json=masked, headers=doctor)).status_code == 200
    assert await found(client, "phone=13700001111") == [pid]
    assert await found(client, f"phone={PHONE}") == [other]
    # a forged ciphertext is refused, never stored
    masked["identifier"][0]["_value"]["extension"][0]["valueString"] = "v1.k1.AAAA" + "A" * 40
    assert (await client.put(f"{FHIR}/Patient/{pid}", json=masked, headers=doctor)).status_code == 422


async def test_transaction_bundle_and_patch(client, engine, tenant):
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"fullUrl": "urn:uuid:9b1f0c9e-5a55-4d87-9a43-3c1c3b8e0a01", "resource": patient(),
                   "request": {"method": "POST", "url": "Patient"}}],
    }
    r = await client.post(FHIR, json=bundle, headers={"Prefer": "return=representation"})
    assert r.status_code == 200, r.text
    created = r.json()["entry"][0]["resource"]
    assert values(created)["rid"] == RID
    raw = await raw_rows(engine, await rid_of(engine, tenant, created["id"]))
    assert RID.encode() not in raw and PHONE.encode() not in raw
    ops = [{"op": "replace", "path": "/telecom/0/value", "value": "13600002222"}]
    r = await client.patch(f"{FHIR}/Patient/{created['id']}", content=orjson.dumps(ops),
                           headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert await found(client, "phone=13600002222") == [created["id"]]
    raw = await raw_rows(engine, await rid_of(engine, tenant, created["id"]))
    assert b"13600002222" not in raw


async def test_rotation_and_values_stored_before_protection(client, engine, tenant, keys):
    from yiyun.fhir.protection import reseal_batch

    pid = (await client.post(f"{FHIR}/Patient", json=patient())).json()["id"]
    # a record written before protection was switched on holds plain values
    protection.install_protector(None)
    try:
        legacy = (await client.post(f"{FHIR}/Patient", json=patient(identifier=[
            {"system": RID_SYSTEM, "value": "440524188001010014"}]))).json()["id"]
    finally:
        protection_store.install()
    legacy_rid = await rid_of(engine, tenant, legacy)
    assert b"440524188001010014" in await raw_rows(engine, legacy_rid)
    doctor = await treating_doctor(client, tenant, legacy)
    assert values((await client.get(f"{FHIR}/Patient/{legacy}", headers=doctor)).json())["rid"] == "440524********0014"
    assert await found(client, "identifier=440524188001010014") == [legacy]
    # a masked caller writing the legacy record back keeps its real value (and seals it)
    masked = (await client.get(f"{FHIR}/Patient/{legacy}", headers=doctor)).json()
    assert (await client.put(f"{FHIR}/Patient/{legacy}", json=masked, headers=doctor)).status_code == 200
    assert values((await client.get(f"{FHIR}/Patient/{legacy}")).json())["rid"] == "440524188001010014"
    async with unit_of_work(engine, write=False) as conn:
        current = (await conn.execute(select(resource_t.c.content).where(resource_t.c.rid == legacy_rid))).scalar()
    assert b"440524188001010014" not in bytes(current) and b"v1.k1." in bytes(current)

    # a new key goes first; the old one still opens what it sealed
    keys.setenv("YIYUN_ENCRYPTION_KEYS", f"{K2},{K1}")
    reset_keyrings()
    assert values((await client.get(f"{FHIR}/Patient/{pid}")).json())["rid"] == RID
    assert await found(client, f"identifier={RID_SYSTEM}|{RID}") == [pid]

    total, after, unreadable = 0, 0, []
    while after is not None:
        async with unit_of_work(engine) as conn:
            changed, after = await reseal_batch(conn, after=after, batch=7, unreadable=unreadable)
        total += changed
    assert total >= 3  # both patients' current versions and history
    raw = await raw_rows(engine, await rid_of(engine, tenant, pid))
    assert b"v1.k2." in raw and b"v1.k1." not in raw and b"'k1." not in raw
    raw_legacy = await raw_rows(engine, legacy_rid)
    assert b"440524188001010014" not in raw_legacy and b"v1.k2." in raw_legacy

    # the old key can go: everything reads and searches under the new one alone
    keys.setenv("YIYUN_ENCRYPTION_KEYS", K2)
    reset_keyrings()
    assert values((await client.get(f"{FHIR}/Patient/{pid}")).json())["rid"] == RID
    assert values((await client.get(f"{FHIR}/Patient/{legacy}")).json())["rid"] == "440524188001010014"
    assert await found(client, f"identifier={RID_SYSTEM}|{RID}") == [pid]
    assert await found(client, "identifier=440524188001010014") == [legacy]
    assert set(await found(client, f"phone={PHONE}")) == {pid, legacy}


async def test_unknown_key_fails_closed(client, tenant, keys):
    pid = (await client.post(f"{FHIR}/Patient", json=patient())).json()["id"]
    keys.setenv("YIYUN_ENCRYPTION_KEYS", K2)  # k1 lost
    reset_keyrings()
    r = await client.get(f"{FHIR}/Patient/{pid}")
    assert r.status_code == 200
    assert values(r.json())["rid"] == "110105********002X"  # the mask, never ciphertext as a value


async def test_system_export_has_full_values(client, tenant):
    import asyncio

    await client.post(f"{FHIR}/Patient", json=patient())
    r = await client.get(f"{FHIR}/$export?_type=Patient", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    poll = r.headers["Content-Location"]
    for _ in range(100):
        r = await client.get(poll)
        if r.status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 200, r.text
    url = r.json()["output"][0]["url"]
    ndjson = (await client.get(url)).text
    assert RID in ndjson and PHONE in ndjson and "v1.k1." not in ndjson
