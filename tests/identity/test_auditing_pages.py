"""Pages of the audit trail with a signed-in browser session: the audit page (filters,
paging, chain status, escaping), security events (acknowledge with CSRF) and the
patient's "who saw my record"."""

from __future__ import annotations

import re

from sqlalchemy import text

from tests.conftest import auth_headers
from yiyun.core.db import unit_of_work
from yiyun.identity.audit import AuditEntry, append, query
from yiyun.identity.security_events import scan

FHIR = "/fhir/R4"
SCRIPT = "<script>alert('x')</script>"


async def person(engine, tenant, username, name, roles, fhir_ref=None):
    """A staff account with a membership in `tenant` and a signed-in session: (cookie, csrf)."""
    from yiyun.identity.accounts import create_staff, create_tenant, get_tenant
    from yiyun.identity.sessions import open_session
    from yiyun.core.errors import NotFound

    async with unit_of_work(engine) as conn:
        try:
            await get_tenant(conn, tenant)
        except NotFound:
            await create_tenant(conn, tenant, name="长沙市第一医院", kind="hospital")
        acct = await create_staff(conn, username=f"{username}-{tenant}", display_name=name, password="",
                                  password_hash="x", tenant_slug=tenant, roles=list(roles), fhir_ref=fhir_ref)
        return acct, *await open_session(conn, acct.id, tenant)


async def test_audit_page_filters_pages_verifies_and_escapes(app, c, engine, tenant):
    _a, cookie, _csrf = await person(engine, tenant, "shen", "沈审计", ["auditor"])
    async with unit_of_work(engine) as conn:
        await append(conn, [AuditEntry(tenant=tenant, actor=f"Practitioner/p{i}", role="doctor", action="read",
                                       resource_type="Patient", resource_id=f"p{i}", patient=f"p{i}")
                            for i in range(60)]
                     + [AuditEntry(tenant=tenant, actor=SCRIPT, action="signin-failed", outcome="denied",
                                   detail={"reason": SCRIPT})])
    c.cookies.set("yiyun_session", cookie)
    r = await c.get("/audit")
    assert r.status_code == 200 and "审计日志" in r.text
    assert SCRIPT not in r.text and "&lt;script&gt;" in r.text
    assert len(re.findall(r"<tr><td>\d+</td>", r.text)) == 50
    older = re.search(r'href="(/audit\?before=\d+)" id="older"', r.text)
    assert older
    r2 = await c.get(older.group(1).replace("&amp;", "&"))
    assert len(re.findall(r"<tr><td>\d+</td>", r2.text)) == 11
    r = await c.get("/audit", params={"outcome": "denied"})
    assert len(re.findall(r"<tr><td>\d+</td>", r.text)) == 1
    r = await c.get("/audit", params={"patient": "p7", "action": "read"})
    assert len(re.findall(r"<tr><td>\d+</td>", r.text)) == 1 and "Practitioner/p7" in r.text
    r = await c.get("/audit", params={"since": "not a time"})
    assert r.status_code == 200 and 'role="alert"' in r.text
    r = await c.get("/audit", params={"verify": "1"})
    assert "校验通过" in r.text
    async with unit_of_work(engine) as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE tenant=:t AND seq=5"), {"t": tenant})
    r = await c.get("/audit", params={"verify": "1"})
    assert "校验发现问题" in r.text and "removed" in r.text
    r = await c.get("/audit", params={"lang": "en"})
    assert "Audit log" in r.text
    # the page views were recorded
    await app.state.policy.recorder.close()
    async with unit_of_work(engine, write=False) as conn:
        views = await query(conn, tenant=tenant, action="audit-read")
    assert len(views) >= 7 and all((v.detail_value or {}).get("page") == "/audit" for v in views)


async def test_audit_pages_need_the_right_role_and_a_session(app, c, engine, tenant):
    r = await c.get("/audit")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=/audit")
    r = await c.get("/me/access-log")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin/patient")
    _a, cookie, _csrf = await person(engine, tenant, "doc", "李医生", ["doctor"])
    c.cookies.set("yiyun_session", cookie)
    for url in ("/audit", "/audit/security-events", "/me/access-log"):
        r = await c.get(url)
        assert r.status_code == 403 and 'id="forbidden-message"' in r.text, url


async def test_security_events_page_acknowledges_with_csrf(app, c, engine, tenant):
    _a, cookie, csrf = await person(engine, tenant, "po", "周隐私", ["privacy-officer"])
    async with unit_of_work(engine) as conn:
        await append(conn, [AuditEntry(tenant=tenant, actor="Practitioner/li", role="doctor", action="break-glass",
                                       resource_type="Patient", resource_id="p1", patient="p1", purpose="ETREAT")])
    await scan(engine, tenant=tenant)
    c.cookies.set("yiyun_session", cookie)
    r = await c.get("/audit/security-events")
    assert r.status_code == 200 and "紧急调阅" in r.text
    event_id = re.search(r'data-id="([0-9a-f]{32})"', r.text).group(1)
    assert f'value="{csrf}"' in r.text
    r = await c.post(f"/audit/security-events/{event_id}/acknowledge", data={"status": "acknowledged"})
    assert r.status_code == 403  # no CSRF token
    r = await c.post(f"/audit/security-events/{event_id}/acknowledge",
                     data={"status": "acknowledged", "csrf_token": csrf})
    assert r.status_code == 303
    r = await c.get("/audit/security-events", params={"status": "acknowledged"})
    assert event_id in r.text and "已确认" in r.text
    r = await c.get("/audit/security-events", params={"status": "open"})
    assert event_id not in r.text


async def test_who_saw_my_record_page(app, c, engine, tenant):
    from yiyun.identity.accounts import create_patient_account
    from yiyun.identity.sessions import open_session

    sys_h = auth_headers(tenant)
    me = (await c.post(f"{FHIR}/Patient", json={"resourceType": "Patient", "name": [{"family": "张"}]},
                       headers=sys_h)).json()
    _doc, _cookie, _csrf = await person(engine, tenant, "li", "李医生", ["doctor"], fhir_ref="Practitioner/li")
    async with unit_of_work(engine) as conn:
        pat = await create_patient_account(conn, f"139{abs(hash(tenant)) % 10**8:08d}", "张三", tenant,
                                           f"Patient/{me['id']}")
        pcookie, _ = await open_session(conn, pat.id, tenant)
        await append(conn, [
            AuditEntry(tenant=tenant, actor=f"li-{tenant}", role="doctor", action="read", resource_type="Patient",
                       resource_id=me["id"], patient=me["id"], purpose="TREAT"),
            AuditEntry(tenant=tenant, actor=f"li-{tenant}", role="doctor", action="break-glass",
                       resource_type="Patient", resource_id=me["id"], patient=me["id"], purpose="ETREAT"),
            AuditEntry(tenant=tenant, actor="Practitioner/wang", role="doctor", action="read",
                       resource_type="Patient", resource_id="someone-else", patient="someone-else"),
        ])
    c.cookies.set("yiyun_session", pcookie)
    r = await c.get("/me/access-log")
    assert r.status_code == 200, r.text
    assert "谁看过我的病历" in r.text and "李医生" in r.text and "长沙市第一医院" in r.text
    assert "紧急调阅" in r.text and "基本信息" in r.text and "诊疗" in r.text
    assert "Practitioner/wang" not in r.text and "someone-else" not in r.text
    assert r.text.count('class="break-glass"') == 1
