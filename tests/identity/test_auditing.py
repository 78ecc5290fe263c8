"""Reading the audit trail: FHIR AuditEvent (read-only, tenant-scoped, paged), the auditors'
JSON API (filters, CSV export, chain status), "who saw my record" and the security event API."""

from __future__ import annotations

import csv
import io
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from tests.conftest import auth_headers
from yiyun.core.db import unit_of_work
from yiyun.fhir.validation import validate_resource
from yiyun.identity.audit import AuditEntry, append, query

FHIR = "/fhir/R4"


@pytest_asyncio.fixture
async def anon(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


def auditor(tenant, role="auditor"):
    return auth_headers(tenant, "user/*.rs", subject="shen", roles=(role,))


def doctor(tenant, subject="li", practitioner="li"):
    return auth_headers(tenant, "user/*.cruds", subject=subject, roles=("doctor",),
                        fhir_user=f"Practitioner/{practitioner}")


async def in_care(c, tenant, *patients, practitioner="li"):
    """A care relationship (an Encounter) between the doctor and each patient."""
    for pid in patients:
        await create(c, tenant, {"resourceType": "Encounter", "status": "in-progress",
                                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                                 "subject": {"reference": f"Patient/{pid}"},
                                 "participant": [{"individual": {"reference": f"Practitioner/{practitioner}"}}]})


async def setup_people(engine, tenant) -> str:
    """The tenant and a doctor account (李医生); returns the doctor's username."""
    from yiyun.identity.accounts import create_staff, create_tenant

    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="长沙市第一医院", kind="hospital")
        await create_staff(conn, username=f"li-{tenant}", display_name="李医生", password="", password_hash="x",
                           tenant_slug=tenant, roles=["doctor"])
    return f"li-{tenant}"


async def create(c, tenant, body):
    r = await c.post(f"{FHIR}/{body['resourceType']}", json=body, headers=auth_headers(tenant))
    assert r.status_code == 201, r.text
    return r.json()


async def flushed(app):
    await app.state.policy.recorder.close()  # waits for flushes in flight


async def entries(engine, tenant, **kw):
    async with unit_of_work(engine, write=False) as conn:
        return await query(conn, tenant=tenant, limit=1000, **kw)


