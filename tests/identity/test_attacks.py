"""Attacks on the API: each is refused with a clear 4xx, leaks nothing, causes no 500, and
is recorded in the audit log (on SQLite and PostgreSQL).

Brute force, forged/expired tokens, cross-tenant ids, IDOR, scope escalation, SQL and
script injection through search parameters, oversized bodies, malformed JSON, path
traversal in ids, CSRF and session fixation.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid

import httpx
import orjson
import pytest
import pytest_asyncio

from tests.conftest import auth_headers
from yiyun.core.db import unit_of_work
from yiyun.core.settings import get_settings
from yiyun.identity.audit import query
from yiyun.identity.security_events import list_events, scan
from yiyun.identity.tokens import issue_access_token

FHIR = "/fhir/R4"


@pytest.fixture
def address() -> str:
    """A client address of this test alone, so its refusals are told apart from others'."""
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


@pytest_asyncio.fixture
async def c(app, address):
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def recorded(app, engine, tenant, **kw):
    await app.state.policy.recorder.close()  # waits for flushes in flight
    async with unit_of_work(engine, write=False) as conn:
        return await query(conn, tenant=tenant, limit=1000, **kw)


def refused_cleanly(r: httpx.Response, *statuses: int) -> dict:
    """A 4xx among `statuses` with an OperationOutcome or a JSON message, never a stack trace."""
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    body = r.json()
    assert body.get("resourceType") == "OperationOutcome" or "detail" in body, body
    assert "Traceback" not in r.text and "sqlalchemy" not in r.text.lower()
    return body


async def create(c, tenant, body):
    r = await c.post(f"{FHIR}/{body['resourceType']}", json=body, headers=auth_headers(tenant))
    assert r.status_code == 201, r.text
    return r.json()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, payload: dict, signature: str = "") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}.{signature}"


