"""Real-name verification of patients (sandbox provider) and registration of doctors."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import auth_headers
from yiyun.core import resident_id as gb11643
from yiyun.core.db import unit_of_work
from yiyun.identity import accounts, sessions
from yiyun.identity.audit_tables import audit_log
from yiyun.identity.tables import account, membership
from yiyun.identity.verification import (
    DAILY_ATTEMPTS,
    SandboxIdentityProvider,
    check_certificate,
    is_patient_real_name_verified,
    is_real_name_verified,
)
from yiyun.identity.verification_tables import practitioner_registration, real_name, real_name_attempt

PASSWORD = "Correct-horse-battery-9"
RID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
LISI = gb11643.build("430104", date(1985, 6, 15), 123)  # 李四 in the sandbox
def unique_number() -> str:
    """A well-formed number nobody else in the test database has verified (the sandbox matches any name)."""
    n = uuid.uuid4().int
    return gb11643.build("110101", date(1950, 1, 1) + timedelta(days=n % 20000), (n >> 20) % 999)


UNLISTED = unique_number()
UNKNOWN = gb11643.build("110101", date(1992, 2, 29), 999)
BAD_CHECK = LISI[:17] + ("0" if LISI[17] != "0" else "1")
FHIR = "/fhir/R4"


# ------------------------------------------------------------------ the sandbox
async def test_sandbox_outcomes():
    p = SandboxIdentityProvider()
    assert (await p.verify("张三", "11010519491231002X")).matched
    assert (await p.verify("李四", LISI)).reason == "matched"
    assert (await p.verify("王五", LISI)).reason == "name-mismatch"
    assert (await p.verify("赵老太", "440524188001010014")).reason == "deceased"
    assert (await p.verify("钱五", gb11643.build("320102", date(1978, 3, 8), 468))).reason == "revoked"
    assert (await p.verify("孙七", UNKNOWN)).reason == "not-found"
    assert (await p.verify("孙七", UNLISTED)).matched
    assert (await p.verify("孙七", BAD_CHECK)).reason == "invalid-id"
    assert (await p.verify("孙七", gb11643.build("110101", date(2099, 1, 1), 1))).reason == "invalid-id"


def test_certificate_format():
    assert check_certificate(" 110440100012345 ") == "110440100012345"
    for bad in ("11044010001234", "1104401000123456", "11044010001234X", ""):
        with pytest.raises(Exception):
            check_certificate(bad)


# ------------------------------------------------------------------ personas
async def hospital(engine, tenant: str, kind: str = "hospital") -> None:
    async with unit_of_work(engine) as conn:
        await accounts.create_tenant(conn, tenant, name="岳麓医院", kind=kind)


def new_mobile() -> str:
    return "139" + str(uuid.uuid4().int)[:8]


async def patient_persona(client, engine, tenant: str) -> tuple[str, str, dict]:
    """(account id, Patient id, bearer headers) of a patient account linked to its Patient."""
    phone = new_mobile()
    pid = (await client.post(f"{FHIR}/Patient", json={"resourceType": "Patient", "name": [{"text": "李四"}],
                                                      "telecom": [{"system": "phone", "value": phone}]})).json()["id"]
    async with unit_of_work(engine) as conn:
        acct = await accounts.create_patient_account(conn, phone, "李四", tenant=tenant, fhir_ref=f"Patient/{pid}")
    headers = auth_headers(tenant, scope="patient/*.rs", subject=acct.id, roles=("patient",), patient=pid,
                           fhir_user=f"Patient/{pid}")
    return acct.id, pid, headers


async def audit_actions(engine, tenant: str, action: str) -> list:
    async with unit_of_work(engine, write=False) as conn:
        return (await conn.execute(select(audit_log).where(audit_log.c.tenant == tenant, audit_log.c.action == action)
                                   .order_by(audit_log.c.seq))).all()


# ------------------------------------------------------------------ real-name verification
async def test_real_name_flow(client, engine, tenant):
    await hospital(engine, tenant)
    acct, pid, me = await patient_persona(client, engine, tenant)
    r = await client.get("/api/identity/real-name", headers=me)
    assert r.status_code == 200 and r.json()["verified"] is False and r.json()["attempts_left"] == DAILY_ATTEMPTS

    r = await client.post("/api/identity/real-name", json={"name": "李四", "resident_id": BAD_CHECK}, headers=me)
    assert r.status_code == 422, r.text
    r = await client.post("/api/identity/real-name", json={"name": "王五", "resident_id": LISI}, headers=me)
    assert r.status_code == 200 and r.json()["verified"] is False and r.json()["reason"] == "name-mismatch"
    async with unit_of_work(engine, write=False) as conn:
        assert not await is_real_name_verified(conn, acct)

    r = await client.post("/api/identity/real-name", json={"name": " 李四 ", "resident_id": LISI.lower()}, headers=me)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verified"] is True and body["resident_id"] == LISI[:6] + "********" + LISI[14:]
    assert body["attempts_left"] == DAILY_ATTEMPTS - 3 and body["name"] == "李*"
    async with unit_of_work(engine, write=False) as conn:
        assert await is_real_name_verified(conn, acct)
        assert await is_patient_real_name_verified(conn, tenant, pid)
        assert not await is_patient_real_name_verified(conn, tenant, "someone-else")
        row = (await conn.execute(select(real_name).where(real_name.c.account_id == acct))).one()
        attempts = (await conn.execute(select(real_name_attempt.c.outcome).where(
            real_name_attempt.c.account_id == acct).order_by(real_name_attempt.c.id))).scalars().all()
    assert LISI not in repr(tuple(row)) and row.id_sealed.startswith("v1.")
    assert attempts == ["invalid-id", "name-mismatch", "matched"]
    # the verified number is the Patient's official identifier (read back in full by the system)
    patient = (await client.get(f"{FHIR}/Patient/{pid}")).json()
    assert {"use": "official", "system": RID_SYSTEM, "value": LISI} in patient["identifier"]
    assert (await client.get(f"{FHIR}/Patient?identifier={RID_SYSTEM}|{LISI}")).json()["entry"][0]["resource"]["id"] == pid
    # ... and the patient sees their own number in full
    own = (await client.get(f"{FHIR}/Patient/{pid}", headers=me)).json()
    assert {"use": "official", "system": RID_SYSTEM, "value": LISI} in own["identifier"]

    assert (await client.post("/api/identity/real-name", json={"name": "李四", "resident_id": LISI},
                              headers=me)).status_code == 409
    logged = await audit_actions(engine, tenant, "real-name")
    assert [e.outcome for e in logged] == ["denied", "denied", "ok"]
    assert all(LISI not in (e.detail or "") for e in logged) and logged[-1].patient == f"Patient/{pid}"


async def test_daily_limit_and_one_number_one_account(client, engine, tenant):
    await hospital(engine, tenant)
    _, _, me = await patient_persona(client, engine, tenant)
    for _ in range(DAILY_ATTEMPTS):
        r = await client.post("/api/identity/real-name", json={"name": "孙七", "resident_id": UNKNOWN}, headers=me)
        assert r.status_code == 200 and r.json()["reason"] == "not-found"
    r = await client.post("/api/identity/real-name", json={"name": "孙七", "resident_id": UNLISTED}, headers=me)
    assert r.status_code == 429
    assert (await audit_actions(engine, tenant, "real-name"))[-1].outcome == "denied"

    _, _, other = await patient_persona(client, engine, tenant)
    _, _, third = await patient_persona(client, engine, tenant)
    assert (await client.post("/api/identity/real-name", json={"name": "孙七", "resident_id": UNLISTED},
                              headers=other)).json()["verified"] is True
    r = await client.post("/api/identity/real-name", json={"name": "孙七", "resident_id": UNLISTED}, headers=third)
    assert r.json()["verified"] is False and r.json()["reason"] == "id-taken"


async def test_real_name_is_for_patients(client, engine, tenant):
    await hospital(engine, tenant)
    doctor = auth_headers(tenant, scope="user/*.rs", subject="dr-li", roles=("doctor",))
    assert (await client.post("/api/identity/real-name", json={"name": "李四", "resident_id": LISI},
                              headers=doctor)).status_code == 403
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://testserver")
    async with bare:
        assert (await bare.get("/api/identity/real-name")).status_code == 401


async def test_real_name_page(client, engine, tenant):
    await hospital(engine, tenant)
    acct, _, _ = await patient_persona(client, engine, tenant)
    async with unit_of_work(engine) as conn:
        cookie, csrf = await sessions.open_session(conn, acct, tenant)
    phone = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://testserver",
                              cookies={sessions.COOKIE: cookie})
    async with phone:
        page = await phone.get("/me/real-name")
        assert page.status_code == 200 and "实名认证" in page.text and 'name="resident_id"' in page.text
        number = unique_number()
        refused = await phone.post("/me/real-name", data={"name": "李四", "resident_id": number})
        assert refused.status_code == 403  # no CSRF token
        wrong = await phone.post("/me/real-name", data={"csrf_token": csrf, "name": "李四", "resident_id": BAD_CHECK})
        assert wrong.status_code == 200 and "校验位" in wrong.text
        done = await phone.post("/me/real-name", data={"csrf_token": csrf, "name": "李四", "resident_id": number})
        assert done.status_code == 200 and 'id="verified"' in done.text and number not in done.text
        assert number[:6] + "********" + number[14:] in done.text


# ------------------------------------------------------------------ doctor registration
def registration(hospital_slug: str, **extra) -> dict:
    return {"username": f"dr-wang-{uuid.uuid4().hex[:6]}", "password": PASSWORD, "name": "王医生",
            "tenant": hospital_slug, "department": "心血管内科", "certificate": unique_certificate(), **extra}


def unique_certificate() -> str:
    return "1104301" + str(uuid.uuid4().int)[:8]


async def admin_headers(engine, tenant: str) -> dict:
    async with unit_of_work(engine) as conn:
        admin = await accounts.create_staff(conn, username=f"admin-{tenant}", display_name="管理员", password=PASSWORD,
                                            tenant_slug=tenant, roles=["admin"])
    return auth_headers(tenant, scope="user/*.cruds", subject=admin.username, roles=("admin",))


async def test_registration_approved(client, engine, tenant):
    await hospital(engine, tenant)
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://testserver")
    async with anonymous:
        r = await anonymous.post("/api/identity/practitioner-registrations", json=registration(tenant))
        assert r.status_code == 201, r.text
        reg = r.json()
        assert reg["status"] == "pending"
        for bad, status in (({"certificate": "11043010001234"}, 400), ({"certificate": reg["certificate"]}, 409),
                            ({"tenant": "no-such-hospital"}, 404), ({"password": "short"}, 400)):
            r = await anonymous.post("/api/identity/practitioner-registrations", json=registration(tenant, **bad))
            assert r.status_code == status, (bad, r.text)
        assert (await anonymous.get("/api/identity/practitioner-registrations")).status_code == 401

    async with unit_of_work(engine, write=False) as conn:
        acct = (await conn.execute(select(account).where(account.c.username == reg["username"]))).one()
    assert acct.status == "pending"
    # a pending doctor: the session is refused, and a token reaches no patient
    pid = (await client.post(f"{FHIR}/Patient", json={"resourceType": "Patient", "name": [{"text": "患者"}]})).json()["id"]
    async with unit_of_work(engine) as conn:
        cookie, _ = await sessions.open_session(conn, acct.id, tenant)
    browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://testserver",
                                cookies={sessions.COOKIE: cookie})
    async with browser:
        assert (await browser.get(f"{FHIR}/Patient/{pid}")).status_code == 401
    pending_token = auth_headers(tenant, scope="user/*.rs", subject=reg["username"], roles=("doctor",))
    assert (await client.get(f"{FHIR}/Patient/{pid}", headers=pending_token)).status_code == 404
    assert (await client.get(f"{FHIR}/Patient", headers=pending_token)).json().get("entry", []) == []

    admin = await admin_headers(engine, tenant)
    doctor = auth_headers(tenant, scope="user/*.rs", subject="dr-li", roles=("doctor",))
    assert (await client.get("/api/identity/practitioner-registrations", headers=doctor)).status_code == 403
    listed = (await client.get("/api/identity/practitioner-registrations?status=pending", headers=admin)).json()
    assert [x["id"] for x in listed["registrations"]] == [reg["id"]]
    other_tenant_admin = auth_headers(f"{tenant}-x", scope="user/*.cruds", subject="admin-x", roles=("admin",))
    assert (await client.post(f"/api/identity/practitioner-registrations/{reg['id']}/approve",
                              headers=other_tenant_admin)).status_code == 404

    r = await client.post(f"/api/identity/practitioner-registrations/{reg['id']}/approve", headers=admin)
    assert r.status_code == 200, r.text
    ref = r.json()["practitioner_ref"]
    assert r.json()["status"] == "approved" and ref.startswith("Practitioner/")
    assert (await client.post(f"/api/identity/practitioner-registrations/{reg['id']}/approve",
                              headers=admin)).status_code == 409
    practitioner = (await client.get(f"{FHIR}/{ref}")).json()
    assert practitioner["identifier"][0]["value"] == reg["certificate"]
    roles = (await client.get(f"{FHIR}/PractitionerRole?practitioner={ref}")).json()["entry"]
    assert roles[0]["resource"]["specialty"][0]["text"] == "心血管内科"
    async with unit_of_work(engine, write=False) as conn:
        acct = (await conn.execute(select(account).where(account.c.id == acct.id))).one()
        member = (await conn.execute(select(membership).where(membership.c.account_id == acct.id))).one()
    assert acct.status == "active" and acct.fhir_ref == ref and member.fhir_ref == ref and member.roles == "doctor"
    async with unit_of_work(engine) as conn:
        cookie, _ = await sessions.open_session(conn, acct.id, tenant)
    browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://testserver",
                                cookies={sessions.COOKIE: cookie})
    async with browser:
        assert (await browser.get(f"{FHIR}/{ref}")).status_code == 200
    decisions = [e.detail for e in await audit_actions(engine, tenant, "practitioner-registration")]
    assert '"pending"' in decisions[0] and '"approved"' in decisions[-1]


async def test_registration_rejected(client, engine, tenant):
    await hospital(engine, tenant)
    cert = unique_certificate()
    r = await client.post("/api/identity/practitioner-registrations", json=registration(tenant, certificate=cert))
    reg = r.json()
    admin = await admin_headers(engine, tenant)
    r = await client.post(f"/api/identity/practitioner-registrations/{reg['id']}/reject", json={"reason": ""},
                          headers=admin)
    assert r.status_code == 400
    r = await client.post(f"/api/identity/practitioner-registrations/{reg['id']}/reject",
                          json={"reason": "执业证书编码与国家医师电子注册系统不符"}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    async with unit_of_work(engine, write=False) as conn:
        status = (await conn.execute(select(account.c.status).where(account.c.username == reg["username"]))).scalar()
        row = (await conn.execute(select(practitioner_registration).where(practitioner_registration.c.id == reg["id"]))).one()
    assert status == "disabled" and row.reason.startswith("执业证书") and row.decided_by == f"admin-{tenant}"
    # the certificate number may be registered again after a rejection
    again = await client.post("/api/identity/practitioner-registrations",
                              json=registration(tenant, certificate=cert))
    assert again.status_code == 201
    # nor may a doctor the hospital already keeps register again
    kept = unique_certificate()
    await client.post(f"{FHIR}/Practitioner", json={"resourceType": "Practitioner", "identifier": [
        {"system": "https://yiyun.example.cn/fhir/sid/practising-certificate/doctor", "value": kept}]})
    assert (await client.post("/api/identity/practitioner-registrations",
                              json=registration(tenant, certificate=kept))).status_code == 409
    # pharmacies do not take doctor registrations
    await hospital(engine, f"{tenant}-ph", kind="pharmacy")
    assert (await client.post("/api/identity/practitioner-registrations",
                              json=registration(f"{tenant}-ph"))).status_code == 400


async def test_registration_pages(client, engine, tenant):
    await hospital(engine, tenant)
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://testserver")
    async with anonymous:
        page = await anonymous.get("/register/doctor")
        assert page.status_code == 200 and "岳麓医院" in page.text
        bad = await anonymous.post("/register/doctor", data=registration(tenant, certificate="123"))
        assert bad.status_code == 400 and "15 位数字" in bad.text
        cert = unique_certificate()
        ok = await anonymous.post("/register/doctor", data=registration(tenant, certificate=cert))
        assert ok.status_code == 200 and 'id="registered"' in ok.text
    async with unit_of_work(engine) as conn:
        admin = await accounts.create_staff(conn, username=f"admin-{tenant}", display_name="管理员", password=PASSWORD,
                                            tenant_slug=tenant, roles=["admin"])
        cookie, csrf = await sessions.open_session(conn, admin.id, tenant)
    desk = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://testserver",
                             cookies={sessions.COOKIE: cookie})
    async with desk:
        listing = await desk.get("/admin/registrations")
        assert listing.status_code == 200 and cert in listing.text
        async with unit_of_work(engine, write=False) as conn:
            reg_id = (await conn.execute(select(practitioner_registration.c.id).where(
                practitioner_registration.c.certificate == cert))).scalar()
        r = await desk.post(f"/admin/registrations/{reg_id}/approve", data={"csrf_token": csrf})
        assert r.status_code == 303
        assert cert not in (await desk.get("/admin/registrations")).text
        assert cert in (await desk.get("/admin/registrations?status=approved")).text