async def test_audit_event_search_read_and_paging(app, anon, engine, tenant):
    p = await create(anon, tenant, {"resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}]})
    await in_care(anon, tenant, p["id"])
    for _ in range(3):
        assert (await anon.get(f"{FHIR}/Patient/{p['id']}", headers=doctor(tenant))).status_code == 200
    await flushed(app)
    r = await anon.get(f"{FHIR}/AuditEvent", params={"entity": f"Patient/{p['id']}", "subtype": "read", "_count": "2"},
                       headers=auditor(tenant))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = r.json()
    assert bundle["type"] == "searchset" and len(bundle["entry"]) == 2
    ev = bundle["entry"][0]["resource"]
    assert ev["resourceType"] == "AuditEvent" and ev["agent"][0]["who"]["identifier"]["value"] == "li"
    assert validate_resource(ev) == [] or all(i.severity != "error" for i in validate_resource(ev))
    nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    assert nxt
    r2 = await anon.get(FHIR + "/AuditEvent", params=parse_qsl(urlsplit(nxt[0]).query), headers=auditor(tenant))
    page2 = r2.json()
    assert len(page2["entry"]) == 1 and not [x for x in page2["link"] if x["relation"] == "next"]
    ids = [e["resource"]["id"] for e in bundle["entry"] + page2["entry"]]
    assert len(set(ids)) == 3
    # read one by id
    one = await anon.get(f"{FHIR}/AuditEvent/{ids[0]}", headers=auditor(tenant, "privacy-officer"))
    assert one.status_code == 200 and one.json()["id"] == ids[0]
    # a system token with system/AuditEvent.rs may read too
    sys_h = auth_headers(tenant, "system/AuditEvent.rs")
    assert (await anon.get(f"{FHIR}/AuditEvent/{ids[0]}", headers=sys_h)).status_code == 200
    # reading the log is itself recorded
    await flushed(app)
    reads = await entries(engine, tenant, action="audit-read")
    assert {r.actor for r in reads} >= {"shen", "service:tests"} and all(r.outcome == "ok" for r in reads)


async def test_audit_event_filters(app, anon, engine, tenant):
    async with unit_of_work(engine) as conn:
        await append(conn, [
            AuditEntry(tenant=tenant, actor="Practitioner/a", action="read", resource_type="Patient", resource_id="p1",
                       patient="p1", ts=1_700_000_000_000_000),
            AuditEntry(tenant=tenant, actor="Practitioner/b", action="update", resource_type="Observation",
                       resource_id="o1", patient="Patient/p2", ts=1_710_000_000_000_000),
            AuditEntry(tenant=tenant, actor="Practitioner/b", action="break-glass", outcome="ok",
                       resource_type="Patient", resource_id="p1", patient="p1", purpose="ETREAT",
                       ts=1_720_000_000_000_000),
            AuditEntry(tenant=tenant, actor="anonymous", action="login-failed", outcome="denied",
                       ts=1_720_000_000_000_001),
        ])

    async def ids(**params):
        r = await anon.get(f"{FHIR}/AuditEvent", params=params, headers=auditor(tenant))
        assert r.status_code == 200, r.text
        return [int(e["resource"]["id"].rsplit("-", 1)[1]) for e in r.json()["entry"]
                if e["resource"]["resourceType"] == "AuditEvent"]

    assert await ids(patient="Patient/p1") == [3, 1]
    assert await ids(patient="p2") == [2]
    assert await ids(agent="Practitioner/b") == [3, 2]
    assert await ids(entity="Observation/o1") == [2]
    assert await ids(action="U") == [2]
    assert await ids(subtype="break-glass") == [3]
    assert await ids(outcome="4") == [4]
    assert await ids(date="ge2024-03-01", **{"patient": "p1"}) == [3]
    assert await ids(date="lt2024-01-01") == [1]
    assert await ids(_id=f"{tenant}-2") == [2]
    # unknown parameters are ignored with a warning, or refused under strict handling
    r = await anon.get(f"{FHIR}/AuditEvent", params={"foo": "1"}, headers=auditor(tenant))
    assert r.status_code == 200 and r.json()["entry"][-1]["search"]["mode"] == "outcome"
    r = await anon.get(f"{FHIR}/AuditEvent", params={"foo": "1"}, headers={**auditor(tenant), "Prefer": "handling=strict"})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    for bad in ({"date": "gt-not-a-date"}, {"_count": "x"}, {"action": "Z"}, {"patient": "../etc"}):
        r = await anon.get(f"{FHIR}/AuditEvent", params=bad, headers=auditor(tenant))
        assert r.status_code == 400, (bad, r.text)


async def test_audit_events_are_tenant_scoped_and_role_gated(app, anon, engine, tenant):
    other = tenant + "-b"
    async with unit_of_work(engine) as conn:
        await append(conn, [AuditEntry(tenant=tenant, actor="x", action="read", resource_type="Patient", resource_id="p")])
    r = await anon.get(f"{FHIR}/AuditEvent/{tenant}-1", headers=auditor(other))
    assert r.status_code == 404
    r = await anon.get(f"{FHIR}/AuditEvent", headers=auditor(other))
    assert [e for e in r.json()["entry"] if e["resource"]["resourceType"] == "AuditEvent"] == []
    # a doctor, a patient and a token without AuditEvent scope are refused, and that is recorded
    for h in (doctor(tenant), auth_headers(tenant, "patient/*.rs", patient="p", roles=("patient",)),
              auth_headers(tenant, "system/Patient.rs")):
        r = await anon.get(f"{FHIR}/AuditEvent", headers=h)
        assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    assert (await anon.get(f"{FHIR}/AuditEvent")).status_code == 401
    await flushed(app)
    denied = await entries(engine, tenant, action="audit-read", outcome="denied")
    assert len(denied) == 3


async def test_audit_events_are_read_only(app, anon, engine, tenant):
    ev = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2024-01-01T00:00:00Z",
          "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}
    for method, url in (("POST", "/AuditEvent"), ("PUT", f"/AuditEvent/{tenant}-1"), ("DELETE", f"/AuditEvent/{tenant}-1"),
                        ("PATCH", f"/AuditEvent/{tenant}-1")):
        r = await anon.request(method, FHIR + url, json=ev, headers=auth_headers(tenant))
        assert r.status_code == 405, (method, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": ev, "request": {"method": "POST", "url": "AuditEvent"}}]}
    r = await anon.post(FHIR, json=bundle, headers=auth_headers(tenant))
    assert r.status_code == 405, r.text
    await flushed(app)
    refused = await entries(engine, tenant, action="request-refused")
    assert {(e.detail_value["method"], e.detail_value["status"]) for e in refused} >= {("POST", 405), ("DELETE", 405)}


async def test_audit_entries_api_filters_csv_and_chain(app, anon, engine, tenant):
    li = await setup_people(engine, tenant)
    p = await create(anon, tenant, {"resourceType": "Patient", "name": [{"family": "王"}]})
    await in_care(anon, tenant, p["id"])
    await anon.get(f"{FHIR}/Patient/{p['id']}", headers=doctor(tenant, li))
    async with unit_of_work(engine) as conn:
        await append(conn, [AuditEntry(tenant=tenant, actor="=cmd|'/c calc'!A1", action="login-failed",
                                       outcome="denied")])
    await flushed(app)
    r = await anon.get("/api/audit/entries", params={"actor": li, "resource_type": "Patient"}, headers=auditor(tenant))
    assert r.status_code == 200, r.text
    data = r.json()
    assert [e["action"] for e in data["entries"]] == ["read"]
    assert data["entries"][0]["actor_name"] == "李医生" and data["entries"][0]["patient"] == p["id"]
    r = await anon.get("/api/audit/entries", params={"limit": 1}, headers=auditor(tenant))
    assert len(r.json()["entries"]) == 1 and r.json()["next_before"]
    r = await anon.get("/api/audit/entries", params={"since": "2999-01-01"}, headers=auditor(tenant))
    assert r.json()["entries"] == []
    r = await anon.get("/api/audit/entries", params={"since": "yesterday"}, headers=auditor(tenant))
    assert r.status_code == 400
    assert (await anon.get("/api/audit/entries", headers=doctor(tenant))).status_code == 403
    # CSV: one row per entry, formulas neutralised
    r = await anon.get("/api/audit/export.csv", headers=auditor(tenant))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert any(row["actor"] == "'=cmd|'/c calc'!A1" for row in rows)
    assert any(row["actor_name"] == "李医生" for row in rows)
    # chain status, before and after tampering
    r = await anon.get("/api/audit/chain", headers=auditor(tenant))
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["head_seq"] >= 3
    async with unit_of_work(engine) as conn:
        await conn.execute(text("UPDATE audit_log SET actor='nobody' WHERE tenant=:t AND seq=1"), {"t": tenant})
    r = await anon.get("/api/audit/chain", headers=auditor(tenant))
    assert r.json()["ok"] is False and r.json()["problems"][0] == {
        "seq": 1, "kind": "changed", "message": r.json()["problems"][0]["message"]}
    await flushed(app)
    exports = await entries(engine, tenant, action="export")
    assert exports and exports[0].resource_type == "AuditEvent"


async def test_who_saw_my_record(app, anon, engine, tenant):
    li = await setup_people(engine, tenant)
    me = await create(anon, tenant, {"resourceType": "Patient", "name": [{"family": "张"}]})
    other = await create(anon, tenant, {"resourceType": "Patient", "name": [{"family": "赵"}]})
    await in_care(anon, tenant, me["id"], other["id"])
    obs = await create(anon, tenant, {"resourceType": "Observation", "status": "final", "code": {"text": "血压"},
                                      "subject": {"reference": f"Patient/{me['id']}"}})
    theirs = await create(anon, tenant, {"resourceType": "Observation", "status": "final", "code": {"text": "血糖"},
                                         "subject": {"reference": f"Patient/{other['id']}"}})
    assert (await anon.get(f"{FHIR}/Observation/{obs['id']}", headers=doctor(tenant, li))).status_code == 200
    assert (await anon.get(f"{FHIR}/Observation/{theirs['id']}", headers=doctor(tenant, li))).status_code == 200
    me_h = auth_headers(tenant, "patient/*.rs", subject=f"patient:{me['id']}", patient=me["id"], roles=("patient",))
    assert (await anon.get(f"{FHIR}/Observation/{obs['id']}", headers=me_h)).status_code == 200  # my own read
    async with unit_of_work(engine) as conn:
        await append(conn, [AuditEntry(tenant=tenant, actor=li, role="doctor", action="break-glass",
                                       resource_type="Patient", resource_id=me["id"], patient=me["id"],
                                       purpose="ETREAT")])
    await flushed(app)
    r = await anon.get("/api/me/access-log", headers=me_h)
    assert r.status_code == 200, r.text
    log = r.json()
    assert log["patient"] == f"Patient/{me['id']}"
    kinds = [(e["who"], e["action"], e["resource_label"], e["break_glass"]) for e in log["entries"]]
    assert ("李医生", "read", "检查检验结果", False) in kinds
    assert ("李医生", "break-glass", "基本信息", True) in kinds
    assert all(e["organisation"] == "长沙市第一医院" for e in log["entries"] if e["who"] == "李医生")
    assert {e["who_role"] for e in log["entries"] if e["who"] == "李医生"} == {"医生"}
    # the system service's writes show as such; nothing about the other patient, nothing of my own
    assert not any(e["who"].startswith("patient:") for e in log["entries"])
    other_h = auth_headers(tenant, "patient/*.rs", subject=f"patient:{other['id']}", patient=other["id"],
                           roles=("patient",))
    r = await anon.get("/api/me/access-log", headers=other_h)
    labels = [(e["who"], e["resource_label"]) for e in r.json()["entries"]]
    assert ("李医生", "检查检验结果") in labels and not any(e["break_glass"] for e in r.json()["entries"])
    # staff have no "my access log"; paging works
    assert (await anon.get("/api/me/access-log", headers=doctor(tenant))).status_code == 403
    r = await anon.get("/api/me/access-log", params={"limit": 1}, headers=me_h)
    assert len(r.json()["entries"]) == 1 and r.json()["next_before"]


async def test_security_event_api(app, anon, engine, tenant):
    async with unit_of_work(engine) as conn:
        await append(conn, [AuditEntry(tenant=tenant, actor="li", role="doctor", action="break-glass",
                                       resource_type="Patient", resource_id="p1", patient="p1", purpose="ETREAT")])
    po = auditor(tenant, "privacy-officer")
    r = await anon.post("/api/security/scan", headers=po)
    assert r.status_code == 200 and r.json()["by_kind"] == {"break-glass": 1}
    r = await anon.get("/api/security/events", params={"status": "open"}, headers=auditor(tenant))
    assert r.status_code == 200
    [ev] = r.json()["events"]
    assert ev["kind"] == "break-glass" and ev["severity"] == "high"
    # auditors read but do not acknowledge; doctors do neither
    assert (await anon.post(f"/api/security/events/{ev['id']}/acknowledge", headers=auditor(tenant))).status_code == 403
    assert (await anon.get("/api/security/events", headers=doctor(tenant))).status_code == 403
    r = await anon.post(f"/api/security/events/{ev['id']}/acknowledge", headers=po)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged" and r.json()["acknowledged_by"] == "shen"
    r = await anon.post(f"/api/security/events/{ev['id']}/acknowledge", json={"status": "closed"}, headers=po)
    assert r.json()["status"] == "closed"
    assert (await anon.post("/api/security/events/" + "0" * 32 + "/acknowledge", headers=po)).status_code == 404
    other = auditor(tenant + "-x", "privacy-officer")
    assert (await anon.post(f"/api/security/events/{ev['id']}/acknowledge", headers=other)).status_code == 404
    # tuning the detectors
    r = await anon.put("/api/security/policy", json={"after_hours": {"start": "23:00"}}, headers=po)
    assert r.status_code == 200 and r.json()["after_hours"]["start"] == "23:00"
    r = await anon.put("/api/security/policy", json={"after_hours": {"start": "9"}}, headers=po)
    assert r.status_code == 400
    assert (await anon.get("/api/security/policy", headers=po)).json()["after_hours"]["start"] == "23:00"


@pytest.mark.parametrize("seconds", ["0.2"])
def test_server_scans_in_the_background(db_url, tenant, seconds):
    """With YIYUN_SECURITY_SCAN_SECONDS the server raises events without anyone running the command."""
    import asyncio
    import os
    import time

    from tests.conftest import running_server
    from yiyun.core.db import dispose_engines, get_engine

    async def seed():
        async with unit_of_work(get_engine()) as conn:
            await append(conn, [AuditEntry(tenant=tenant, actor="li", role="doctor", action="break-glass",
                                           resource_type="Patient", resource_id="p1", patient="p1")])
        await dispose_engines()

    asyncio.run(seed())
    env = {**os.environ, "YIYUN_SECURITY_SCAN_SECONDS": seconds}
    with running_server(env) as base:
        h = auditor(tenant, "privacy-officer")
        deadline = time.time() + 15
        events = []
        while time.time() < deadline and not events:
            events = httpx.get(f"{base}/api/security/events", headers=h, timeout=5).json()["events"]
            time.sleep(0.2)
    assert [e["kind"] for e in events] == ["break-glass"]
