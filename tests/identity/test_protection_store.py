"""Who sees resident IDs and phones in full, and `yiyun keys rotate` over the FHIR store."""

from __future__ import annotations

import asyncio
import base64
import uuid

import orjson
import pytest
from sqlalchemy import select

from yiyun.fhir.model import RequestContext
from yiyun.fhir.protection import FULL
from yiyun.identity.auth import AuthContext
from yiyun.identity.protection import reset_keyrings
from yiyun.identity.protection.store import KeyRingValueProtector, install

K1 = "k1:" + base64.b64encode(bytes(range(32))).decode()
K2 = "k2:" + base64.b64encode(bytes(range(32, 64))).decode()
RID_SYSTEM = "urn:oid:2.16.156.10011.1.3"


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("YIYUN_ENCRYPTION_KEYS", K1)
    reset_keyrings()
    install()
    yield monkeypatch
    reset_keyrings()


def ctx(**kw) -> AuthContext:
    return AuthContext(tenant="t", subject="someone", **kw)


def test_who_sees_values_in_full():
    p = KeyRingValueProtector()
    assert p.disclosure(RequestContext(tenant="t")) == FULL  # in-process services
    assert p.disclosure(ctx(scopes=("system/*.rs",))) == FULL
    assert p.disclosure(ctx(scopes=("user/*.rs",), roles=("admin",))) == FULL
    assert p.disclosure(ctx(scopes=("user/*.rs",), roles=("doctor",), purpose="PATADMIN")) == FULL
    doctor = p.disclosure(ctx(scopes=("user/*.cruds",), roles=("doctor", "nurse"),
                              fhir_user="https://h.example.cn/fhir/R4/Practitioner/d1"))
    assert not doctor.shows("Patient", "p1") and doctor.shows("Practitioner", "d1")
    for role in ("pharmacist", "auditor", "privacy-officer", "cdc-officer"):
        assert not p.disclosure(ctx(scopes=("user/*.rs",), roles=(role,))).shows("Patient", "p1")
    patient = p.disclosure(ctx(scopes=("patient/*.rs",), roles=("patient",), patient="p1", fhir_user="Patient/p1"))
    assert patient.shows("Patient", "p1") and not patient.shows("Patient", "p2")
    assert not patient.shows("RelatedPerson", "p1")


def test_masks_and_normalised_blind_indexes():
    p = KeyRingValueProtector()
    assert p.mask("resident-id", "11010519491231002X") == "110105********002X"
    assert p.mask("phone", "13812345678") == "138****5678"
    # GB 11643-1999: the check character X in either case is the same number
    assert p.index_value("resident-id", "11010519491231002x") == p.index_value("resident-id", "11010519491231002X")
    assert p.index_value("resident-id", "110105 19491231 002X") == p.index_value("resident-id", "11010519491231002X")
    assert p.index_value("resident-id", "110105194912310021") != p.index_value("resident-id", "11010519491231002X")
    phone = p.index_value("phone", "13812345678")
    assert {p.index_value("phone", v) for v in ("138 1234 5678", "138-1234-5678", "+86 138 1234 5678",
                                                 "+8613812345678", "008613812345678")} == {phone}
    assert p.index_value("phone", "13812345679") != phone
    assert p.index_value("phone", "13812345678") != p.index_value("resident-id", "13812345678")
    # a search also looks for the value exactly as typed (rows indexed before normalisation)
    codes = p.index_values("phone", "+86 138-1234-5678")
    assert codes[0] == phone and len(codes) == 2
    assert p.open("phone", p.seal("phone", "13812345678")) == "13812345678"
    with pytest.raises(Exception):
        p.open("resident-id", p.seal("phone", "13812345678"))  # bound to its purpose


