"""Disease control: cdc-officers read the region's reportable-disease cases, de-identified unless
under investigation; nothing else. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest_asyncio

from tests.conftest import auth_headers
from tests.identity.conftest import make

FHIR = "/fhir/R4"
ICD = "http://www.nhc.gov.cn/icd10/clinical-v2"
REASON = "聚集性疫情流行病学调查，需要联系患者"


def condition(pid, code, name, recorded="2026-11-20T09:00:00+08:00"):
    return {"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"}, "recordedDate": recorded,
            "code": {"coding": [{"system": ICD, "code": code, "display": name}], "text": name},
            "note": [{"text": f"患者钱七，电话13912345678，{name}"}]}


@pytest_asyncio.fixture
async def region(engine, c):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_tenant

    run = uuid.uuid4().hex[:8]
    hosp, cdc_t = f"cd-h-{run}", f"cd-c-{run}"
    async with unit_of_work(engine) as conn:
        await create_tenant(conn, hosp, name="丙医院", kind="hospital")
        await create_tenant(conn, cdc_t, name="市疾控中心", kind="cdc")
    p = await make(c, hosp, {"resourceType": "Patient", "name": [{"family": "钱", "given": ["七"]}],
                             "telecom": [{"system": "phone", "value": "13912345678"}], "gender": "male",
                             "birthDate": "1980-03-04"})
    hep = await make(c, hosp, condition(p["id"], "B18.107", "慢性乙型病毒性肝炎"))
    flu = await make(c, hosp, condition(p["id"], "J11.101", "流行性感冒", "2026-11-22T09:00:00+08:00"))
    htn = await make(c, hosp, condition(p["id"], "I10.x09", "原发性高血压"))
    return {"hosp": hosp, "cdc": cdc_t, "patient": p["id"], "hep": hep["id"], "flu": flu["id"], "htn": htn["id"]}


def officer(tenant, role="cdc-officer"):
    return auth_headers(tenant, "user/*.rs", roles=(role,), subject=f"staff:{role}")


def mine(cases, r):
    return [x for x in cases if x["tenant"] == r["hosp"]]


async def test_reportable_cases_are_de_identified_unless_under_investigation(app, c, region, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query

    r = region
    h = officer(r["cdc"])
    got = await c.get("/api/cdc/cases", headers=h)
    assert got.status_code == 200, got.text
    cases = mine(got.json()["cases"], r)
    assert sorted(x["disease"] for x in cases) == ["流行性感冒", "病毒性肝炎"]  # hypertension is not reportable
    assert {x["class"] for x in cases} == {"B", "C"}
    for x in cases:
        text = str(x)
        assert not x["identified"] and "钱" not in text and "13912345678" not in text
        assert r["patient"] not in text and r["hep"] not in text and r["flu"] not in text
        assert x["patient"]["gender"] == "male"
    # filters
    hep_only = mine((await c.get("/api/cdc/cases", params={"code": "B18"}, headers=h)).json()["cases"], r)
    assert [x["disease"] for x in hep_only] == ["病毒性肝炎"]
    recent = mine((await c.get("/api/cdc/cases", params={"since": "2026-11-21"}, headers=h)).json()["cases"], r)
    assert [x["disease"] for x in recent] == ["流行性感冒"]
    assert (await c.get("/api/cdc/cases", params={"code": "I10"}, headers=h)).status_code == 400

    # under investigation the case is shown identified, until it is closed
    key = hep_only[0]["case"]
    short = await c.post(f"/api/cdc/cases/{key}/investigation", json={"reason": "调查"}, headers=h)
    assert short.status_code == 400
    opened = await c.post(f"/api/cdc/cases/{key}/investigation", json={"reason": REASON}, headers=h)
    assert opened.status_code == 200, opened.text
    hep = mine((await c.get("/api/cdc/cases", params={"code": "B18"}, headers=h)).json()["cases"], r)[0]
    assert hep["identified"] and hep["patient"]["name"][0]["family"] == "钱" and hep["investigation"]["reason"] == REASON
    flu = mine((await c.get("/api/cdc/cases", params={"code": "J11"}, headers=h)).json()["cases"], r)[0]
    assert not flu["identified"]
    assert (await c.delete(f"/api/cdc/cases/{key}/investigation", headers=h)).status_code == 200
    hep = mine((await c.get("/api/cdc/cases", params={"code": "B18"}, headers=h)).json()["cases"], r)[0]
    assert not hep["identified"] and "钱" not in str(hep)
    assert (await c.post("/api/cdc/cases/not-a-case/investigation", json={"reason": REASON},
                         headers=h)).status_code == 404

    # each case shown and each investigation change is in the hospital's audit chain
    async with unit_of_work(engine, write=False) as conn:
        entries = await query(conn, tenant=r["hosp"], actor="staff:cdc-officer", limit=100)
    reads = [e for e in entries if e.action == "read" and e.resource_id == r["hep"]]
    assert reads and all(e.purpose == "PUBHLTH" for e in reads)
    assert any(e.detail_value["identified"] for e in reads) and any(not e.detail_value["identified"] for e in reads)
    opened_entry = next(e for e in entries if e.action == "investigation-open")
    assert opened_entry.detail_value["reason"] == REASON and opened_entry.resource_id == r["hep"]


async def test_only_disease_control_officers_of_a_cdc_tenant(c, region):
    r = region
    assert (await c.get("/api/cdc/cases", headers=officer(r["cdc"], "doctor"))).status_code == 403
    assert (await c.get("/api/cdc/cases", headers=officer(r["hosp"]))).status_code == 403  # not a cdc tenant
    # through FHIR an officer reaches no patient data, in their tenant or the hospital's
    h = officer(r["hosp"])
    assert (await c.get(f"{FHIR}/Condition/{r['hep']}", headers=h)).status_code == 403
    assert (await c.get(f"{FHIR}/Condition/{r['hep']}", headers=officer(r["cdc"]))).status_code == 403


def test_the_reportable_list_covers_the_demo_infections():
    from yiyun.identity.cdc import disease_of, reportable_codes, reportable_diseases

    assert {d.klass for d in reportable_diseases()} == {"A", "B", "C"}
    assert disease_of("B18.107").name_zh == "病毒性肝炎"
    assert disease_of("B08.401").name_zh == "手足口病"
    assert disease_of("A09.903").name_zh == "其它感染性腹泻病"
    assert disease_of("J11.101").klass == "C"
    assert disease_of("B08.501") is None  # herpangina is not notifiable
    assert disease_of("I10.x09") is None
    assert "A00.000" in reportable_codes() and "I10.x09" not in reportable_codes()
