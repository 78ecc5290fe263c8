"""An administrator resets a staff member's lost second factor: a reason is required, the reset
is audited, raises a security event for the privacy officers, signs the user out everywhere
(sessions and app grants) and makes them enrol again; never one's own, never another
organisation's account. SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid

import pyotp
from sqlalchemy import select

from tests.conftest import auth_headers

FHIR = "/fhir/R4"
PASSWORD = "Xq8!vR2#mT6pLw9z"
REASON = "手机丢失，已当面核验工作证"


async def _people(engine, tenant):
    """A hospital with an admin (signed in on a page), a doctor with TOTP, an open session, an
    app grant; a second admin; another hospital's admin."""
    from yiyun.core.db import unit_of_work
    from yiyun.identity import totp
    from yiyun.identity.accounts import create_staff, create_tenant
    from yiyun.identity.oauth import grants
    from yiyun.identity.sessions import open_session

    tag = uuid.uuid4().hex[:6]
    other = f"t-{uuid.uuid4().hex[:12]}"
    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="第一医院", kind="hospital")
        await create_tenant(conn, other, name="第二医院", kind="hospital")
        admin = await create_staff(conn, username=f"admin-{tag}", display_name="王管理", password=PASSWORD,
                                   tenant_slug=tenant, roles=["admin"])
        admin2 = await create_staff(conn, username=f"admin2-{tag}", display_name="赵管理", password=PASSWORD,
                                    tenant_slug=tenant, roles=["admin", "privacy-officer"])
        stranger = await create_staff(conn, username=f"far-{tag}", display_name="钱管理", password=PASSWORD,
                                      tenant_slug=other, roles=["admin"])
        doctor = await create_staff(conn, username=f"li-{tag}", display_name="李医生", password=PASSWORD,
                                    tenant_slug=tenant, roles=["doctor"], fhir_ref="Practitioner/li")
        for who in (doctor, admin):
            secret = await totp.pending_secret(conn, who.id)
            assert await totp.confirm_enrolment(conn, who.id, pyotp.TOTP(secret).now())
        admin_cookie, admin_csrf = await open_session(conn, admin.id, tenant)
        doctor_cookie, _ = await open_session(conn, doctor.id, tenant)
        grant = await grants.create_grant(conn, client_id=f"app-{tag}", tenant=tenant, subject=doctor.username,
                                          roles=("doctor",), scope="user/*.rs offline_access", account_id=doctor.id,
                                          fhir_user="Practitioner/li")
    return {"admin": admin, "admin2": admin2, "stranger": stranger, "doctor": doctor, "other": other,
            "admin_cookie": admin_cookie, "admin_csrf": admin_csrf, "doctor_cookie": doctor_cookie, "grant": grant}


def _as(tenant, acct, roles):
    return auth_headers(tenant, "user/*.rs", roles=tuple(roles), subject=acct.username)


