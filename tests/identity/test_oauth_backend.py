"""OAuth 2.0 for backend services (SMART Backend Services): client credentials with
RS384/ES384 assertions or a client secret, introspection, revocation, audit and errors,
on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import time
import uuid

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

FHIR = "/fhir/R4"
TOKEN = "/oauth2/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_AUD = "http://127.0.0.1:8000/oauth2/token"  # the configured base URL's token endpoint


@pytest_asyncio.fixture
async def anon(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest_asyncio.fixture
async def org(engine, tenant):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_tenant

    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="长沙市第一医院", kind="hospital")
    return tenant


async def register(engine, tenant, *, kind="backend", scope="system/*.cruds", jwks=None, redirect_uris=()):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.oauth.clients import create_client

    async with unit_of_work(engine) as conn:
        return await create_client(conn, tenant=tenant, name="检验科接口", kind=kind, redirect_uris=list(redirect_uris),
                                   scope=scope, jwks=jwks)


def keypair(alg: str):
    key = RSAKey.generate_key(2048, private=True) if alg == "RS384" else ECKey.generate_key("P-384", private=True)
    key.ensure_kid()
    public = key.as_dict(private=False)
    public.update(kid=key.kid, alg=alg, use="sig")
    return key, {"keys": [public]}


def assertion(client_id, key, alg, *, aud=TOKEN_AUD, exp_in=240, jti=None, iss=None, sub=None):
    now = int(time.time())
    claims = {"iss": iss or client_id, "sub": sub or client_id, "aud": aud, "exp": now + exp_in,
              "jti": jti or uuid.uuid4().hex}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def cc_form(client_id, key, alg, scope="system/*.rs", **kw):
    return {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(client_id, key, alg, **kw)}


async def audit_actions(engine, tenant):
    from sqlalchemy import select

    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit_tables import audit_log

    async with unit_of_work(engine, write=False) as conn:
        rows = await conn.execute(select(audit_log.c.action, audit_log.c.outcome, audit_log.c.detail)
                                  .where(audit_log.c.tenant == tenant).order_by(audit_log.c.seq))
        return [(r.action, r.outcome, r.detail) for r in rows]


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_backend_service_gets_a_token_with_a_signed_assertion_and_reads_fhir(anon, engine, org, alg):
    key, jwks = keypair(alg)
    client, secret = await register(engine, org, scope="system/Patient.rs system/Observation.rs", jwks=jwks)
    assert secret is None  # key-pair clients get no secret
    r = await anon.post(TOKEN, data=cc_form(client.client_id, key, alg, scope="system/*.cruds"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["cache-control"] == "no-store"
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 15 * 60
    # granted: what was asked for, cut down to what was registered
    assert set(body["scope"].split()) == {"system/Patient.rs", "system/Observation.rs"}
    assert "refresh_token" not in body
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    from tests.conftest import auth_headers

    made = await anon.post(f"{FHIR}/Patient", json={"resourceType": "Patient", "gender": "female"},
                           headers=auth_headers(org))
    assert made.status_code == 201
    found = await anon.get(f"{FHIR}/Patient", headers=headers)
    assert found.status_code == 200 and found.json()["total"] == 1
    assert (await anon.get(f"{FHIR}/Patient/{made.json()['id']}", headers=headers)).status_code == 200
    # read-only scopes: writing is forbidden
    write = await anon.post(f"{FHIR}/Patient", json={"resourceType": "Patient"}, headers=headers)
    assert write.status_code == 403
    actions = await audit_actions(engine, org)
    issued = [a for a in actions if a[0] == "token-issued"]
    assert issued and '"grant_type":"client_credentials"' in issued[-1][2] and '"auth":"private_key_jwt"' in issued[-1][2]


async def test_assertions_are_checked_strictly(anon, engine, org):
    key, jwks = keypair("RS384")
    client, _ = await register(engine, org, jwks=jwks)
    cid = client.client_id

    async def refused(form, description_part):
        r = await anon.post(TOKEN, data=form)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client" and description_part in r.json()["error_description"]
        return r

    # a jti used once cannot be used again
    form = cc_form(cid, key, "RS384", jti="same-jti")
    assert (await anon.post(TOKEN, data=form)).status_code == 200
    await refused(cc_form(cid, key, "RS384", jti="same-jti"), "jti")
    await refused(cc_form(cid, key, "RS384", exp_in=-60), "expired")
    await refused(cc_form(cid, key, "RS384", exp_in=3600), "five minutes")
    await refused(cc_form(cid, key, "RS384", aud="https://elsewhere.example/token"), "aud")
    # an assertion made for another server is refused even when sent with that server's Host
    r = await anon.post("https://elsewhere.example/oauth2/token",
                        data=cc_form(cid, key, "RS384", aud="https://elsewhere.example/oauth2/token"))
    assert r.status_code == 401 and "aud" in r.json()["error_description"]
    await refused(cc_form(cid, key, "RS384", sub="someone-else"), "iss and sub")
    other_key, _ = keypair("RS384")
    other_key_data = other_key.as_dict(private=True)
    other_key_data["kid"] = key.kid  # claims to be the registered key
    forged = RSAKey.import_key(other_key_data)
    await refused(cc_form(cid, forged, "RS384"), "signature")
    # RS256 is not accepted for assertions
    r = await anon.post(TOKEN, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                     "client_assertion_type": JWT_BEARER,
                                     "client_assertion": jwt.encode({"alg": "RS256", "kid": key.kid},
                                                                    {"iss": cid, "sub": cid, "aud": TOKEN_AUD,
                                                                     "exp": int(time.time()) + 60, "jti": "x"}, key,
                                                                    algorithms=["RS256"])})
    assert r.status_code == 401
    # a client that does not exist, or is disabled
    await refused(cc_form("no-such-client", key, "RS384"), "unknown")
    from yiyun.core.db import unit_of_work
    from yiyun.identity.oauth.clients import disable_client

    async with unit_of_work(engine) as conn:
        await disable_client(conn, cid)
    await refused(cc_form(cid, key, "RS384"), "disabled")
    refusals = [a for a in await audit_actions(engine, org) if a[0] == "token-refused"]
    assert len(refusals) >= 7 and all(a[1] == "denied" for a in refusals)


async def test_scopes_outside_the_registration_are_refused(anon, engine, org):
    key, jwks = keypair("ES384")
    client, _ = await register(engine, org, scope="system/Observation.rs", jwks=jwks)
    r = await anon.post(TOKEN, data=cc_form(client.client_id, key, "ES384", scope="system/Patient.cruds"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = await anon.post(TOKEN, data=cc_form(client.client_id, key, "ES384", scope="user/*.cruds"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


async def test_symmetric_backend_client_and_introspection_and_revocation(anon, engine, org, tenant):
    client, secret = await register(engine, org, scope="system/*.rs")
    assert secret
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:nope".encode()).decode()}
    r = await anon.post(TOKEN, data={"grant_type": "client_credentials", "scope": "system/*.rs"}, headers=wrong)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")
    r = await anon.post(TOKEN, data={"grant_type": "client_credentials", "scope": "system/*.rs"}, headers=basic)
    assert r.status_code == 200, r.text
    access = r.json()["access_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    assert (await anon.get(f"{FHIR}/Patient", headers=bearer)).status_code == 200

    # introspection needs client authentication
    assert (await anon.post("/oauth2/introspect", data={"token": access})).status_code == 401
    info = (await anon.post("/oauth2/introspect", data={"token": access}, headers=basic)).json()
    assert info["active"] is True and info["client_id"] == client.client_id and info["scope"] == "system/*.rs"
    assert info["tenant"] == org and info["sub"] == f"service:{client.client_id}" and info["exp"] > time.time()
    assert (await anon.post("/oauth2/introspect", data={"token": "garbage"}, headers=basic)).json() == {"active": False}
    # another organisation's client learns nothing about this token
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_tenant

    async with unit_of_work(engine) as conn:
        await create_tenant(conn, org + "-b", name="另一家医院", kind="hospital")
    other, other_secret = await register(engine, org + "-b", scope="system/*.rs")
    other_basic = {"Authorization": "Basic " + base64.b64encode(f"{other.client_id}:{other_secret}".encode()).decode()}
    assert (await anon.post("/oauth2/introspect", data={"token": access}, headers=other_basic)).json() == {"active": False}
    # ... nor may it revoke it
    r = await anon.post("/oauth2/revoke", data={"token": access}, headers=other_basic)
    assert r.status_code == 400
    assert (await anon.get(f"{FHIR}/Patient", headers=bearer)).status_code == 200

    # revocation: the token stops working at once, introspection says inactive
    r = await anon.post("/oauth2/revoke", data={"token": access, "token_type_hint": "access_token"}, headers=basic)
    assert r.status_code == 200
    after = await anon.get(f"{FHIR}/Patient", headers=bearer)
    assert after.status_code == 401 and "invalid_token" in after.headers["www-authenticate"]
    assert (await anon.post("/oauth2/introspect", data={"token": access}, headers=basic)).json() == {"active": False}
    # unknown tokens: still 200 (RFC 7009 §2.2)
    assert (await anon.post("/oauth2/revoke", data={"token": "unknown"}, headers=basic)).status_code == 200
    actions = [a[0] for a in await audit_actions(engine, org)]
    assert "token-issued" in actions and "token-revoked" in actions and "token-refused" in actions


async def test_revocation_reaches_other_processes_through_the_table(anon, engine, org):
    """A token revoked by another server process is refused here after the next refresh."""
    from yiyun.core.db import unit_of_work
    from yiyun.identity import auth
    from yiyun.identity.oauth import grants, revocation

    client, secret = await register(engine, org, scope="system/*.rs")
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    r = await anon.post(TOKEN, data={"grant_type": "client_credentials", "scope": "system/*.rs"}, headers=basic)
    access = r.json()["access_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    assert (await anon.get(f"{FHIR}/Patient", headers=bearer)).status_code == 200
    from yiyun.identity.tokens import verify_access_token

    claims = verify_access_token(access)
    async with unit_of_work(engine) as conn:  # what another process's revocation leaves behind
        await grants.revoke_access_token(conn, claims.token_id, claims.expires)
    assert claims.token_id not in auth.REVOKED_TOKEN_IDS
    await revocation.refresh(force=True)
    assert claims.token_id in auth.REVOKED_TOKEN_IDS
    assert (await anon.get(f"{FHIR}/Patient", headers=bearer)).status_code == 401


async def test_errors_are_rfc6749_json_never_500(anon, engine, org):
    client, secret = await register(engine, org, scope="system/*.rs")
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    cases = [
        ({"grant_type": "password", "username": "x", "password": "y"}, basic, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, basic, 400, "invalid_request"),  # no scope
        ({"grant_type": "client_credentials", "scope": "system/*.zz"}, basic, 400, "invalid_scope"),
        ({"grant_type": "authorization_code", "code": "x", "redirect_uri": "https://a.example/cb"}, basic, 400,
         "unauthorized_client"),
        ({"grant_type": "client_credentials", "scope": "system/*.rs"}, {"Authorization": "Basic !!!"}, 401,
         "invalid_client"),
        ({"grant_type": "client_credentials", "scope": "system/*.rs", "client_id": client.client_id}, {}, 401,
         "invalid_client"),
    ]
    for form, headers, status, error in cases:
        r = await anon.post(TOKEN, data=form, headers=headers)
        assert (r.status_code, r.json()["error"]) == (status, error), (form, r.text)
        assert "(" in r.json()["error_description"]  # 中文 (English)
    r = await anon.post(TOKEN, content=b"grant_type=client_credentials&grant_type=refresh_token",
                        headers={"Content-Type": "application/x-www-form-urlencoded", **basic})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await anon.post(TOKEN, json={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await anon.post(TOKEN, content=b"\xff\xfe=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400


async def test_discovery_documents_and_capability_statement(anon):
    smart = (await anon.get("/.well-known/smart-configuration")).json()
    assert smart["token_endpoint"] == "http://127.0.0.1:8000/oauth2/token"
    assert smart["code_challenge_methods_supported"] == ["S256"]
    for cap in ("launch-standalone", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "context-standalone-patient", "permission-v2", "permission-offline",
                "sso-openid-connect"):
        assert cap in smart["capabilities"]
    assert "private_key_jwt" in smart["token_endpoint_auth_methods_supported"]
    assert {"RS384", "ES384"} <= set(smart["token_endpoint_auth_signing_alg_values_supported"])
    oidc = (await anon.get("/.well-known/openid-configuration")).json()
    assert oidc["issuer"] == smart["issuer"] and oidc["jwks_uri"].endswith("/oauth2/jwks")
    keys = (await anon.get("/oauth2/jwks")).json()["keys"]
    assert keys and keys[0]["kty"] == "RSA" and "d" not in keys[0]
    cs = (await anon.get(f"{FHIR}/metadata")).json()
    security = cs["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"] == smart["token_endpoint"] and uris["authorize"].endswith("/oauth2/authorize")
    assert {"introspect", "revoke"} <= set(uris)


async def test_registration_rules(engine, org):
    from yiyun.core.errors import BadRequest

    key, jwks = keypair("RS384")
    for kwargs in (
        {"kind": "backend", "scope": "patient/*.rs"},
        {"kind": "public", "scope": "patient/*.rs"},  # no redirect URI
        {"kind": "public", "scope": "system/*.rs", "redirect_uris": ["https://app.example/cb"]},
        {"kind": "public", "scope": "patient/*.rs", "redirect_uris": ["http://app.example/cb"]},  # not https
        {"kind": "public", "scope": "patient/*.rs", "redirect_uris": ["https://app.example/cb#x"]},
        {"kind": "public", "scope": "patient/*.rs", "redirect_uris": ["https://app.example/cb"], "jwks": jwks},
        {"kind": "backend", "scope": "system/*.rs", "jwks": {"keys": [key.as_dict(private=True)]}},
        {"kind": "robot", "scope": "system/*.rs"},
    ):
        with pytest.raises(BadRequest):
            await register(engine, org, **kwargs)
    client, secret = await register(engine, org, kind="public", scope="patient/*.rs launch/patient",
                                    redirect_uris=["http://127.0.0.1:5000/cb"])
    assert secret is None and client.redirect_uris == ("http://127.0.0.1:5000/cb",)
    assert "client-registered" in [a[0] for a in await audit_actions(engine, org)]


async def test_arbitrary_input_is_answered_with_4xx_never_500(anon, engine, org):
    """Whatever a client sends to the OAuth endpoints, the answer is a 4xx (or 200/303), never a 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, secret = await register(engine, org, scope="system/*.rs")
    names = st.sampled_from(["grant_type", "scope", "client_id", "client_secret", "code", "redirect_uri",
                             "code_verifier", "refresh_token", "client_assertion", "client_assertion_type", "token",
                             "token_type_hint", "response_type", "state", "aud", "code_challenge",
                             "code_challenge_method"])
    values = st.one_of(st.text(max_size=60), st.sampled_from([
        "client_credentials", "authorization_code", "refresh_token", client.client_id, secret, JWT_BEARER,
        "system/*.rs", "patient/*.rs launch/patient", "a.b.c", "eyJhbGciOiJSUzM4NCJ9.e30.", "S256", "plain"]))
    forms = st.dictionaries(names, values, max_size=8)
    paths = st.sampled_from(["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke", "/oauth2/authorize"])
    seen: list[tuple[str, dict, int]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=paths, form=forms, use_basic=st.booleans(), as_query=st.booleans())
    def probe(path, form, use_basic, as_query):
        seen.append((path, form, use_basic, as_query))

    probe()
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    for path, form, use_basic, as_query in seen:
        headers = basic if use_basic else {}
        if as_query and path == "/oauth2/authorize":
            r = await anon.get(path, params=form, headers=headers)
        else:
            r = await anon.post(path, data=form, headers=headers)
        assert r.status_code < 500, (path, form, r.status_code, r.text[:300])


