"""A guardian grants and withdraws consent for a ward, in every hospital holding the ward,
recorded as given by the guardian; guardianship of a minor ends at 18, and an adult ward's
own choice stands against the guardian. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import date

import pytest_asyncio

from tests.conftest import auth_headers
from tests.identity.conftest import make
from tests.identity.test_consent import dr_li, patient_token

FHIR = "/fhir/R4"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RID = "urn:oid:2.16.156.10011.1.3"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def born_years_ago(years: int) -> str:
    return date(date.today().year - years, 1, 1).isoformat()


@pytest_asyncio.fixture
async def family(engine, c):
    """Hospital A: mother 母 and her son 子 (10 years old), Dr Li treats the son; hospital B: an
    earlier visit of the son (same resident ID) with a diagnosis."""
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_tenant

    run = uuid.uuid4().hex[:8]
    a, b = f"cg-a-{run}", f"cg-b-{run}"
    async with unit_of_work(engine) as conn:
        await create_tenant(conn, a, name="甲医院", kind="hospital")
        await create_tenant(conn, b, name="乙医院", kind="hospital")
    number = f"4301022015{uuid.uuid4().int % 10**7:07d}1"
    son = {"resourceType": "Patient", "name": [{"family": "周", "given": ["子"]}], "birthDate": born_years_ago(10),
           "identifier": [{"system": RID, "value": number}]}
    child_a, child_b = await make(c, a, son), await make(c, b, son)
    mother = await make(c, a, {"resourceType": "Patient", "name": [{"family": "周", "given": ["母"]}]})
    rp = await make(c, a, {"resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{child_a['id']}"},
                           "relationship": [{"coding": [{"system": ROLE, "code": "MTH"}]}]})
    mother["link"] = [{"other": {"reference": f"RelatedPerson/{rp['id']}"}, "type": "seealso"}]
    r = await c.put(f"{FHIR}/Patient/{mother['id']}", json=mother, headers=auth_headers(a))
    assert r.status_code == 200, r.text
    await make(c, a, {"resourceType": "Encounter", "status": "finished", "class": {"system": ACT, "code": "AMB"},
                      "subject": {"reference": f"Patient/{child_a['id']}"},
                      "participant": [{"individual": {"reference": "Practitioner/li"}}]})
    await make(c, b, {"resourceType": "Condition", "subject": {"reference": f"Patient/{child_b['id']}"},
                      "code": {"text": "支气管哮喘"}})
    return {"a": a, "b": b, "child": child_a, "child_b": child_b["id"], "mother": mother["id"], "rp": rp}


async def shared_with_li(c, f) -> list[str]:
    r = await c.get(f"/api/sharing/patients/{f['child']['id']}/regional-records", params={"types": "Condition"},
                    headers=dr_li(f["a"]))
    assert r.status_code == 200, r.text
    return [s["tenant"] for s in r.json()["sources"]]


async def test_a_guardian_grants_and_withdraws_sharing_for_a_child(c, family):
    f = family
    mother = patient_token(f["a"], f["mother"])
    assert await shared_with_li(c, f) == []
    state = (await c.get("/api/consent", headers=mother)).json()
    assert [w["patient"] for w in state["wards"]] == [f"Patient/{f['child']['id']}"]
    assert state["wards"][0]["name"] == "周子"

    granted = await c.post("/api/consent", json={"kind": "regional-sharing", "ward": f["child"]["id"]}, headers=mother)
    assert granted.status_code == 201, granted.text
    assert sorted(g["tenant"] for g in granted.json()["granted"]) == sorted([f["a"], f["b"]])
    assert await shared_with_li(c, f) == [f["b"]]
    # the mother's own record is untouched
    assert (await c.get("/api/consent", headers=mother)).json()["consents"]["regional-sharing"]["active"] is False

    # FHIR: the same Consent as the patient's own, the guardian as performer and verifier
    ward_state = (await c.get("/api/consent", headers=mother)).json()["wards"][0]["consents"]["regional-sharing"]
    assert ward_state["given_by"] == {"role": "guardian", "name": "周母（监护人）"}
    cid = ward_state["consent"].split("/")[1]
    consent = (await c.get(f"{FHIR}/Consent/{cid}", headers=auth_headers(f["a"]))).json()
    assert consent["patient"] == {"reference": f"Patient/{f['child']['id']}"}
    assert consent["performer"][0]["reference"] == f"RelatedPerson/{f['rp']['id']}"
    assert consent["verification"][0]["verifiedWith"]["reference"] == f"RelatedPerson/{f['rp']['id']}"
    in_b = (await c.get(f"{FHIR}/Consent", params={"patient": f"Patient/{f['child_b']}"},
                        headers=auth_headers(f["b"]))).json()["entry"][0]["resource"]
    assert in_b["performer"][0]["identifier"]["value"] == f"{f['a']}/RelatedPerson/{f['rp']['id']}"

    withdrawn = await c.delete(f"/api/consent/{cid}", params={"ward": f["child"]["id"]}, headers=mother)
    assert withdrawn.status_code == 200 and len(withdrawn.json()["revoked"]) == 2
    assert await shared_with_li(c, f) == []


async def test_only_the_guardian_acts_for_the_ward(c, family):
    f = family
    stranger = await make(c, f["a"], {"resourceType": "Patient", "name": [{"family": "吴"}]})
    other = patient_token(f["a"], stranger["id"])
    r = await c.post("/api/consent", json={"kind": "regional-sharing", "ward": f["child"]["id"]}, headers=other)
    assert r.status_code == 403 and "监护人" in r.text
    bad = await c.post("/api/consent", json={"kind": "research", "ward": {"id": f["child"]["id"]}},
                       headers=patient_token(f["a"], f["mother"]))
    assert bad.status_code == 400
    assert await shared_with_li(c, f) == []
    # a guardian's consent cannot be withdrawn through one's own id
    mother = patient_token(f["a"], f["mother"])
    cid = (await c.post("/api/consent", json={"kind": "research", "ward": f["child"]["id"]}, headers=mother)
           ).json()["consents"]["research"]["consent"].split("/")[1]
    assert (await c.delete(f"/api/consent/{cid}", headers=mother)).status_code == 404
    # a RelatedPerson marked inactive ends the guardianship at once
    await c.put(f"{FHIR}/RelatedPerson/{f['rp']['id']}", json={**f["rp"], "active": False}, headers=auth_headers(f["a"]))
    r = await c.post("/api/consent", json={"kind": "regional-sharing", "ward": f["child"]["id"]}, headers=mother)
    assert r.status_code == 403


async def test_at_eighteen_the_ward_decides_and_their_choice_replaces_the_guardians(c, family):
    f = family
    mother = patient_token(f["a"], f["mother"])
    assert (await c.post("/api/consent", json={"kind": "regional-sharing", "ward": f["child"]["id"]},
                         headers=mother)).status_code == 201
    # the son comes of age: the mother's consent still stands, but she no longer decides
    grown = {**f["child"], "birthDate": born_years_ago(19)}
    assert (await c.put(f"{FHIR}/Patient/{f['child']['id']}", json=grown, headers=auth_headers(f["a"]))).status_code == 200
    assert await shared_with_li(c, f) == [f["b"]]
    r = await c.post("/api/consent", json={"kind": "regional-sharing", "ward": f["child"]["id"]}, headers=mother)
    assert r.status_code == 403
    assert (await c.get("/api/consent", headers=mother)).json()["wards"] == []
    # his own consent replaces hers: given by him now
    son = patient_token(f["a"], f["child"]["id"])
    own = await c.post("/api/consent", json={"kind": "regional-sharing"}, headers=son)
    assert own.status_code == 201 and all(g["created"] for g in own.json()["granted"])
    state = own.json()["consents"]["regional-sharing"]
    assert state["active"] and state["given_by"] == {"role": "patient", "name": None}
    found = (await c.get(f"{FHIR}/Consent", params={"patient": f"Patient/{f['child']['id']}"},
                         headers=auth_headers(f["a"]))).json()["entry"]
    assert sorted(e["resource"]["status"] for e in found) == ["active", "inactive"]
    assert await shared_with_li(c, f) == [f["b"]]


async def test_an_adult_wards_own_choice_stands_against_the_guardian(c, family):
    """Guardianship of an adult without full capacity (《民法典》第二十八条) continues, but what the
    ward decided as an adult stands (第三十五条)."""
    from yiyun.identity.care import ADULT_GUARDIAN_CODE, GUARDIANSHIP_SYSTEM

    f = family
    rp = {**f["rp"], "relationship": [{"coding": [{"system": ROLE, "code": "GUARD"}]},
                                      {"coding": [{"system": GUARDIANSHIP_SYSTEM, "code": ADULT_GUARDIAN_CODE}]}]}
    assert (await c.put(f"{FHIR}/RelatedPerson/{rp['id']}", json=rp, headers=auth_headers(f["a"]))).status_code == 200
    grown = {**f["child"], "birthDate": born_years_ago(30)}
    assert (await c.put(f"{FHIR}/Patient/{f['child']['id']}", json=grown, headers=auth_headers(f["a"]))).status_code == 200
    mother = patient_token(f["a"], f["mother"])
    assert (await c.post("/api/consent", json={"kind": "research", "ward": f["child"]["id"]},
                         headers=mother)).status_code == 201
    son = patient_token(f["a"], f["child"]["id"])
    cid = (await c.get("/api/consent", headers=son)).json()["consents"]["research"]["consent"].split("/")[1]
    assert (await c.delete(f"/api/consent/{cid}", headers=son)).status_code == 200
    again = await c.post("/api/consent", json={"kind": "research", "ward": f["child"]["id"]}, headers=mother)
    assert again.status_code == 409
    assert (await c.get("/api/consent", headers=son)).json()["consents"]["research"]["active"] is False
    # the other kind, which he never decided himself, the guardian still manages
    assert (await c.post("/api/consent", json={"kind": "regional-sharing", "ward": f["child"]["id"]},
                         headers=mother)).status_code == 201


async def test_the_consent_page_shows_the_wards_and_the_guardian_grants_there(c, family, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_patient_account
    from yiyun.identity.sessions import open_session

    f = family
    async with unit_of_work(engine) as conn:
        acct = await create_patient_account(conn, f"138{uuid.uuid4().int % 10**8:08d}", "周母", tenant=f["a"],
                                            fhir_ref=f"Patient/{f['mother']}")
        cookie, csrf = await open_session(conn, acct.id, f["a"])
    c.cookies.set("yiyun_session", cookie)
    page = await c.get("/me/consent")
    assert page.status_code == 200 and "周子 的授权（您是监护人）" in page.text
    assert f'id="consent-regional-sharing-{f["child"]["id"]}"' in page.text
    done = await c.post("/me/consent", data={"kind": "regional-sharing", "action": "grant", "ward": f["child"]["id"],
                                             "csrf_token": csrf})
    assert done.status_code == 303
    page = await c.get("/me/consent?done=granted")
    assert "由 周母（监护人） 代为授权。" in page.text
    c.cookies.clear()
    assert await shared_with_li(c, f) == [f["b"]]
