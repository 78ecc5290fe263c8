"""Patient Consent for regional sharing and research: granted and revoked by the patient (JSON
API and the /me/consent page), read across hospitals only while it is active, every regional
read audited where the record is kept. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest_asyncio

from tests.conftest import auth_headers
from tests.identity.conftest import make

FHIR = "/fhir/R4"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RID = "urn:oid:2.16.156.10011.1.3"


@pytest_asyncio.fixture
async def region(engine, c):
    """Hospital A (where the patient signs in and Dr Li treats them) and hospital B (an earlier
    visit of the same person, found by resident ID)."""
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_tenant

    run = uuid.uuid4().hex[:8]
    a, b = f"cs-a-{run}", f"cs-b-{run}"
    async with unit_of_work(engine) as conn:
        await create_tenant(conn, a, name="甲医院", kind="hospital")
        await create_tenant(conn, b, name="乙医院", kind="hospital")
    number = f"4301021975{uuid.uuid4().int % 10**7:07d}3"
    person = {"resourceType": "Patient", "name": [{"family": "赵", "given": ["六"]}], "gender": "male",
              "identifier": [{"system": RID, "value": number}]}
    pa = await make(c, a, person)
    pb = await make(c, b, person)
    await make(c, a, {"resourceType": "Encounter", "status": "finished", "class": {"system": ACT, "code": "AMB"},
                      "subject": {"reference": f"Patient/{pa['id']}"},
                      "participant": [{"individual": {"reference": "Practitioner/li"}}]})
    cond_b = await make(c, b, {"resourceType": "Condition", "subject": {"reference": f"Patient/{pb['id']}"},
                               "code": {"coding": [{"system": "http://www.nhc.gov.cn/icd10/clinical-v2",
                                                    "code": "E11.900", "display": "2型糖尿病"}]}})
    return {"a": a, "b": b, "pa": pa["id"], "pb": pb["id"], "cond_b": cond_b["id"]}


def patient_token(tenant, pid):
    return auth_headers(tenant, "patient/*.cruds", roles=("patient",), patient=pid, subject=f"patient:{pid}",
                        fhir_user=f"Patient/{pid}")


def dr_li(tenant):
    return auth_headers(tenant, "user/*.cruds", roles=("doctor",), subject="staff:li", fhir_user="Practitioner/li")


async def regional(c, r, headers=None):
    return await c.get(f"/api/sharing/patients/{r['pa']}/regional-records", params={"types": "Condition"},
                       headers=headers or dr_li(r["a"]))


async def test_regional_records_need_the_patients_consent_and_revocation_acts_at_once(app, c, region, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query

    r = region
    before = await regional(c, r)
    assert before.status_code == 200 and before.json()["sources"] == []  # nothing, not even that B exists
    async with unit_of_work(engine, write=False) as conn:
        refused = await query(conn, tenant=r["b"], actor="staff:li", outcome="denied", limit=5)
    assert [(e.resource_id, e.detail_value["reason"]) for e in refused] == [(r["pb"], "no regional-sharing consent")]
    me = patient_token(r["a"], r["pa"])
    assert (await c.get("/api/consent", headers=me)).json()["consents"]["regional-sharing"]["active"] is False
    granted = await c.post("/api/consent", json={"kind": "regional-sharing"}, headers=me)
    assert granted.status_code == 201, granted.text
    assert sorted(g["tenant"] for g in granted.json()["granted"]) == sorted([r["a"], r["b"]])
    state = (await c.get("/api/consent", headers=me)).json()["consents"]
    assert state["regional-sharing"]["active"] and not state["research"]["active"]
    # the Consent is a FHIR resource in each hospital, in the patient's compartment
    cid = state["regional-sharing"]["consent"].split("/")[1]
    consent = (await c.get(f"{FHIR}/Consent/{cid}", headers=me)).json()
    assert consent["status"] == "active" and consent["provision"]["type"] == "permit"
    assert consent["scope"]["coding"][0]["code"] == "patient-privacy"

    shared = (await regional(c, r)).json()["sources"]
    assert [s["tenant"] for s in shared] == [r["b"]]
    assert [x["id"] for x in shared[0]["records"]["Condition"]] == [r["cond_b"]]
    # every record read is audited in the hospital that keeps it, with purpose and consent
    async with unit_of_work(engine, write=False) as conn:
        entries = await query(conn, tenant=r["b"], actor="staff:li", limit=10)
    read = next(e for e in entries if e.resource_id == r["cond_b"])
    assert read.purpose == "TREAT" and read.patient == f"Patient/{r['pb']}"
    assert read.detail_value["via"] == "regional-sharing" and read.detail_value["requester_tenant"] == r["a"]

    # revoked on the JSON API: the very next request is refused
    revoked = await c.delete(f"/api/consent/{cid}", headers=me)
    assert revoked.status_code == 200 and len(revoked.json()["revoked"]) == 2
    assert (await regional(c, r)).json()["sources"] == []
    assert (await c.get(f"{FHIR}/Consent/{cid}", headers=me)).json()["status"] == "inactive"


async def test_who_may_read_and_manage_regional_records(c, region):
    r = region
    await c.post("/api/consent", json={"kind": "regional-sharing"}, headers=patient_token(r["a"], r["pa"]))
    # a doctor without a relationship with the patient: as if the patient did not exist
    other_doctor = auth_headers(r["a"], "user/*.cruds", roles=("doctor",), subject="staff:wu",
                                fhir_user="Practitioner/wu")
    assert (await regional(c, r, other_doctor)).status_code == 404
    for role in ("pharmacist", "admin", "auditor"):
        h = auth_headers(r["a"], "user/*.cruds", roles=(role,), subject=f"staff:{role}", fhir_user="Practitioner/li")
        assert (await regional(c, r, h)).status_code == 403, role
    # B's staff cannot read A's records through their own FHIR API either
    assert (await c.get(f"{FHIR}/Patient/{r['pa']}", headers=dr_li(r["b"]))).status_code == 404
    bad = await c.get(f"/api/sharing/patients/{r['pa']}/regional-records", params={"types": "Account"},
                      headers=dr_li(r["a"]))
    assert bad.status_code == 400
    # only the patient manages their consent; an unknown kind is a clear 400
    assert (await c.post("/api/consent", json={"kind": "regional-sharing"}, headers=dr_li(r["a"]))).status_code == 403
    me = patient_token(r["a"], r["pa"])
    assert (await c.post("/api/consent", json={"kind": "marketing"}, headers=me)).status_code == 400
    # someone else's consent is not found
    stranger = await make(c, r["a"], {"resourceType": "Patient", "name": [{"family": "钱"}]})
    theirs = await c.post("/api/consent", json={"kind": "research"}, headers=patient_token(r["a"], stranger["id"]))
    their_id = theirs.json()["consents"]["research"]["consent"].split("/")[1]
    assert (await c.delete(f"/api/consent/{their_id}", headers=me)).status_code == 404


async def test_research_consent_is_asked_by_other_modules(c, region, engine):
    from yiyun.identity.consent import RESEARCH, has_consent

    r = region
    assert await has_consent(engine, r["b"], r["pb"], RESEARCH) is None
    me = patient_token(r["a"], r["pa"])
    assert (await c.post("/api/consent", json={"kind": "research"}, headers=me)).status_code == 201
    assert (await has_consent(engine, r["b"], r["pb"], RESEARCH)) is not None
    # granting twice keeps one consent
    again = (await c.post("/api/consent", json={"kind": "research"}, headers=me)).json()
    assert all(not g["created"] for g in again["granted"])
    cid = again["consents"]["research"]["consent"].split("/")[1]
    await c.delete(f"/api/consent/{cid}", headers=me)
    assert await has_consent(engine, r["b"], r["pb"], RESEARCH) is None


async def test_the_consent_page_grants_and_withdraws(c, region, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_patient_account
    from yiyun.identity.sessions import open_session

    r = region
    async with unit_of_work(engine) as conn:
        acct = await create_patient_account(conn, f"139{uuid.uuid4().int % 10**8:08d}", "赵六", tenant=r["a"],
                                            fhir_ref=f"Patient/{r['pa']}")
        cookie, csrf = await open_session(conn, acct.id, r["a"])
    c.cookies.set("yiyun_session", cookie)
    page = await c.get("/me/consent")
    assert page.status_code == 200 and 'data-state="not-granted"' in page.text
    assert "在本区域医疗机构之间共享我的病历" in page.text
    refused = await c.post("/me/consent", data={"kind": "regional-sharing", "action": "grant"})
    assert refused.status_code == 403
    done = await c.post("/me/consent", data={"kind": "regional-sharing", "action": "grant", "csrf_token": csrf})
    assert done.status_code == 303
    assert (await regional(c, r)).json()["sources"][0]["tenant"] == r["b"]
    page = await c.get("/me/consent?done=granted")
    assert 'id="consent-regional-sharing"' in page.text and "撤回授权" in page.text
    await c.post("/me/consent", data={"kind": "regional-sharing", "action": "revoke", "csrf_token": csrf})
    c.cookies.clear()
    assert (await regional(c, r)).json()["sources"] == []
    # signed out: the page sends the browser to the patient sign-in
    assert (await c.get("/me/consent")).status_code in (302, 303)