async def test_access_tokens_for_another_audience_are_refused(anon, org):
    from yiyun.identity.tokens import issue_access_token

    elsewhere, _ = issue_access_token(subject="service:x", tenant=org, scope="system/*.rs",
                                      audience="https://other-region.example/fhir/R4")
    r = await anon.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {elsewhere}"})
    assert r.status_code == 401
    here, _ = issue_access_token(subject="service:x", tenant=org, scope="system/*.rs")
    assert (await anon.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {here}"})).status_code == 200


async def test_a_backend_service_keeps_few_rows(anon, engine, org):
    """Grants of a backend service (one per token) are dropped a day after they end."""
    from sqlalchemy import func, select, update

    from yiyun.core.db import unit_of_work
    from yiyun.identity.oauth_tables import oauth_grant

    client, secret = await register(engine, org, scope="system/*.rs")
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    for _ in range(3):
        r = await anon.post(TOKEN, data={"grant_type": "client_credentials", "scope": "system/*.rs"}, headers=basic)
        assert r.status_code == 200
    async with unit_of_work(engine) as conn:  # two days pass
        await conn.execute(update(oauth_grant).where(oauth_grant.c.client_id == client.client_id)
                           .values(expires_ts=oauth_grant.c.expires_ts - 2 * 86400 * 1_000_000))
    r = await anon.post(TOKEN, data={"grant_type": "client_credentials", "scope": "system/*.rs"}, headers=basic)
    assert r.status_code == 200
    async with unit_of_work(engine, write=False) as conn:
        left = (await conn.execute(select(func.count()).select_from(oauth_grant)
                                   .where(oauth_grant.c.client_id == client.client_id))).scalar()
    assert left == 1


async def test_keys_fetched_from_the_clients_jwks_url(anon, engine, org):
    """A backend service that publishes its keys at a URL: fetched, cached, and used."""
    import http.server
    import json
    import threading

    key, jwks = keypair("ES384")
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = json.dumps(jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        from yiyun.core.db import unit_of_work
        from yiyun.identity.oauth.clients import create_client

        url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks-{uuid.uuid4().hex}.json"
        async with unit_of_work(engine) as conn:
            client, secret = await create_client(conn, tenant=org, name="区域平台", kind="backend", redirect_uris=[],
                                                 scope="system/*.rs", jwks_url=url)
        assert secret is None
        for _ in range(2):
            r = await anon.post(TOKEN, data=cc_form(client.client_id, key, "ES384"))
            assert r.status_code == 200, r.text
        assert len(hits) == 1  # cached
        other, _ = keypair("ES384")
        r = await anon.post(TOKEN, data=cc_form(client.client_id, other, "ES384"))
        assert r.status_code == 401
    finally:
        httpd.shutdown()


async def test_a_backend_service_may_ask_for_a_granular_scope(anon, engine, org):
    """A granular scope within the registration is issued and introspected as asked, and
    the token reaches only what its query finds."""
    client, secret = await register(engine, org, scope="system/*.rs")
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    vitals = "system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
    r = await anon.post(TOKEN, data={"grant_type": "client_credentials", "scope": vitals}, headers=basic)
    assert r.status_code == 200 and r.json()["scope"] == vitals, r.text
    access = r.json()["access_token"]
    info = (await anon.post("/oauth2/introspect", data={"token": access}, headers=basic)).json()
    assert info["active"] is True and info["scope"] == vitals
    bearer = {"Authorization": f"Bearer {access}"}
    assert (await anon.get(f"{FHIR}/Observation", headers=bearer)).status_code == 200
    assert (await anon.get(f"{FHIR}/Patient", headers=bearer)).status_code == 403
    # a client registered only for the granular scope cannot widen it
    narrow, narrow_secret = await register(engine, org, scope=vitals)
    pair = f"{narrow.client_id}:{narrow_secret}".encode()
    narrow_basic = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    r = await anon.post(TOKEN, data={"grant_type": "client_credentials", "scope": "system/Observation.rs"},
                        headers=narrow_basic)
    assert r.status_code == 200 and r.json()["scope"] == vitals  # narrowed to the registration
