"""SMART standalone launch over HTTP: sign-in, consent, authorisation code with PKCE,
tokens that reach FHIR, refresh rotation and reuse detection, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from tests.conftest import auth_headers

FHIR = "/fhir/R4"
AUD = "http://127.0.0.1:8000/fhir/R4"
REDIRECT = "https://bp-app.example/callback"
PATIENT_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


@pytest_asyncio.fixture
async def web(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest_asyncio.fixture
async def world(engine, tenant, web):
    """Hospital `tenant` with patient Zhang (a phone account linked to his Patient), doctor Li,
    and two registered apps: a public patient app and a confidential clinician app."""
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_patient_account, create_staff, create_tenant
    from yiyun.identity.oauth.clients import create_client

    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="湘雅医院", kind="hospital")
    zhang_patient = await web.post(f"{FHIR}/Patient", headers=auth_headers(tenant),
                                   json={"resourceType": "Patient", "name": [{"family": "张", "given": ["伟"]}]})
    other = await web.post(f"{FHIR}/Patient", headers=auth_headers(tenant),
                           json={"resourceType": "Patient", "name": [{"family": "王", "given": ["芳"]}]})
    pid = zhang_patient.json()["id"]
    doctor = await web.post(f"{FHIR}/Practitioner", headers=auth_headers(tenant),
                            json={"resourceType": "Practitioner", "name": [{"family": "李", "given": ["明"]}]})
    practitioner = doctor.json()["id"]
    visit = await web.post(f"{FHIR}/Encounter", headers=auth_headers(tenant), json={
        "resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"},
        "participant": [{"individual": {"reference": f"Practitioner/{practitioner}"}}]})
    assert visit.status_code == 201, visit.text
    phone = "139" + str(secrets.randbelow(10**8)).zfill(8)
    async with unit_of_work(engine) as conn:
        zhang = await create_patient_account(conn, phone, "张伟", tenant, f"Patient/{pid}")
        li = await create_staff(conn, username=f"li-{tenant}", display_name="李医生", password="Correct-Horse-Battery-9",
                                tenant_slug=tenant, roles=["doctor"], fhir_ref=f"Practitioner/{practitioner}")
        patient_app, _ = await create_client(conn, tenant=tenant, name="血压管家", kind="public",
                                             redirect_uris=[REDIRECT], scope=PATIENT_SCOPE + " patient/*.cruds")
        staff_app, staff_secret = await create_client(
            conn, tenant=tenant, name="病区看板", kind="confidential", redirect_uris=["https://ward.example/cb"],
            scope="openid fhirUser online_access user/Patient.rs user/Observation.rs")
    return {"tenant": tenant, "pid": pid, "other_pid": other.json()["id"], "zhang": zhang, "li": li,
            "patient_app": patient_app, "staff_app": staff_app, "staff_secret": staff_secret}


async def sign_in(engine, web, account_id, tenant):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.sessions import open_session

    async with unit_of_work(engine) as conn:
        cookie, csrf = await open_session(conn, account_id, tenant)
    web.cookies.set("yiyun_session", cookie)
    return csrf


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(client_id, challenge, scope=PATIENT_SCOPE, redirect=REDIRECT, **extra):
    return {"response_type": "code", "client_id": client_id, "redirect_uri": redirect, "scope": scope,
            "state": "st-" + secrets.token_hex(4), "aud": AUD, "code_challenge": challenge,
            "code_challenge_method": "S256", "nonce": "n-1", **extra}


def query_of(response):
    assert response.status_code == 303, response.text
    parts = urlsplit(response.headers["location"])
    return parts, {k: v[0] for k, v in parse_qs(parts.query).items()}


async def get_code(web, csrf, params, decision="approve"):
    page = await web.get("/oauth2/authorize", params=params)
    assert page.status_code == 200, page.text
    form = {**params, "csrf_token": csrf, "decision": decision}
    parts, query = query_of(await web.post("/oauth2/authorize", data=form))
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == params["redirect_uri"]
    assert query["state"] == params["state"]
    return page, query


async def test_patient_standalone_launch_with_pkce_reaches_only_their_record(web, engine, world):
    app_id = world["patient_app"].client_id
    verifier, challenge = pkce()
    params = authorize_params(app_id, challenge)

    # nobody signed in: to the patient sign-in page, coming back here afterwards
    r = await web.get("/oauth2/authorize", params=params)
    assert r.status_code == 303 and r.headers["location"].startswith("/signin/patient?next=/oauth2/authorize%3F")

    csrf = await sign_in(engine, web, world["zhang"].id, world["tenant"])
    page, query = await get_code(web, csrf, params)
    assert "血压管家" in page.text and "读取您的全部健康记录" in page.text  # consent in Chinese
    assert page.headers["x-frame-options"] == "DENY"
    code = query["code"]

    web.cookies.clear()  # the app's back end exchanges the code, without the browser's cookie
    token = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app_id,
             "code_verifier": verifier}
    r = await web.post("/oauth2/token", data=token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["patient"] == world["pid"] and body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == set(PATIENT_SCOPE.split())
    assert body["refresh_token"] and body["id_token"]

    # the ID token verifies with the published key and names the user
    from joserfc import jwt
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set((await web.get("/oauth2/jwks")).json())
    id_claims = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    assert id_claims["aud"] == app_id and id_claims["nonce"] == "n-1"
    assert id_claims["fhirUser"] == f"{AUD}/Patient/{world['pid']}"

    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await web.get(f"{FHIR}/Patient/{world['pid']}", headers=bearer)).status_code == 200
    assert (await web.get(f"{FHIR}/Patient/{world['other_pid']}", headers=bearer)).status_code == 404
    found = (await web.get(f"{FHIR}/Patient", headers=bearer)).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [world["pid"]]
    assert (await web.post(f"{FHIR}/Observation", headers=bearer, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "hr"},
        "subject": {"reference": f"Patient/{world['pid']}"}})).status_code == 403  # read-only scopes

    # the code is single use: presenting it again fails and revokes what it gave
    again = await web.post("/oauth2/token", data=token)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert (await web.get(f"{FHIR}/Patient/{world['pid']}", headers=bearer)).status_code == 401
    r = await web.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                               "client_id": app_id})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_wrong_verifier_wrong_redirect_and_missing_pkce_are_refused(web, engine, world):
    app_id = world["patient_app"].client_id
    csrf = await sign_in(engine, web, world["zhang"].id, world["tenant"])
    verifier, challenge = pkce()
    _, query = await get_code(web, csrf, authorize_params(app_id, challenge))
    base = {"grant_type": "authorization_code", "code": query["code"], "client_id": app_id}
    wrong = await web.post("/oauth2/token", data={**base, "redirect_uri": REDIRECT, "code_verifier": pkce()[0]})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # a failed exchange used the code up
    right = await web.post("/oauth2/token", data={**base, "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert right.status_code == 400

    verifier, challenge = pkce()
    _, query = await get_code(web, csrf, authorize_params(app_id, challenge))
    r = await web.post("/oauth2/token", data={"grant_type": "authorization_code", "code": query["code"],
                                               "client_id": app_id, "redirect_uri": REDIRECT + "/other",
                                               "code_verifier": verifier})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

    # an unregistered redirect URI is never redirected to: an error page instead
    _, challenge = pkce()
    page = await web.get("/oauth2/authorize", params=authorize_params(app_id, challenge,
                                                                      redirect="https://evil.example/cb"))
    assert page.status_code == 400 and "evil.example" not in page.headers.get("location", "")
    # plain PKCE or none: back to the app with invalid_request
    for extra in ({"code_challenge_method": "plain", "code_challenge": "x" * 43}, {"code_challenge": ""}):
        params = authorize_params(app_id, challenge, **extra)
        _, q = query_of(await web.get("/oauth2/authorize", params=params))
        assert q["error"] == "invalid_request" and q["state"] == params["state"]
    # a wrong audience
    _, q = query_of(await web.get("/oauth2/authorize", params=authorize_params(app_id, challenge,
                                                                               aud="https://other.example/fhir")))
    assert q["error"] == "invalid_request"


async def test_scope_escalation_and_role_limits(web, engine, world):
    app_id = world["patient_app"].client_id
    _, challenge = pkce()
    csrf = await sign_in(engine, web, world["zhang"].id, world["tenant"])
    # scopes the app never registered
    for scope in ("launch/patient user/*.rs", "patient/*.rs system/*.rs", "launch/patient patient/*.rs profile"):
        _, q = query_of(await web.get("/oauth2/authorize", params=authorize_params(app_id, challenge, scope=scope)))
        assert q["error"] == "invalid_scope", scope
    # a doctor cannot grant the patient app its patient scopes
    await sign_in(engine, web, world["li"].id, world["tenant"])
    _, q = query_of(await web.get("/oauth2/authorize", params=authorize_params(app_id, challenge)))
    assert q["error"] == "invalid_scope"
    # a patient cannot grant a clinician app user/ scopes
    csrf = await sign_in(engine, web, world["zhang"].id, world["tenant"])
    staff_id = world["staff_app"].client_id
    _, q = query_of(await web.get("/oauth2/authorize", params=authorize_params(
        staff_id, challenge, scope="openid fhirUser user/Patient.rs", redirect="https://ward.example/cb")))
    assert q["error"] == "invalid_scope"
    # denial goes back to the app as access_denied, with its state
    verifier, challenge = pkce()
    params = authorize_params(app_id, challenge)
    _, q = await get_code(web, csrf, params, decision="deny")
    assert q["error"] == "access_denied" and "code" not in q
    # the consent decision needs the session's CSRF token
    r = await web.post("/oauth2/authorize", data={**params, "csrf_token": "forged", "decision": "approve"})
    assert r.status_code == 403 and "location" not in r.headers
    # the refusals are in the organisation's audit chain
    from sqlalchemy import select

    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit_tables import audit_log

    async with unit_of_work(engine, write=False) as conn:
        rows = (await conn.execute(select(audit_log.c.action, audit_log.c.outcome, audit_log.c.detail).where(
            audit_log.c.tenant == world["tenant"]))).all()
    refused = [r for r in rows if r.action == "token-refused" and '"endpoint":"authorize"' in r.detail]
    assert len(refused) >= 5 and all('"invalid_scope"' in r.detail for r in refused)
    assert [r.outcome for r in rows if r.action == "consent"] == ["denied"]


async def test_staff_app_with_client_secret_refresh_rotation_and_reuse(web, engine, world):
    staff_id, secret = world["staff_app"].client_id, world["staff_secret"]
    basic = {"Authorization": "Basic " + base64.b64encode(f"{staff_id}:{secret}".encode()).decode()}
    csrf = await sign_in(engine, web, world["li"].id, world["tenant"])
    verifier, challenge = pkce()
    scope = "openid fhirUser online_access user/Patient.rs user/Observation.rs"
    page, q = await get_code(web, csrf, authorize_params(staff_id, challenge, scope=scope,
                                                         redirect="https://ward.example/cb"))
    assert "读取本机构患者的基本信息" in page.text
    web.cookies.clear()
    exchange = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": "https://ward.example/cb",
                "code_verifier": verifier}
    # a confidential client must authenticate
    assert (await web.post("/oauth2/token", data={**exchange, "client_id": staff_id})).status_code == 401
    r = await web.post("/oauth2/token", data=exchange, headers=basic)
    assert r.status_code == 200, r.text
    first = r.json()
    assert "patient" not in first and first["scope"] == scope
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    assert (await web.get(f"{FHIR}/Patient/{world['pid']}", headers=bearer)).status_code == 200  # his patient
    assert (await web.get(f"{FHIR}/Patient", headers=bearer)).status_code == 200
    assert (await web.get(f"{FHIR}/Condition", headers=bearer)).status_code == 403

    # refresh: a new refresh token each time; narrowing is allowed, widening is not
    r = await web.post("/oauth2/token", headers=basic, data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"], "scope": "user/Patient.rs"})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"] and second["scope"] == "user/Patient.rs"
    wide = await web.post("/oauth2/token", headers=basic, data={
        "grant_type": "refresh_token", "refresh_token": second["refresh_token"], "scope": "user/*.cruds"})
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"
    # (the refused refresh used up second's token; the app starts from third)
    info = await web.post("/oauth2/introspect", headers=basic, data={"token": second["access_token"]})
    assert info.json()["active"] is True and info.json()["sub"] == f"li-{world['tenant']}"

    # the old refresh token presented again: theft assumed, the whole grant is revoked
    reuse = await web.post("/oauth2/token", headers=basic, data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    for access in (first["access_token"], second["access_token"]):
        assert (await web.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {access}"})).status_code == 401
        assert (await web.post("/oauth2/introspect", headers=basic, data={"token": access})).json() == {"active": False}

    from sqlalchemy import select

    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit_tables import audit_log

    async with unit_of_work(engine, write=False) as conn:
        actions = [r.action for r in await conn.execute(
            select(audit_log.c.action).where(audit_log.c.tenant == world["tenant"]))]
    assert actions.count("token-issued") >= 2 and "consent" in actions and "token-refused" in actions


async def test_revoking_a_refresh_token_ends_the_grant(web, engine, world):
    app_id = world["patient_app"].client_id
    csrf = await sign_in(engine, web, world["zhang"].id, world["tenant"])
    verifier, challenge = pkce()
    _, q = await get_code(web, csrf, authorize_params(app_id, challenge))
    web.cookies.clear()
    body = (await web.post("/oauth2/token", data={
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT, "client_id": app_id,
        "code_verifier": verifier})).json()
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await web.get(f"{FHIR}/Patient/{world['pid']}", headers=bearer)).status_code == 200
    r = await web.post("/oauth2/revoke", data={"token": body["refresh_token"], "client_id": app_id,
                                                "token_type_hint": "refresh_token"})
    assert r.status_code == 200
    assert (await web.get(f"{FHIR}/Patient/{world['pid']}", headers=bearer)).status_code == 401
    r = await web.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                               "client_id": app_id})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("params", [{}, {"client_id": "nope"}, {"client_id": "nope", "redirect_uri": REDIRECT}])
async def test_broken_requests_get_an_error_page(web, world, params):
    r = await web.get("/oauth2/authorize", params=params)
    assert r.status_code == 400 and "授权请求无法受理" in r.text


async def test_a_disabled_account_cannot_refresh(web, engine, world):
    staff_id, secret = world["staff_app"].client_id, world["staff_secret"]
    basic = {"Authorization": "Basic " + base64.b64encode(f"{staff_id}:{secret}".encode()).decode()}
    csrf = await sign_in(engine, web, world["li"].id, world["tenant"])
    verifier, challenge = pkce()
    _, q = await get_code(web, csrf, authorize_params(staff_id, challenge, scope="openid online_access user/Patient.rs",
                                                     redirect="https://ward.example/cb"))
    web.cookies.clear()
    body = (await web.post("/oauth2/token", headers=basic, data={
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": "https://ward.example/cb",
        "code_verifier": verifier})).json()
    assert body["id_token"]  # openid without fhirUser still gets an ID token
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import set_status

    async with unit_of_work(engine) as conn:
        await set_status(conn, world["li"].id, "disabled")
    r = await web.post("/oauth2/token", headers=basic, data={"grant_type": "refresh_token",
                                                              "refresh_token": body["refresh_token"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await web.get(f"{FHIR}/Patient", headers=bearer)).status_code == 401  # the grant is revoked


async def test_a_patient_sees_and_withdraws_an_authorisation(web, engine, world):
    app_id = world["patient_app"].client_id
    csrf = await sign_in(engine, web, world["zhang"].id, world["tenant"])
    verifier, challenge = pkce()
    _, q = await get_code(web, csrf, authorize_params(app_id, challenge))
    cookie = web.cookies.get("yiyun_session")
    web.cookies.clear()
    body = (await web.post("/oauth2/token", data={
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT, "client_id": app_id,
        "code_verifier": verifier})).json()
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    web.cookies.set("yiyun_session", cookie)

    page = await web.get("/authorized-apps")
    assert page.status_code == 200 and "血压管家" in page.text and "读取您的全部健康记录" in page.text
    import re

    grant_id = re.search(r'action="/authorized-apps/([^/]+)/revoke"', page.text).group(1)
    # someone else's session cannot withdraw it, nor can a forged form
    r = await web.post(f"/authorized-apps/{grant_id}/revoke", data={"csrf_token": "forged"})
    assert r.status_code == 403
    await sign_in(engine, web, world["li"].id, world["tenant"])
    li_csrf = (await web.get("/authorized-apps")).text.split('name="csrf_token" value="')[1].split('"')[0]
    r = await web.post(f"/authorized-apps/{grant_id}/revoke", data={"csrf_token": li_csrf})
    assert r.status_code == 404
    assert (await web.get(f"{FHIR}/Patient/{world['pid']}", headers=bearer)).status_code == 200

    web.cookies.set("yiyun_session", cookie)
    r = await web.post(f"/authorized-apps/{grant_id}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/authorized-apps?done=1"
    assert "血压管家" not in (await web.get("/authorized-apps")).text
    web.cookies.clear()
    assert (await web.get(f"{FHIR}/Patient/{world['pid']}", headers=bearer)).status_code == 401
    r = await web.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                               "client_id": app_id})
    assert r.status_code == 400
    # nobody signed in: to the sign-in page
    r = await web.get("/authorized-apps")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")


async def test_confidential_app_with_a_key_pair_exchanges_its_code_with_an_assertion(web, engine, world):
    """client-confidential-asymmetric: the code exchange is authenticated with private_key_jwt."""
    import time
    import uuid

    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from yiyun.core.db import unit_of_work
    from yiyun.identity.oauth.clients import create_client

    key = RSAKey.generate_key(2048, private=True)
    key.ensure_kid()
    public = {**key.as_dict(private=False), "kid": key.kid}
    async with unit_of_work(engine) as conn:
        client, secret = await create_client(conn, tenant=world["tenant"], name="随访系统", kind="confidential",
                                             redirect_uris=["https://followup.example/cb"],
                                             scope="openid fhirUser user/Patient.rs", jwks={"keys": [public]})
    assert secret is None
    csrf = await sign_in(engine, web, world["li"].id, world["tenant"])
    verifier, challenge = pkce()
    _, q = await get_code(web, csrf, authorize_params(client.client_id, challenge, scope="openid user/Patient.rs",
                                                     redirect="https://followup.example/cb"))
    web.cookies.clear()
    exchange = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": "https://followup.example/cb",
                "code_verifier": verifier}
    assert (await web.post("/oauth2/token", data={**exchange, "client_id": client.client_id})).status_code == 401
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid}, {
        "iss": client.client_id, "sub": client.client_id, "aud": "http://127.0.0.1:8000/oauth2/token",
        "exp": int(time.time()) + 120, "jti": uuid.uuid4().hex}, key, algorithms=["RS384"])
    r = await web.post("/oauth2/token", data={
        **exchange, "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    # the unauthenticated attempt above was refused before the code was looked at: it is still good
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "openid user/Patient.rs"


async def test_granular_scopes_pass_through_consent_tokens_refresh_and_introspection(web, engine, world):
    vitals = ("patient/Observation.rs?category="
              "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs")
    scope = f"launch/patient openid fhirUser offline_access patient/Patient.rs {vitals}"
    app_id = world["patient_app"].client_id
    readings = {}
    for category in ("vital-signs", "laboratory"):
        r = await web.post(f"{FHIR}/Observation", headers=auth_headers(world["tenant"]), json={
            "resourceType": "Observation", "status": "final", "code": {"text": category},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "subject": {"reference": f"Patient/{world['pid']}"}})
        readings[category] = r.json()["id"]

    csrf = await sign_in(engine, web, world["zhang"].id, world["tenant"])
    verifier, challenge = pkce()
    page, q = await get_code(web, csrf, authorize_params(app_id, challenge, scope=scope))
    assert "您的生命体征类观察结果（读取、检索）" in page.text and vitals in page.text  # readable, and as given
    web.cookies.clear()
    r = await web.post("/oauth2/token", data={"grant_type": "authorization_code", "code": q["code"],
                                               "redirect_uri": REDIRECT, "client_id": app_id, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    first = r.json()
    assert vitals in first["scope"].split() and set(first["scope"].split()) == set(scope.split())
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    found = (await web.get(f"{FHIR}/Observation", headers=bearer)).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [readings["vital-signs"]]
    assert (await web.get(f"{FHIR}/Observation/{readings['laboratory']}", headers=bearer)).status_code == 404

    # a refresh keeps the granular scope as it is, may narrow to it, never widen it to every observation
    r = await web.post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": app_id,
                                               "refresh_token": first["refresh_token"]})
    assert r.status_code == 200 and set(r.json()["scope"].split()) == set(scope.split())
    r = await web.post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": app_id,
                                               "refresh_token": r.json()["refresh_token"], "scope": vitals})
    assert r.status_code == 200 and r.json()["scope"] == vitals
    narrowed = r.json()
    wide = await web.post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": app_id,
                                                  "refresh_token": narrowed["refresh_token"],
                                                  "scope": "patient/Observation.rs"})
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"

    staff_id, secret = world["staff_app"].client_id, world["staff_secret"]
    basic = {"Authorization": "Basic " + base64.b64encode(f"{staff_id}:{secret}".encode()).decode()}
    info = (await web.post("/oauth2/introspect", headers=basic, data={"token": narrowed["access_token"]})).json()
    assert info["active"] is True and info["scope"] == vitals and info["patient"] == world["pid"]
