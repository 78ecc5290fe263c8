"""In a real browser on a phone: a patient grants regional sharing and withdraws it again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, running_server
from tests.e2e.conftest import screenshot

pytestmark = pytest.mark.browser
TENANT = "e2e-consent-hospital"

SEED = textwrap.dedent("""
    import asyncio
    from yiyun.core.db import unit_of_work, get_engine
    from yiyun.fhir.model import RequestContext
    from yiyun.fhir.repository import FhirRepository
    from yiyun.identity.accounts import create_patient_account, create_tenant
    from yiyun.identity.sessions import open_session

    async def main():
        engine = get_engine()
        async with unit_of_work(engine) as conn:
            await create_tenant(conn, "%(tenant)s", name="岳麓示范医院", kind="hospital")
            repo = FhirRepository(conn, RequestContext(tenant="%(tenant)s"))
            p = await repo.create({"resourceType": "Patient", "name": [{"family": "赵", "given": ["六"]}]})
            acct = await create_patient_account(conn, "13912340077", "赵六", tenant="%(tenant)s",
                                                fhir_ref="Patient/" + p.stored.res_id)
            cookie, _ = await open_session(conn, acct.id, "%(tenant)s")
        print(cookie)

    asyncio.run(main())
""") % {"tenant": TENANT}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("e2e-consent")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING"}
    env.pop("YIYUN_DEFAULT_TENANT", None)
    subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], env=env, cwd=REPO, check=True,
                   capture_output=True)
    seeded = subprocess.run([sys.executable, "-c", SEED], env=env, cwd=REPO, capture_output=True, text=True)
    assert seeded.returncode == 0, seeded.stderr
    with running_server(env) as base:
        yield base, seeded.stdout.strip().splitlines()[-1]


def test_patient_grants_and_withdraws_regional_sharing_on_a_phone(server, phone):
    base, cookie = server
    page = phone
    page.context.add_cookies([{"name": "yiyun_session", "value": cookie, "url": base}])
    page.goto(base + "/me/consent")
    assert page.locator("h1").inner_text() == "我的授权"
    card = page.locator("#consent-regional-sharing")
    assert card.locator("[data-state]").get_attribute("data-state") == "not-granted"
    screenshot(page, "consent-phone-before")
    card.locator("button[type=submit]").click()
    page.wait_for_url("**/me/consent?done=granted")
    assert page.locator("#notice").inner_text() == "您的授权已记录。"
    card = page.locator("#consent-regional-sharing")
    assert card.locator("[data-state]").get_attribute("data-state") == "granted"
    assert page.locator("#consent-research [data-state]").get_attribute("data-state") == "not-granted"
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "consent-phone-granted")
    card.locator("button[type=submit]").click()
    page.wait_for_url("**/me/consent?done=revoked")
    assert "立即生效" in page.locator("#notice").inner_text()
    assert page.locator("#consent-regional-sharing [data-state]").get_attribute("data-state") == "not-granted"
