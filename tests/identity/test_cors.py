"""CORS for SMART apps in a browser: the FHIR API and the token endpoints answer the origins of
registered clients' redirect URIs and of YIYUN_CORS_ORIGINS, never with credentials; a
cross-origin request is never authenticated by the session cookie. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import auth_headers

FHIR = "/fhir/R4"
APP = "https://bp-app.example.cn"
EVIL = "https://evil.example"


@pytest.fixture
def extra_origins(monkeypatch):
    from yiyun.core.settings import get_settings

    monkeypatch.setenv("YIYUN_CORS_ORIGINS", "https://portal.example.cn, HTTPS://Kiosk.Example.cn:443 not-an-origin")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def preflight(origin, method="GET", headers="authorization"):
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def _registered_app(engine, tenant, origin=APP):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_tenant
    from yiyun.identity.oauth.clients import create_client

    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="跨域医院", kind="hospital")
        client, _ = await create_client(conn, tenant=tenant, name="血压管家网页版", kind="public",
                                        redirect_uris=[f"{origin}/callback", "http://127.0.0.1:8765/cb"],
                                        scope="patient/*.rs launch/patient openid fhirUser")
    return client


async def test_registered_and_configured_origins_may_call_fhir_and_token(extra_origins, app, c, tenant, engine):
    client = await _registered_app(engine, tenant)
    backend = auth_headers(tenant)
    for origin in (APP, "https://portal.example.cn", "https://kiosk.example.cn"):
        pre = await c.options(f"{FHIR}/Patient", headers=preflight(origin, "POST", "authorization, content-type"))
        assert pre.status_code == 204, origin
        assert pre.headers["access-control-allow-origin"] == origin
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert "Authorization" in pre.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in pre.headers
        r = await c.get(f"{FHIR}/Patient", headers={**backend, "Origin": origin})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        assert "Origin" in r.headers["vary"] and "ETag" in r.headers["access-control-expose-headers"]
        assert "access-control-allow-credentials" not in r.headers
    # the token endpoint: preflight and the answer (an error here: no valid grant)
    pre = await c.options("/oauth2/token", headers=preflight(APP, "POST", "content-type"))
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == APP
    r = await c.post("/oauth2/token", data={"grant_type": "authorization_code", "code": "nope",
                                            "client_id": client.client_id, "redirect_uri": f"{APP}/callback",
                                            "code_verifier": "x" * 43}, headers={"Origin": APP})
    assert r.status_code == 400 and r.headers["access-control-allow-origin"] == APP
    for path in ("/oauth2/revoke", "/oauth2/introspect"):
        assert (await c.options(path, headers=preflight(APP, "POST"))).headers["access-control-allow-origin"] == APP
    # discovery and keys are public: any origin
    for path in ("/.well-known/smart-configuration", f"{FHIR}/.well-known/smart-configuration", "/oauth2/jwks"):
        doc = await c.get(path, headers={"Origin": EVIL})
        assert doc.status_code == 200 and doc.headers["access-control-allow-origin"] == "*", path
    assert (await c.options("/.well-known/smart-configuration", headers=preflight(EVIL))).status_code == 204
    cap = (await c.get(f"{FHIR}/metadata")).json()
    assert cap["rest"][0]["security"]["cors"] is True


async def test_other_origins_get_no_cors_and_cookies_never_cross(app, c, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_staff
    from yiyun.identity.oauth.clients import disable_client
    from yiyun.identity.sessions import open_session

    mine = f"https://{uuid.uuid4().hex[:8]}.apps.example.cn"  # registered by this test only
    client = await _registered_app(engine, tenant, mine)
    # an origin that is not registered: the preflight is refused, answers carry no CORS header
    pre = await c.options(f"{FHIR}/Patient", headers=preflight(EVIL))
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    r = await c.get(f"{FHIR}/Patient", headers={**auth_headers(tenant), "Origin": EVIL})
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in (await c.post("/oauth2/token", data={}, headers={"Origin": EVIL})).headers
    # a signed-in user's session works on their own origin and never cross-origin, allowed or not
    async with unit_of_work(engine) as conn:
        admin = await create_staff(conn, username=f"cors-{uuid.uuid4().hex[:6]}", display_name="管理员",
                                   password="Xq8!vR2#mT6pLw9z", tenant_slug=tenant, roles=["admin"])
        cookie, _ = await open_session(conn, admin.id, tenant)
    c.cookies.set("yiyun_session", cookie)
    assert (await c.get(f"{FHIR}/Patient")).status_code == 200
    assert (await c.get(f"{FHIR}/Patient", headers={"Origin": "http://testserver"})).status_code == 200
    assert (await c.get(f"{FHIR}/Patient", headers={"Origin": APP, "Sec-Fetch-Site": "same-origin"})).status_code == 200
    for origin in (mine, EVIL):
        r = await c.get(f"{FHIR}/Patient", headers={"Origin": origin, "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 401, origin
    # a disabled client's origin is no longer allowed
    assert (await c.options(f"{FHIR}/Patient", headers=preflight(mine))).status_code == 204
    async with unit_of_work(engine) as conn:
        await disable_client(conn, client.client_id)
    pre = await c.options(f"{FHIR}/Patient", headers=preflight(mine))
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    # pages and other APIs never answer CORS
    c.cookies.clear()
    r = await c.options("/api/identity/staff/second-factors", headers=preflight(APP))
    assert "access-control-allow-origin" not in r.headers


def test_origins_are_compared_in_their_normal_form():
    from yiyun.identity.oauth.cors import origin_of

    assert origin_of("https://App.Example.cn:443/callback?x=1") == "https://app.example.cn"
    assert origin_of("http://localhost:8080/cb") == "http://localhost:8080"
    assert origin_of("http://[::1]:9000/") == "http://[::1]:9000"
    for bad in ("com.example.app:/cb", "*", "", "https://", "ftp://x.example", "https://x.example:99999"):
        assert origin_of(bad) is None, bad
