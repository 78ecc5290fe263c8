"""A patient allows an app on their phone: the consent page in a real browser (375 px)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.conftest import REPO, running_server
from tests.e2e.conftest import browser, phone, screenshot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

# Run in a separate process against the server's database: Zhang, his Patient, a public app
# whose redirect URI is on this machine, and a signed-in session for him.
SETUP = r'''
import asyncio, json, secrets, sys
from yiyun.core.db import get_engine, unit_of_work, dispose_engines
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.identity.accounts import create_patient_account, create_tenant
from yiyun.identity.oauth.clients import create_client
from yiyun.identity.sessions import open_session

async def main(redirect):
    tenant = "xy-" + secrets.token_hex(4)
    async with unit_of_work(get_engine()) as conn:
        await create_tenant(conn, tenant, name="湘雅医院", kind="hospital")
        repo = FhirRepository(conn, RequestContext(tenant=tenant, base_url="http://x/fhir/R4"))
        p = await repo.create({"resourceType": "Patient", "name": [{"family": "张", "given": ["伟"]}]})
        acct = await create_patient_account(conn, "139" + str(secrets.randbelow(10**8)).zfill(8), "张伟", tenant,
                                            f"Patient/{p.stored.res_id}")
        client, _ = await create_client(conn, tenant=tenant, name="血压管家", kind="public", redirect_uris=[redirect],
                                        scope="launch/patient openid fhirUser offline_access patient/*.rs")
        cookie, _ = await open_session(conn, acct.id, tenant)
    await dispose_engines()
    print(json.dumps({"client_id": client.client_id, "cookie": cookie, "patient": p.stored.res_id}))

asyncio.run(main(sys.argv[1]))
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("oauth-e2e")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], env=env, cwd=REPO, check=True,
                   capture_output=True)
    with running_server(env) as base:
        yield base, env


def test_patient_allows_an_app_on_a_phone(server, phone):  # noqa: F811
    base, env = server
    redirect = base + "/app-callback"
    setup = subprocess.run([sys.executable, "-c", SETUP, redirect], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert setup.returncode == 0, setup.stderr
    world = json.loads(setup.stdout.strip().splitlines()[-1])
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": world["client_id"], "redirect_uri": redirect,
             "scope": "launch/patient openid fhirUser offline_access patient/*.rs", "state": "s1",
             "aud": "http://127.0.0.1:8000/fhir/R4", "code_challenge": challenge, "code_challenge_method": "S256"}
    phone.context.add_cookies([{"name": "yiyun_session", "value": world["cookie"], "url": base}])
    phone.goto(base + "/oauth2/authorize?" + urlencode(query))
    assert "血压管家" in phone.locator("h1").inner_text()
    lines = phone.locator(".consent li").all_inner_texts()
    assert any("读取您的全部健康记录" in t for t in lines) and any("离开后继续访问" in t for t in lines)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(phone, "oauth-consent-phone-zh")
    with phone.expect_navigation():
        phone.get_by_role("button", name="同意").click()
    back = urlsplit(phone.url)
    got = {k: v[0] for k, v in parse_qs(back.query).items()}
    assert back.path == "/app-callback" and got["state"] == "s1" and got["code"]

    token = httpx.post(base + "/oauth2/token", data={
        "grant_type": "authorization_code", "code": got["code"], "redirect_uri": redirect,
        "client_id": world["client_id"], "code_verifier": verifier}).json()
    assert token["patient"] == world["patient"]
    r = httpx.get(f"{base}/fhir/R4/Patient/{world['patient']}",
                  headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "张"