def payload_of(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# ------------------------------------------------------------------ tokens
async def test_bearer_token_guessing_is_refused_recorded_and_raises_an_event(app, c, engine, address):
    default = get_settings().default_tenant
    for _ in range(12):
        r = await c.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {secrets.token_urlsafe(40)}"})
        refused_cleanly(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
    entries = [e for e in await recorded(app, engine, default, action="token-rejected") if e.client_address == address]
    assert len(entries) == 12 and all(e.outcome == "denied" for e in entries)
    await scan(engine, tenant=default)
    async with unit_of_work(engine, write=False) as conn:
        events = await list_events(conn, default, kind="failed-signins", limit=500)
    assert any(e["subject"] == f"address:{address}" for e in events)


async def test_forged_tokens_are_refused_and_recorded(app, c, engine, tenant, address):
    p = await create(c, tenant, {"resourceType": "Patient", "name": [{"family": "秘密"}]})
    good, _ = issue_access_token(subject="li", tenant=tenant, scope="patient/*.rs", roles=("patient",), patient="x")
    claims = payload_of(good)
    header, _, signature = good.split(".")[0], None, good.split(".")[2]
    wrong_key = __import__("joserfc.jwt", fromlist=["jwt"]).encode(
        {"alg": "HS256"}, {**claims, "scope": "system/*.cruds"},
        __import__("joserfc.jwk", fromlist=["OctKey"]).OctKey.import_key(b"k" * 32))
    escalated = {**claims, "roles": ["auditor", "admin"], "scope": "system/*.cruds"}
    forged = {
        "wrong key": wrong_key,
        "alg none": forge({"alg": "none", "typ": "JWT"}, escalated),
        "tampered payload": f"{header}.{b64(orjson.dumps(escalated))}.{signature}",
        "garbage": "not.a.token",
    }
    for name, token in forged.items():
        for url in (f"{FHIR}/Patient/{p['id']}", "/api/audit/entries", f"{FHIR}/AuditEvent"):
            r = await c.get(url, headers={"Authorization": f"Bearer {token}"})
            body = refused_cleanly(r, 401)
            assert "秘密" not in json.dumps(body, ensure_ascii=False), name
    default = get_settings().default_tenant
    entries = [e for e in await recorded(app, engine, default, action="token-rejected") if e.client_address == address]
    assert len(entries) == 12
    assert sum(1 for e in entries if e.detail_value.get("claimed_tenant") == tenant) == 9


async def test_expired_token_is_refused_and_recorded_in_its_tenant(app, c, engine, tenant):
    token, _ = issue_access_token(subject="li", tenant=tenant, scope="system/*.cruds", minutes=-5)
    r = await c.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {token}"})
    refused_cleanly(r, 401)
    assert "invalid_token" in r.headers["www-authenticate"]
    [entry] = await recorded(app, engine, tenant, action="token-rejected")
    assert entry.actor == "li" and entry.detail_value["token"] == "expired"


# ------------------------------------------------------------------ ids
async def test_cross_tenant_ids_are_not_found(app, c, engine, tenant):
    other = f"{tenant}-b"
    theirs = await create(c, other, {"resourceType": "Patient", "name": [{"family": "别家"}]})
    obs = await create(c, other, {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                  "subject": {"reference": f"Patient/{theirs['id']}"}})
    mine = auth_headers(tenant)
    for url in (f"{FHIR}/Patient/{theirs['id']}", f"{FHIR}/Observation/{obs['id']}",
                f"{FHIR}/Patient/{theirs['id']}/_history", f"{FHIR}/Patient/{theirs['id']}/$everything"):
        r = await c.get(url, headers=mine)
        assert r.status_code in (404, 400), (url, r.status_code)
        assert "别家" not in r.text
    r = await c.get(f"{FHIR}/Patient", params={"_id": theirs["id"]}, headers=mine)
    assert r.status_code == 200 and not [e for e in r.json().get("entry", [])
                                         if e["resource"]["resourceType"] == "Patient"]
    r = await c.put(f"{FHIR}/Patient/{theirs['id']}", json={**theirs, "name": [{"family": "改"}]}, headers=mine)
    # an update names an id: in this tenant it does not exist (create-on-update or refusal), never B's record
    r2 = await c.get(f"{FHIR}/Patient/{theirs['id']}", headers=auth_headers(other))
    assert r2.json()["name"][0]["family"] == "别家"
    entries = await recorded(app, engine, tenant, resource=f"Patient/{theirs['id']}")
    assert any(e.action == "read" and e.outcome in ("not-found", "denied") for e in entries)


async def test_idor_guessing_another_patients_observation(app, c, engine, tenant):
    me = await create(c, tenant, {"resourceType": "Patient", "name": [{"family": "我"}]})
    other = await create(c, tenant, {"resourceType": "Patient", "name": [{"family": "他人"}]})
    theirs = await create(c, tenant, {"resourceType": "Observation", "status": "final", "code": {"text": "HIV 抗体"},
                                      "subject": {"reference": f"Patient/{other['id']}"}})
    h = auth_headers(tenant, "patient/*.rs", subject=f"patient:{me['id']}", patient=me["id"], roles=("patient",))
    guesses = [theirs["id"], other["id"], str(uuid.uuid4()), "1", "2"]
    for gid in guesses:
        for url in (f"{FHIR}/Observation/{gid}", f"{FHIR}/Patient/{gid}"):
            r = await c.get(url, headers=h)
            refused_cleanly(r, 404)
            assert "HIV" not in r.text and "他人" not in r.text
    # the same answer as for an id that never existed: nothing tells them apart
    missing = await c.get(f"{FHIR}/Observation/{uuid.uuid4()}", headers=h)
    real = await c.get(f"{FHIR}/Observation/{theirs['id']}", headers=h)
    assert missing.status_code == real.status_code == 404
    r = await c.get(f"{FHIR}/Observation", params={"subject": f"Patient/{other['id']}"}, headers=h)
    assert r.status_code == 200 and "HIV" not in r.text
    entries = await recorded(app, engine, tenant, resource=f"Observation/{theirs['id']}", actor=f"patient:{me['id']}")
    assert len(entries) == 2 and all(e.outcome in ("denied", "not-found") for e in entries)


async def test_scope_escalation_is_refused(app, c, engine, tenant):
    me = await create(c, tenant, {"resourceType": "Patient", "name": [{"family": "我"}]})
    other = await create(c, tenant, {"resourceType": "Patient", "name": [{"family": "他人"}]})
    narrow = auth_headers(tenant, "patient/Observation.rs", subject=f"patient:{me['id']}", patient=me["id"],
                          roles=("patient",))
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{me['id']}"}}
    refused_cleanly(await c.post(f"{FHIR}/Observation", json=obs, headers=narrow), 403)
    refused_cleanly(await c.get(f"{FHIR}/Patient/{other['id']}", headers=narrow), 403, 404)
    refused_cleanly(await c.get(f"{FHIR}/Condition", headers=narrow), 403)
    # a write-capable patient token cannot write into someone else's record
    wide = auth_headers(tenant, "patient/*.cruds", subject=f"patient:{me['id']}", patient=me["id"], roles=("patient",))
    r = await c.post(f"{FHIR}/Observation", json={**obs, "subject": {"reference": f"Patient/{other['id']}"}},
                     headers=wide)
    refused_cleanly(r, 403)
    # nor read the audit log, acknowledge security events or export in bulk
    refused_cleanly(await c.get("/api/audit/entries", headers=wide), 403)
    refused_cleanly(await c.post("/api/security/scan", headers=wide), 403)
    refused_cleanly(await c.get(f"{FHIR}/AuditEvent", headers=wide), 403)
    refused_cleanly(await c.put("/api/security/policy", json={"after_hours": {"enabled": False}},
                                headers=auth_headers(tenant, "user/*.rs", subject="shen", roles=("auditor",))), 403)
    denied = await recorded(app, engine, tenant, outcome="denied")
    kinds = {(e.action, e.resource_type) for e in denied}
    assert ("create", "Observation") in kinds
    assert any(e.action == "request-refused" and e.detail_value["path"] == "/api/audit/entries" for e in denied)
    assert any(e.action == "request-refused" and e.detail_value["path"] == "/api/security/policy" for e in denied)


# ------------------------------------------------------------------ injection
SQL = ["' OR 1=1 --", "张' OR '1'='1", "x'; DROP TABLE fhir_resource; --", "\" OR \"\"=\"", "1) OR (1=1",
       "%' OR '%'='", "\\'; SELECT pg_sleep(5); --"]
SCRIPT = "<script>alert(1)</script>"


async def test_sql_and_script_injection_through_search_parameters(app, c, engine, tenant):
    await create(c, tenant, {"resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}]})
    h = auth_headers(tenant)
    for value in SQL:
        for param in ("name", "family", "identifier", "_id", "gender", "birthdate", "address"):
            r = await c.get(f"{FHIR}/Patient", params={param: value}, headers=h)
            assert r.status_code in (200, 400), (param, value, r.status_code, r.text[:300])
            if r.status_code == 200:
                assert not [e for e in r.json().get("entry", []) if e["resource"]["resourceType"] == "Patient"], (
                    param, value)
    for params in ({"_sort": "name;DROP TABLE fhir_resource"}, {"_sort": "-_lastUpdated,' OR 1=1"},
                   {"_elements": "id,name) FROM fhir_resource --"}, {"_count": "1 OR 1=1"}, {"_count": "-1"},
                   {"_count": "99999999999999999999"}, {"_include": "Patient:' OR 1=1"},
                   {"name:exact": SCRIPT}, {"name": SCRIPT}, {SCRIPT: "1"}, {"_sort": SCRIPT}):
        r = await c.get(f"{FHIR}/Patient", params=params, headers=h)
        assert r.status_code in (200, 400), (params, r.status_code, r.text[:300])
        # values echoed back (an OperationOutcome naming the parameter) are JSON data, never HTML
        assert r.headers["content-type"].startswith("application/fhir+json")
        r.json()
    # the table is still there and the patient still found
    r = await c.get(f"{FHIR}/Patient", params={"family": "张"}, headers=h)
    assert r.status_code == 200 and len(r.json()["entry"]) == 1
    # the audit API treats filters as values too
    aud = auth_headers(tenant, "user/*.rs", subject="shen", roles=("auditor",))
    for value in SQL:
        r = await c.get("/api/audit/entries", params={"actor": value}, headers=aud)
        assert r.status_code == 200 and r.json()["entries"] == []
    r = await c.get(f"{FHIR}/AuditEvent", params={"agent": SQL[0]}, headers=aud)
    assert r.status_code == 200 and not [e for e in r.json()["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    # the searches were recorded with their query, as typed
    searches = await recorded(app, engine, tenant, action="search")
    assert any("OR+1%3D1" in (e.detail_value or {}).get("query", "") or "OR 1=1" in (e.detail or "")
               for e in searches)


async def test_script_in_form_fields_is_stored_as_data_and_escaped(app, c, engine, tenant):
    p = await create(c, tenant, {"resourceType": "Patient", "name": [{"family": SCRIPT}]})
    r = await c.get(f"{FHIR}/Patient/{p['id']}", headers=auth_headers(tenant))
    assert r.headers["content-type"].startswith("application/fhir+json") and r.json()["name"][0]["family"] == SCRIPT
    aud = auth_headers(tenant, "user/*.rs", subject=SCRIPT, roles=("auditor",))
    r = await c.get("/api/audit/entries", headers=aud)
    assert r.headers["content-type"].startswith("application/json")
    r = await c.get("/api/audit/export.csv", headers=aud)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")


# ------------------------------------------------------------------ bodies and ids
@pytest.fixture
def small_bodies(monkeypatch):
    monkeypatch.setenv("YIYUN_MAX_BODY_BYTES", "2000")
    get_settings.cache_clear()
    yield 2000
    get_settings.cache_clear()


async def test_oversized_bodies_are_refused_with_413(small_bodies, app, c, engine, tenant):
    big = {"resourceType": "Patient", "name": [{"family": "x" * 5000}]}
    h = auth_headers(tenant)
    refused_cleanly(await c.post(f"{FHIR}/Patient", json=big, headers=h), 413)

    async def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(10):
            yield b" " * 500

    r = await c.post(f"{FHIR}/Patient", content=chunks(), headers={**h, "Content-Type": "application/fhir+json"})
    refused_cleanly(r, 413)
    r = await c.post(f"{FHIR}/Patient", params={"family": "x"}, headers=h)
    async with unit_of_work(engine, write=False) as conn:
        from sqlalchemy import text

        n = (await conn.execute(text("SELECT count(*) FROM fhir_resource WHERE tenant=:t"), {"t": tenant})).scalar()
    assert n == 0
    # the JSON API and the pages have the same limit, declared or streamed
    po = auth_headers(tenant, "user/*.rs", subject="po", roles=("privacy-officer",))
    big_policy = {"after_hours": {"exempt_actors": ["x" * 50] * 100}}
    refused_cleanly(await c.put("/api/security/policy", json=big_policy, headers=po), 413)
    r = await c.put("/api/security/policy", content=chunks(), headers={**po, "Content-Type": "application/json"})
    refused_cleanly(r, 413)
    assert (await c.get("/api/security/policy", headers=po)).json()["after_hours"]["exempt_actors"] == []
    r = await c.post("/signin", data={"username": "x" * 5000, "password": "y"})
    assert r.status_code == 413
    entries = await recorded(app, engine, tenant, action="request-refused")
    assert sum(1 for e in entries if e.detail_value["status"] == 413) == 4


async def test_malformed_json_is_a_400(app, c, engine, tenant):
    h = {**auth_headers(tenant), "Content-Type": "application/fhir+json"}
    for body in (b"{not json", b'{"resourceType": "Patient", "name": [}', b"\xff\xfe", b"[1, 2", b'"just a string"',
                 b'{"resourceType": "Patient", "birthDate": {"$gt": ""}}'):
        r = await c.post(f"{FHIR}/Patient", content=body, headers=h)
        refused_cleanly(r, 400, 422)
    r = await c.put("/api/security/policy", content=b"{oops", headers={
        **auth_headers(tenant, "user/*.rs", subject="po", roles=("privacy-officer",)), "Content-Type": "application/json"})
    assert r.status_code == 422
    entries = await recorded(app, engine, tenant, action="request-refused")
    assert len(entries) >= 6 and {e.detail_value["status"] for e in entries} <= {400, 422}


async def test_path_traversal_in_ids(app, c, engine, tenant):
    h = auth_headers(tenant)
    for raw in ("..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%5C..%5Cwindows%5Cwin.ini",
                "a%00b", "%252e%252e%252f", "x" * 300):
        for path in (f"{FHIR}/Patient/{raw}", f"{FHIR}/Binary/{raw}", f"{FHIR}/AuditEvent/{raw}",
                     f"{FHIR}/Patient/{raw}/_history/1"):
            r = await c.get(path, headers={**h, **auth_headers(tenant, "system/*.rs", roles=("auditor",))})
            assert 400 <= r.status_code < 500, (path, r.status_code)
            assert "root:" not in r.text and "[fonts]" not in r.text
    r = await c.get("/api/audit/entries", params={"resource_type": "Patient", "resource_id": "../../etc/passwd"},
                    headers=auth_headers(tenant, "user/*.rs", subject="shen", roles=("auditor",)))
    refused_cleanly(r, 400)
    r = await c.get("/static/../../../../etc/passwd")
    assert r.status_code == 404 and "root:" not in r.text


# ------------------------------------------------------------------ sessions
async def _staff_session(engine, tenant, roles=("doctor",)):
    from yiyun.identity.accounts import create_staff, create_tenant
    from yiyun.identity.sessions import open_session

    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="攻防医院", kind="hospital")
        acct = await create_staff(conn, username=f"u-{tenant}", display_name="王护士", password="", password_hash="x",
                                  tenant_slug=tenant, roles=list(roles))
        cookie, csrf = await open_session(conn, acct.id, tenant)
    return acct, cookie, csrf


async def test_csrf_without_the_session_token_is_refused(app, c, engine, tenant):
    _acct, cookie, csrf = await _staff_session(engine, tenant, roles=("privacy-officer", "admin"))
    c.cookies.set("yiyun_session", cookie)
    body = {"resourceType": "Organization", "name": "伪造的机构"}
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        r = await c.post(f"{FHIR}/Organization", json=body, headers=headers)
        refused_cleanly(r, 403)
        r = await c.put("/api/security/policy", json={"after_hours": {"enabled": False}}, headers=headers)
        refused_cleanly(r, 403)
    r = await c.get(f"{FHIR}/Organization", params={"name": "伪造"})
    assert r.status_code == 200 and "伪造的机构" not in r.text
    assert (await c.get("/api/security/policy")).json()["after_hours"]["enabled"] is True
    # with the session's token the same requests pass
    r = await c.put("/api/security/policy", json={"after_hours": {"enabled": False}}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    refused = await recorded(app, engine, tenant, action="request-refused")
    assert sum(1 for e in refused if e.detail_value["status"] == 403) == 6


async def test_a_planted_session_id_is_worth_nothing(app, c, engine, tenant):
    """Session fixation: an id the attacker chose or obtained before sign-in opens nothing after."""
    from yiyun.identity.sessions import load_session, open_session

    acct, cookie, _csrf = await _staff_session(engine, tenant, roles=("auditor",))
    planted = secrets.token_urlsafe(32)  # never issued by the server
    c.cookies.set("yiyun_session", planted)
    refused_cleanly(await c.get("/api/audit/entries"), 401)
    # an id the server did issue is replaced (deleted) when a new session opens in its browser
    async with unit_of_work(engine) as conn:
        fresh, _ = await open_session(conn, acct.id, tenant, replaces=cookie)
        assert await load_session(conn, cookie) is None and await load_session(conn, fresh) is not None
    c.cookies.set("yiyun_session", cookie)
    refused_cleanly(await c.get("/api/audit/entries"), 401)
    c.cookies.set("yiyun_session", fresh)
    assert (await c.get("/api/audit/entries")).status_code == 200
    default = get_settings().default_tenant
    entries = await recorded(app, engine, default, action="session-rejected")
    assert sum(1 for e in entries if (e.detail_value or {}).get("credential") == "session"
               and e.client_address == c._transport.client[0]) == 2


async def test_sign_in_brute_force_is_slowed_locked_recorded_and_raises_an_event(app, c, engine, tenant, address):
    from yiyun.identity.accounts import create_staff, create_tenant

    username = f"victim-{tenant}"
    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="攻防医院", kind="hospital")
        await create_staff(conn, username=username, display_name="受害者", password="Correct-Horse-42-Battery",
                           tenant_slug=tenant, roles=["doctor"])
    form_token = secrets.token_urlsafe(16)
    c.cookies.set("yiyun_signin", form_token)
    statuses = []
    for i in range(12):
        r = await c.post("/signin", data={"username": username, "password": f"guess-{i}", "csrf_token": form_token,
                                          "next": "/"})
        statuses.append(r.status_code)
        assert "yiyun_session" not in r.headers.get("set-cookie", "")
    assert set(statuses) <= {401, 429} and statuses[0] == 401 and statuses[-1] == 429
    # even the right password is refused while the account is held back
    r = await c.post("/signin", data={"username": username, "password": "Correct-Horse-42-Battery",
                                      "csrf_token": form_token, "next": "/"})
    assert r.status_code == 429 and "yiyun_session" not in r.headers.get("set-cookie", "")
    failures = await recorded(app, engine, tenant, action=["signin-failed", "signin-locked"])
    assert len([e for e in failures if e.client_address == address]) >= 13
    await scan(engine, tenant=tenant)
    async with unit_of_work(engine, write=False) as conn:
        events = await list_events(conn, tenant, kind="failed-signins")
    assert {e["subject"] for e in events} == {username, f"address:{address}"}


async def test_signing_in_replaces_a_session_id_planted_before(app, c, engine, tenant):
    """Session fixation through the real sign-in form: the id the browser carried before the
    password was accepted (a real session of the attacker's) is deleted, and a new one is set."""
    from yiyun.identity.accounts import create_staff, create_tenant
    from yiyun.identity.sessions import load_session, open_session

    async with unit_of_work(engine) as conn:
        await create_tenant(conn, tenant, name="攻防医院", kind="hospital")
        victim = await create_staff(conn, username=f"v-{tenant}", display_name="受害者",
                                    password="Correct-Horse-42-Battery", tenant_slug=tenant, roles=["doctor"])
        attacker = await create_staff(conn, username=f"a-{tenant}", display_name="攻击者", password="",
                                      password_hash="x", tenant_slug=tenant, roles=["auditor"])
        planted, _ = await open_session(conn, attacker.id, tenant)
    form_token = secrets.token_urlsafe(16)
    c.cookies.set("yiyun_signin", form_token)
    c.cookies.set("yiyun_session", planted)
    r = await c.post("/signin", data={"username": victim.username, "password": "Correct-Horse-42-Battery",
                                      "csrf_token": form_token, "next": "/"})
    assert r.status_code == 303, r.text[:300]
    issued = r.cookies.get("yiyun_session")
    assert issued and issued != planted
    async with unit_of_work(engine) as conn:
        assert await load_session(conn, planted) is None
        fresh = await load_session(conn, issued)
    assert fresh is not None and fresh.account_id == victim.id
    c.cookies.set("yiyun_session", planted)
    refused_cleanly(await c.get("/api/audit/entries"), 401)
