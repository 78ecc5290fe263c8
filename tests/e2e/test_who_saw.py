"""A patient opens "谁看过我的病历" on a phone (375 px): the doctor who read their results, the
hospital, what and why, and the emergency access marked; nothing about anyone else.
An auditor reads the audit page on a desktop, verifies the chain, and a privacy officer
acknowledges a security event."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap

import httpx
import pytest

from tests.conftest import REPO, running_server
from tests.e2e.conftest import screenshot

pytestmark = pytest.mark.browser
TENANT = "e2e-audit-hospital"

SEED = textwrap.dedent("""
    import asyncio, sys
    from yiyun.core.db import dispose_engines, get_engine, unit_of_work
    from yiyun.identity.accounts import create_patient_account
    from yiyun.identity.audit import AuditEntry, append
    from yiyun.identity.sessions import open_session

    async def main(tenant, patient_id, doctor):
        async with unit_of_work(get_engine()) as conn:
            acct = await create_patient_account(conn, "13912345678", "张三", tenant, f"Patient/{patient_id}")
            cookie, _ = await open_session(conn, acct.id, tenant)
            await append(conn, [AuditEntry(tenant=tenant, actor=doctor, role="doctor", action="break-glass",
                                           resource_type="Patient", resource_id=patient_id, patient=patient_id,
                                           purpose="ETREAT")])
        await dispose_engines()
        print(cookie)

    asyncio.run(main(*sys.argv[1:4]))
""")


def cli(env, *args):
    result = subprocess.run([sys.executable, "-m", "yiyun.cli", *args], env=env, cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def token(env, **claims) -> dict:
    code = ("import sys, json; from yiyun.identity.tokens import issue_access_token; "
            "print(issue_access_token(**json.loads(sys.argv[1]))[0])")
    import json

    out = subprocess.run([sys.executable, "-c", code, json.dumps(claims)], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    return {"Authorization": f"Bearer {out}"}


@pytest.fixture(scope="module")
def audit_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("e2e-who-saw")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING", "YIYUN_SECRET_KEY": secrets.token_urlsafe(32),
           "YIYUN_NEW_PASSWORD": "Correct-horse-battery-9"}
    env.pop("YIYUN_DEFAULT_TENANT", None)
    cli(env, "db", "upgrade")
    cli(env, "tenant", "create", TENANT, "--name", "示范审计医院", "--kind", "hospital")
    cli(env, "user", "create", "dr-li", "--tenant", TENANT, "--role", "doctor", "--name", "李医生")
    cli(env, "user", "create", "po-zhou", "--tenant", TENANT, "--role", "auditor", "--role", "privacy-officer",
        "--name", "周审计")
    with running_server(env) as base:
        yield base, env


def test_patient_sees_who_saw_their_record(audit_server, phone):
    base, env = audit_server
    system = token(env, subject="service:e2e", tenant=TENANT, scope="system/*.cruds")

    def create(body):
        r = httpx.post(f"{base}/fhir/R4/{body['resourceType']}", json=body, headers=system, timeout=30)
        assert r.status_code == 201, r.text
        return r.json()

    me = create({"resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}]})
    other = create({"resourceType": "Patient", "name": [{"family": "赵", "given": ["六"]}]})
    prac = create({"resourceType": "Practitioner", "name": [{"family": "李"}]})
    for p in (me, other):
        create({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{p['id']}"},
                "participant": [{"individual": {"reference": f"Practitioner/{prac['id']}"}}]})
    mine = create({"resourceType": "Observation", "status": "final", "code": {"text": "血常规"},
                   "subject": {"reference": f"Patient/{me['id']}"}})
    theirs = create({"resourceType": "Observation", "status": "final", "code": {"text": "血糖"},
                     "subject": {"reference": f"Patient/{other['id']}"}})
    doctor = token(env, subject="dr-li", tenant=TENANT, scope="user/*.cruds", roles=["doctor"],
                   fhir_user=f"Practitioner/{prac['id']}")
    for obs in (mine, theirs):
        r = httpx.get(f"{base}/fhir/R4/Observation/{obs['id']}", headers=doctor, timeout=30)
        assert r.status_code == 200, r.text
    cookie = subprocess.run([sys.executable, "-c", SEED, TENANT, me["id"], "dr-li"], env=env, cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    # reads are appended in batches shortly after they happen
    import time

    time.sleep(1.0)
    phone.context.add_cookies([{"name": "yiyun_session", "value": cookie, "url": base}])
    phone.goto(base + "/me/access-log")
    assert phone.locator("h1").inner_text() == "谁看过我的病历"
    items = phone.locator("#access-log li")
    texts = items.all_inner_texts()
    assert any("李医生" in t and "检查检验结果" in t and "示范审计医院" in t for t in texts), texts
    flagged = phone.locator("#access-log li.break-glass")
    assert flagged.count() == 1 and "紧急调阅" in flagged.inner_text() and "紧急诊疗" in flagged.inner_text()
    body = phone.locator("main").inner_text()
    assert "血糖" not in body and other["id"] not in body and "赵" not in body
    # fits the phone: no sideways scrolling at 375 px
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(phone, "who-saw-my-record-phone")
    # the English page says the same
    phone.goto(base + "/me/access-log?lang=en")
    assert phone.locator("h1").inner_text() == "Who saw my record"


STAFF_SESSION = textwrap.dedent("""
    import asyncio, sys
    from yiyun.core.db import dispose_engines, get_engine, unit_of_work
    from yiyun.identity.accounts import find_by_username
    from yiyun.identity.audit import AuditEntry, append
    from yiyun.identity.sessions import open_session

    async def main(tenant, username):
        async with unit_of_work(get_engine()) as conn:
            acct = await find_by_username(conn, username)
            cookie, _ = await open_session(conn, acct.id, tenant)
            await append(conn, [AuditEntry(tenant=tenant, actor="dr-wang", role="doctor", action="break-glass",
                                           resource_type="Patient", resource_id="p-e2e", patient="p-e2e",
                                           purpose="ETREAT", detail={"reason": "昏迷送医"})])
        await dispose_engines()
        print(cookie)

    asyncio.run(main(*sys.argv[1:3]))
