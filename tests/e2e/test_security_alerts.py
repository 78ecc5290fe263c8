"""In a real browser: a privacy officer with any page open sees a toast and the unread badge
when a break-glass is scanned in another process (through Redis), without reloading."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, running_server
from tests.e2e.conftest import screenshot
from tests.hospital.test_consultation_ws import redis_url

pytestmark = pytest.mark.browser
TENANT = "e2e-alerts-hospital"

SEED = textwrap.dedent("""
    import asyncio
    from yiyun.core.db import unit_of_work, get_engine
    from yiyun.identity.accounts import create_staff, create_tenant
    from yiyun.identity.sessions import open_session

    async def main():
        async with unit_of_work(get_engine()) as conn:
            await create_tenant(conn, "%(tenant)s", name="岳麓示范医院", kind="hospital")
            acct = await create_staff(conn, username="po-e2e", display_name="孙隐私", password="",
                                      password_hash="x", tenant_slug="%(tenant)s", roles=["privacy-officer"])
            cookie, _ = await open_session(conn, acct.id, "%(tenant)s")
        print(cookie)

    asyncio.run(main())
""") % {"tenant": TENANT}

RAISE = textwrap.dedent("""
    import asyncio
    from yiyun.core.db import unit_of_work, get_engine
    from yiyun.core.realtime import close_brokers
    from yiyun.identity.audit import AuditEntry, append
    from yiyun.identity.security_events import scan

    async def main():
        async with unit_of_work(get_engine()) as conn:
            await append(conn, [AuditEntry(tenant="%(tenant)s", actor="staff:li", role="doctor", action="break-glass",
                                           resource_type="Patient", resource_id="p1", patient="Patient/p1",
                                           detail={"reason": "昏迷急诊，无法取得联系"})])
        print((await scan(get_engine(), tenant="%(tenant)s")).raised)
        await close_brokers()

    asyncio.run(main())
""") % {"tenant": TENANT}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("e2e-alerts")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING", "YIYUN_REDIS_URL": redis_url()}
    env.pop("YIYUN_DEFAULT_TENANT", None)
    subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], env=env, cwd=REPO, check=True,
                   capture_output=True)
    seeded = subprocess.run([sys.executable, "-c", SEED], env=env, cwd=REPO, capture_output=True, text=True)
    assert seeded.returncode == 0, seeded.stderr
    with running_server(env) as base:
        yield base, seeded.stdout.strip().splitlines()[-1], env


def test_privacy_officer_sees_a_toast_and_the_badge_without_reloading(server, desktop):
    base, cookie, env = server
    page = desktop
    page.context.add_cookies([{"name": "yiyun_session", "value": cookie, "url": base}])
    page.goto(base + "/account")
    badge = page.locator("#security-alerts")
    page.wait_for_selector("#security-alerts[data-live=on]", state="attached", timeout=10_000)
    assert badge.is_hidden()  # nothing unread yet
    raised = subprocess.run([sys.executable, "-c", RAISE], env=env, cwd=REPO, capture_output=True, text=True)
    assert raised.returncode == 0 and raised.stdout.strip().splitlines()[-1] == "1", raised.stderr
    toast = page.locator(".alert-toast")
    toast.wait_for(timeout=10_000)
    assert "需要您处理的安全事件" in toast.inner_text()
    assert badge.is_visible() and badge.locator(".count").inner_text() == "1"
    screenshot(page, "security-alert-toast")
    toast.click()
    page.wait_for_url("**/audit/security-events")
    assert page.locator("#unread").get_attribute("data-unread") == "1"
