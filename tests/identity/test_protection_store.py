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


def test_masks_and_blind_indexes_are_exact():
    p = KeyRingValueProtector()
    assert p.mask("resident-id", "11010519491231002X") == "110105********002X"
    assert p.mask("phone", "13812345678") == "138****5678"
    # FHIR token search is exact: a lower-case x is another value, unlike the identity tables' index
    assert p.index_value("resident-id", "11010519491231002x") != p.index_value("resident-id", "11010519491231002X")
    assert p.index_value("phone", "13812345678") != p.index_value("resident-id", "13812345678")
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