""")


def test_auditor_reads_verifies_and_acknowledges_on_a_desktop(audit_server, desktop):
    base, env = audit_server
    cookie = subprocess.run([sys.executable, "-c", STAFF_SESSION, TENANT, "po-zhou"], env=env, cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    cli(env, "security", "scan", "--tenant", TENANT)
    page = desktop
    page.context.add_cookies([{"name": "yiyun_session", "value": cookie, "url": base}])
    page.goto(base + "/audit")
    assert page.locator("h1").inner_text() == "审计日志"
    assert page.locator("#audit-entries tbody tr").count() >= 1
    page.select_option("select[name=outcome]", "ok")
    page.fill("input[name=action]", "break-glass")
    page.click("form.filters button[type=submit]")
    rows = page.locator("#audit-entries tbody tr")
    assert rows.count() >= 1 and all("break-glass" in t for t in rows.all_inner_texts())
    page.click("#verify-chain")
    assert "校验通过" in page.locator("#chain-status").inner_text()
    screenshot(page, "audit-page-desktop")
    page.click("text=安全事件")
    row = page.locator("#security-events tbody tr", has_text="紧急调阅").first
    assert "昏迷送医" in row.inner_text()
    screenshot(page, "security-events-desktop")
    row.locator("button[value=acknowledged]").click()
    assert "事件状态已更新" in page.locator(".notice").inner_text()
    page.goto(base + "/audit/security-events?status=acknowledged")
    assert "周审计" in page.locator("#security-events").inner_text() or "po-zhou" in page.locator(
        "#security-events").inner_text()