def test_keys_rotate_reseals_the_fhir_store(db_url, keys, tenant):
    from typer.testing import CliRunner

    from yiyun.core.db import dispose_engines, get_engine, unit_of_work
    from yiyun.fhir.repository import FhirRepository
    from yiyun.fhir.tables import resource as resource_t
    from yiyun.fhir.tables import resource_version as version_t
    from yiyun.identity.cli import keys_app

    pid = f"p-{uuid.uuid4().hex[:8]}"
    patient = {"resourceType": "Patient", "id": pid, "identifier": [{"system": RID_SYSTEM, "value": "11010519491231002X"}],
               "telecom": [{"system": "phone", "value": "13812345678"}]}

    async def write():
        async with unit_of_work(get_engine()) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=tenant))
            await repo.update("Patient", pid, patient)
            await repo.update("Patient", pid, {**patient, "gender": "female"})
        await dispose_engines()

    async def stored() -> list[bytes]:
        async with unit_of_work(get_engine(), write=False) as conn:
            rows = [bytes(r.content) for r in await conn.execute(
                select(resource_t.c.content).where(resource_t.c.tenant == tenant, resource_t.c.res_id == pid))]
            rows += [bytes(r.content) for r in await conn.execute(
                select(version_t.c.content).where(version_t.c.tenant == tenant, version_t.c.res_id == pid))]
        await dispose_engines()
        return rows

    async def search(value: str) -> list[str]:
        async with unit_of_work(get_engine(), write=False) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=tenant))
            result = await repo.search("Patient", [("identifier", f"{RID_SYSTEM}|{value}")])
            out = [(s.res_id, s.resource["identifier"][0]["value"]) for s in result.matches]
        await dispose_engines()
        return out

    asyncio.run(write())
    assert all(b"v1.k1." in c and b"11010519491231002X" not in c for c in asyncio.run(stored()))
    keys.setenv("YIYUN_ENCRYPTION_KEYS", f"{K2},{K1}")
    reset_keyrings()
    runner = CliRunner()
    result = runner.invoke(keys_app, ["rotate", "--batch", "3"])
    assert result.exit_code == 0, result.output
    assert "fhir_resource (resident IDs, phones):" in result.output
    rows = asyncio.run(stored())
    assert len(rows) == 3 and all(b"v1.k2." in c and b"v1.k1." not in c for c in rows)
    keys.setenv("YIYUN_ENCRYPTION_KEYS", K2)  # the old key can go now
    reset_keyrings()
    assert asyncio.run(search("11010519491231002X")) == [(pid, "11010519491231002X")]
    body = orjson.loads(asyncio.run(stored())[0])
    assert body["identifier"][0]["value"] == "110105********002X"


def test_numbers_are_found_however_typed_and_old_rows_after_reindex(db_url, keys, tenant):
    """Rows indexed before normalisation (as written) are found as typed at once, and by
    every spelling after `yiyun fhir reindex`; new writes by every spelling at once."""
    from typer.testing import CliRunner

    from yiyun.cli import app as cli
    from yiyun.core.db import dispose_engines, get_engine, unit_of_work
    from yiyun.fhir.repository import FhirRepository
    from yiyun.identity.protection import fields

    def patient(pid, rid, phone):
        return {"resourceType": "Patient", "id": pid, "identifier": [{"system": RID_SYSTEM, "value": rid}],
                "telecom": [{"system": "phone", "value": phone}]}

    old, new = f"old-{uuid.uuid4().hex[:8]}", f"new-{uuid.uuid4().hex[:8]}"

    async def write(p):
        async with unit_of_work(get_engine()) as conn:
            await FhirRepository(conn, RequestContext(tenant=tenant)).update("Patient", p["id"], p)
        await dispose_engines()

    async def search(param, value) -> set[str]:
        async with unit_of_work(get_engine(), write=False) as conn:
            result = await FhirRepository(conn, RequestContext(tenant=tenant)).search("Patient", [(param, value)])
        await dispose_engines()
        return {s.res_id for s in result.matches}

    # the index as it was before normalisation: of the value as written
    saved = {k: fields._NORMALIZERS[k] for k in ("fhir-resident-id", "fhir-phone")}
    fields._NORMALIZERS.update({k: (lambda v: v) for k in saved})
    try:
        asyncio.run(write(patient(old, "11010519491231002x", "+86 138-1234-5678")))
    finally:
        fields._NORMALIZERS.update(saved)
    asyncio.run(write(patient(new, "44052418800101001x", "139 0000 1111")))
    rid_old, rid_new = f"{RID_SYSTEM}|11010519491231002", f"{RID_SYSTEM}|44052418800101001"
    assert asyncio.run(search("identifier", rid_old + "x")) == {old}  # as typed: found before reindexing
    assert asyncio.run(search("phone", "+86 138-1234-5678")) == {old}
    assert asyncio.run(search("identifier", rid_old + "X")) == set()
    assert asyncio.run(search("phone", "13812345678")) == set()
    for spelling in (rid_new + "x", rid_new + "X"):
        assert asyncio.run(search("identifier", spelling)) == {new}
    for spelling in ("13900001111", "+86 139-0000-1111", "139 0000 1111", "008613900001111"):
        assert asyncio.run(search("phone", spelling)) == {new}
        assert asyncio.run(search("telecom", f"phone|{spelling}")) == {new}
    result = CliRunner().invoke(cli, ["fhir", "reindex", "--tenant", tenant])
    assert result.exit_code == 0, result.output
    for spelling in (rid_old + "x", rid_old + "X"):
        assert asyncio.run(search("identifier", spelling)) == {old}
    for spelling in ("13812345678", "+86 138-1234-5678", "138 1234 5678"):
        assert asyncio.run(search("phone", spelling)) == {old}