async def test_an_administrator_resets_a_lost_second_factor(app, c, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity import totp
    from yiyun.identity.audit import query
    from yiyun.identity.sessions import load_session
    from yiyun.identity.tokens import issue_access_token

    p = await _people(engine, tenant)
    doctor, admin = p["doctor"], p["admin"]
    h = _as(tenant, admin, ["admin"])
    listed = (await c.get("/api/identity/staff/second-factors", headers=h)).json()["accounts"]
    mine = {a["username"]: a for a in listed}
    assert mine[doctor.username]["second_factor"] and mine[doctor.username]["recovery_codes_left"] == 10
    assert p["stranger"].username not in mine  # another hospital's staff are not listed
    app_token, _ = issue_access_token(subject=doctor.username, tenant=tenant, scope="user/*.rs", roles=("doctor",),
                                      fhir_user="Practitioner/li", client_id=p["grant"].client_id,
                                      grant_id=p["grant"].grant_id)
    app_h = {"Authorization": f"Bearer {app_token}"}
    assert (await c.get(f"{FHIR}/Practitioner", headers=app_h)).status_code == 200
    url = f"/api/identity/staff/{doctor.id}/second-factor/reset"
    # a reason is required
    for reason in ("", "   ", "丢"):
        r = await c.post(url, json={"reason": reason}, headers=h)
        assert r.status_code == 400 and "理由" in r.json()["detail"]
    assert (await c.post(url, json={}, headers=h)).status_code == 400
    r = await c.post(url, json={"reason": REASON}, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["sessions_closed"] == 1 and out["grants_revoked"] == 1 and out["must_enrol"]
    async with unit_of_work(engine, write=False) as conn:
        assert not await totp.has_second_factor(conn, doctor.id)
        assert await totp.recovery_codes_left(conn, doctor.id) == 0
        assert await load_session(conn, p["doctor_cookie"], touch=False) is None  # signed out everywhere
        entries = await query(conn, tenant=tenant, action="second-factor-reset", outcome="ok", limit=10)
        refused = await query(conn, tenant=tenant, action="second-factor-reset", outcome="denied", limit=10)
    assert len(refused) == 4 and all("理由" in e.detail_value["reason"] for e in refused)
    assert len(entries) == 1 and entries[0].actor == admin.username
    assert entries[0].resource == f"Account/{doctor.id}" and entries[0].detail_value["reason"] == REASON
    # the app's tokens stop working at once
    assert (await c.get(f"{FHIR}/Practitioner", headers=app_h)).status_code == 401
    # nothing left to reset: 409
    assert (await c.post(url, json={"reason": REASON}, headers=h)).status_code == 409
    # the privacy officers see the event at once, high severity, with who and why
    po = _as(tenant, p["admin2"], ["privacy-officer"])
    events = (await c.get("/api/security/events", params={"kind": "second-factor-reset"}, headers=po)).json()["events"]
    assert len(events) == 1
    ev = events[0]
    assert ev["severity"] == "high" and ev["subject"] == doctor.username
    assert ev["detail"]["by"] == admin.username and ev["detail"]["reason"] == REASON
    # the administrator who reset it may not close its event; someone else may
    ack = f"/api/security/events/{ev['id']}/acknowledge"
    assert (await c.post(ack, json={"status": "closed"}, headers=h)).status_code == 403
    assert (await c.post(ack, json={"status": "closed"}, headers=_as(tenant, p["admin2"], ["admin"]))).status_code == 200


async def test_who_may_reset_whose_second_factor(app, c, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity import totp
    from yiyun.identity.audit import query

    p = await _people(engine, tenant)
    doctor, admin = p["doctor"], p["admin"]
    body = {"reason": REASON}
    # not an admin: 403 (the doctor, a privacy officer)
    for who, roles in ((doctor, ["doctor"]), (p["admin2"], ["privacy-officer"])):
        r = await c.post(f"/api/identity/staff/{admin.id}/second-factor/reset", json=body,
                         headers=_as(tenant, who, roles))
        assert r.status_code == 403, roles
    assert (await c.get("/api/identity/staff/second-factors", headers=_as(tenant, doctor, ["doctor"]))).status_code == 403
    # not one's own
    r = await c.post(f"/api/identity/staff/{admin.id}/second-factor/reset", json=body,
                     headers=_as(tenant, admin, ["admin"]))
    assert r.status_code == 403 and "自己" in r.json()["detail"]
    # another hospital's admin cannot reach this hospital's doctor: 404, as an unknown account
    far = _as(p["other"], p["stranger"], ["admin"])
    assert (await c.post(f"/api/identity/staff/{doctor.id}/second-factor/reset", json=body,
                         headers=far)).status_code == 404
    assert (await c.post(f"/api/identity/staff/{uuid.uuid4()}/second-factor/reset", json=body,
                         headers=_as(tenant, admin, ["admin"]))).status_code == 404
    async with unit_of_work(engine, write=False) as conn:
        assert await totp.has_second_factor(conn, doctor.id) and await totp.has_second_factor(conn, admin.id)
        refused = await query(conn, tenant=tenant, action="second-factor-reset", limit=10)
    assert refused and all(e.outcome == "denied" for e in refused)
    # a patient account is not staff: 404
    from yiyun.identity.accounts import create_patient_account

    async with unit_of_work(engine) as conn:
        patient = await create_patient_account(conn, f"139{uuid.uuid4().int % 10**8:08d}", "张三", tenant)
    assert (await c.post(f"/api/identity/staff/{patient.id}/second-factor/reset", json=body,
                         headers=_as(tenant, admin, ["admin"]))).status_code == 404


async def test_the_reset_page_and_enrolling_again(app, c, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity import totp
    from yiyun.identity.tables import account

    p = await _people(engine, tenant)
    doctor, admin = p["doctor"], p["admin"]
    c.cookies.set("yiyun_session", p["admin_cookie"])
    page = await c.get("/admin/second-factor")
    assert page.status_code == 200 and f'data-id="{doctor.id}"' in page.text and "两步验证" in page.text
    assert f'action="/admin/second-factor/{admin.id}/reset"' not in page.text  # no button for oneself
    action = f"/admin/second-factor/{doctor.id}/reset"
    assert (await c.post(action, data={"reason": REASON})).status_code == 403  # no CSRF token
    bad = await c.post(action, data={"reason": "", "csrf_token": p["admin_csrf"]})
    assert bad.status_code == 400 and 'id="error"' in bad.text
    ok = await c.post(action, data={"reason": REASON, "csrf_token": p["admin_csrf"]})
    assert ok.status_code == 303 and ok.headers["location"] == f"/admin/second-factor?done={doctor.username}"
    done = await c.get(ok.headers["location"])
    assert 'id="done"' in done.text and doctor.username in done.text
    async with unit_of_work(engine, write=False) as conn:
        assert not await totp.has_second_factor(conn, doctor.id)
    # the doctor signs in with the password and is sent to enrol a new authenticator
    c.cookies.clear()
    form = await c.get("/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    r = await c.post("/signin", data={"username": doctor.username, "password": PASSWORD, "csrf_token": token,
                                      "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/signin/enrol"
    async with unit_of_work(engine, write=False) as conn:
        assert (await conn.execute(select(account.c.status).where(account.c.id == doctor.id))).scalar() == "active"
