"""Break-glass: a doctor or nurse declares an emergency with a reason, reads the patient for a
limited time, the declaration is in the audit chain and privacy officers see the grants.
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from tests.conftest import auth_headers
from tests.identity.conftest import make

FHIR = "/fhir/R4"
REASON = "患者昏迷送入急诊，需查看既往病史和过敏史"


def staff(tenant, role="doctor", who="er1"):
    return auth_headers(tenant, "user/*.cruds", roles=(role,), subject=f"staff:{who}", fhir_user=f"Practitioner/{who}")


async def setup(c, tenant):
    p = await make(c, tenant, {"resourceType": "Patient", "name": [{"family": "孙"}], "gender": "female"})
    allergy = await make(c, tenant, {"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{p['id']}"},
                                     "code": {"text": "青霉素"}})
    return p["id"], allergy["id"]


async def test_break_glass_opens_for_a_limited_time_and_is_audited(app, c, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query
    from yiyun.identity.sharing_tables import break_glass

    pid, aid = await setup(c, tenant)
    dr = staff(tenant)
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{aid}", headers=dr)).status_code == 404
    short = await c.post("/api/break-glass", json={"patient": pid, "reason": "急诊"}, headers=dr)
    assert short.status_code == 400 and "理由" in short.json()["detail"]
    missing = await c.post("/api/break-glass", json={"patient": pid}, headers=dr)
    assert missing.status_code == 400
    unknown = await c.post("/api/break-glass", json={"patient": "nobody", "reason": REASON}, headers=dr)
    assert unknown.status_code == 404
    r = await c.post("/api/break-glass", json={"patient": f"Patient/{pid}", "reason": REASON}, headers=dr)
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["active"] and grant["patient"] == pid and grant["practitioner"] == "er1"
    assert 3.9 * 3600e6 < grant["expires_ts"] - grant["created_ts"] <= 4 * 3600e6
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{aid}", headers=dr)).status_code == 200
    # the declaration is in the tenant's audit chain, committed with the grant
    async with unit_of_work(engine, write=False) as conn:
        entries = await query(conn, tenant=tenant, action="break-glass", limit=5)
    assert len(entries) == 1
    e = entries[0]
    assert e.actor == "staff:er1" and e.purpose == "ETREAT" and e.patient == f"Patient/{pid}"
    assert e.detail_value["reason"] == REASON and e.detail_value["grant"] == grant["grant_id"]
    # privacy officers list the active grants; nobody else does
    po = staff(tenant, "privacy-officer", "po1")
    listed = (await c.get("/api/break-glass", headers=po)).json()["grants"]
    assert [g["grant_id"] for g in listed] == [grant["grant_id"]] and listed[0]["reason"] == REASON
    assert (await c.get("/api/break-glass", headers=dr)).status_code == 403
    # a grant expires: the next request is refused again
    async with unit_of_work(engine) as conn:
        await conn.execute(update(break_glass).where(break_glass.c.grant_id == grant["grant_id"])
                           .values(expires_ts=grant["created_ts"]))
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{aid}", headers=dr)).status_code == 404
    assert (await c.get("/api/break-glass", headers=po)).json()["grants"] == []
    assert len((await c.get("/api/break-glass", params={"all": "true"}, headers=po)).json()["grants"]) == 1


async def test_who_may_break_the_glass_and_ending_it(c, tenant):
    pid, aid = await setup(c, tenant)
    for role in ("pharmacist", "admin", "auditor", "privacy-officer"):
        r = await c.post("/api/break-glass", json={"patient": pid, "reason": REASON}, headers=staff(tenant, role))
        assert r.status_code == 403, role
    no_practitioner = auth_headers(tenant, "user/*.cruds", roles=("doctor",), subject="staff:x")
    assert (await c.post("/api/break-glass", json={"patient": pid, "reason": REASON},
                         headers=no_practitioner)).status_code == 403
    nurse = staff(tenant, "nurse", "nu7")
    grant = (await c.post("/api/break-glass", json={"patient": pid, "reason": REASON}, headers=nurse)).json()
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{aid}", headers=nurse)).status_code == 200
    # it is that nurse's grant, not their colleague's
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{aid}", headers=staff(tenant))).status_code == 404
    assert (await c.delete(f"/api/break-glass/{grant['grant_id']}", headers=staff(tenant))).status_code == 404
    ended = await c.delete(f"/api/break-glass/{grant['grant_id']}", headers=staff(tenant, "privacy-officer", "po"))
    assert ended.status_code == 200 and not ended.json()["active"]
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{aid}", headers=nurse)).status_code == 404
    # a grant of another tenant is not found
    other = f"t-{uuid.uuid4().hex[:12]}"
    assert (await c.delete(f"/api/break-glass/{grant['grant_id']}",
                           headers=staff(other, "privacy-officer", "po"))).status_code == 404


async def test_the_break_glass_page(c, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_staff, create_tenant
    from yiyun.identity.sessions import open_session

    pid, aid = await setup(c, tenant)
    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="急救中心医院", kind="hospital")
        acct = await create_staff(conn, username=f"er-{uuid.uuid4().hex[:6]}", display_name="急诊医生",
                                  password="Xq8!vR2#mT6pLw9z", tenant_slug=tenant, roles=["doctor"],
                                  fhir_ref="Practitioner/er9")
        cookie, csrf = await open_session(conn, acct.id, tenant)
    c.cookies.set("yiyun_session", cookie)
    page = await c.get("/break-glass", params={"patient": pid})
    assert page.status_code == 200 and 'id="break-glass-form"' in page.text and pid in page.text
    bad = await c.post("/break-glass", data={"patient": pid, "reason": "紧急", "csrf_token": csrf})
    assert bad.status_code == 400 and 'id="error"' in bad.text
    ok = await c.post("/break-glass", data={"patient": pid, "reason": REASON, "csrf_token": csrf})
    assert ok.status_code == 200 and 'id="grant"' in ok.text
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{aid}")).status_code == 200  # the session, now with the grant
    refused = await c.post("/break-glass", data={"patient": pid, "reason": REASON})
    assert refused.status_code == 403


async def test_reads_through_a_grant_are_audited_as_break_the_glass(app, c, tenant, engine):
    """Purpose of use BTG (HL7 v3 ActReason) on every read the grant alone allowed; the
    patient's "who saw my record" marks them as emergency access."""
    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query

    pid, aid = await setup(c, tenant)
    seen = await make(c, tenant, {"resourceType": "Patient", "name": [{"family": "周"}]})
    seen_allergy = await make(c, tenant, {"resourceType": "AllergyIntolerance", "code": {"text": "花粉"},
                                          "patient": {"reference": f"Patient/{seen['id']}"}})
    await make(c, tenant, {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "EMER"},
                           "subject": {"reference": f"Patient/{seen['id']}"},
                           "participant": [{"individual": {"reference": "Practitioner/er1"}}]})
    dr = staff(tenant)
    assert (await c.post("/api/break-glass", json={"patient": pid, "reason": REASON}, headers=dr)).status_code == 201
    assert (await c.post("/api/break-glass", json={"patient": seen["id"], "reason": REASON},
                         headers=dr)).status_code == 201
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{aid}", headers=dr)).status_code == 200
    assert (await c.get(f"{FHIR}/AllergyIntolerance", params={"patient": pid}, headers=dr)).status_code == 200
    # a patient the doctor is treating anyway: an ordinary read although a grant exists too
    assert (await c.get(f"{FHIR}/AllergyIntolerance/{seen_allergy['id']}", headers=dr)).status_code == 200
    await app.state.policy.recorder.close()  # waits for flushes in flight
    async with unit_of_work(engine, write=False) as conn:
        reads = await query(conn, tenant=tenant, actor="staff:er1", action="read", limit=10)
        searches = await query(conn, tenant=tenant, actor="staff:er1", action="search", limit=10)
    by_resource = {e.resource_id: e.purpose for e in reads}
    assert by_resource == {aid: "BTG", seen_allergy["id"]: "TREAT"}
    assert [(e.purpose, e.patient) for e in searches] == [("BTG", pid)]
    me = auth_headers(tenant, "patient/*.rs", subject=f"patient:{pid}", patient=pid, roles=("patient",))
    log = (await c.get("/api/me/access-log", headers=me)).json()["entries"]
    reads_seen = [e for e in log if e["action"] in ("read", "search")]
    assert len(reads_seen) == 2 and all(e["break_glass"] and e["purpose"] == "BTG" for e in reads_seen)
    assert all(e["purpose_label"] == "紧急调阅" for e in reads_seen)
