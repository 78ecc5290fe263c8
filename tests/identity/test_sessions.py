"""Web sessions: the cookie authenticates pages, the JSON API, FHIR and WebSockets; CSRF on
unsafe cookie requests; idle and absolute timeouts; sign-out everywhere; patient accounts."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, WebSocket
from sqlalchemy import update
from starlette.requests import Request

from tests.conftest import auth_headers
from yiyun.core.db import unit_of_work
from yiyun.identity import accounts, sessions
from yiyun.identity.auth import AuthContext, require_subject
from yiyun.identity.signin_tables import session as session_table

pytestmark = pytest.mark.asyncio
PASSWORD = "Correct-horse-battery-9"


async def make_staff(engine, tenant, username="dr-li", roles=("doctor",), **kw):
    async with unit_of_work(engine) as conn:
        try:
            await accounts.create_tenant(conn, tenant, name="测试医院", kind="hospital")
        except Exception:
            pass
    async with unit_of_work(engine) as conn:
        return await accounts.create_staff(conn, username=f"{username}-{tenant}", display_name="李医生",
                                           password=PASSWORD, tenant_slug=tenant, roles=list(roles),
                                           fhir_ref="Practitioner/p1", **kw)


async def sign_in(engine, account_id, tenant):
    async with unit_of_work(engine) as conn:
        return await sessions.open_session(conn, account_id, tenant, client_address="127.0.0.1", user_agent="pytest")


def browser(client, cookie=None):
    """A client on the same app with no bearer token: only the cookie speaks for it."""
    c = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://testserver")
    if cookie:
        c.cookies.set(sessions.COOKIE, cookie)
    return c


def add_whoami(app):
    async def whoami(ctx: AuthContext = Depends(require_subject)):
        return {"subject": ctx.subject, "tenant": ctx.tenant, "roles": list(ctx.roles), "scopes": list(ctx.scopes),
                "patient": ctx.patient, "fhir_user": ctx.fhir_user, "session": ctx.via_session}

    app.add_api_route("/api/test-whoami", whoami, methods=["GET", "POST"])


async def test_cookie_authenticates_api_and_fhir_with_csrf_on_unsafe_methods(client, engine, tenant):
    staff = await make_staff(engine, tenant)
    cookie, csrf = await sign_in(engine, staff.id, tenant)
    add_whoami(client.app)
    async with browser(client, cookie) as b:
        r = await b.get("/api/test-whoami")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tenant"] == tenant and body["roles"] == ["doctor"] and body["scopes"] == ["user/*.cruds"]
        assert body["fhir_user"] == "Practitioner/p1" and body["session"] is True
        # a cookie POST without the token is refused, with a message saying why
        r = await b.post("/api/test-whoami")
        assert r.status_code == 403 and "CSRF" in r.json()["detail"]
        r = await b.post("/api/test-whoami", headers={"X-CSRF-Token": "wrong"})
        assert r.status_code == 403
        assert (await b.post("/api/test-whoami", headers={"X-CSRF-Token": csrf})).status_code == 200
        assert (await b.post("/api/test-whoami", data={"csrf_token": csrf})).status_code == 200
        # the FHIR API: reads with the cookie alone, writes need the header
        r = await b.get("/fhir/R4/Patient")
        assert r.status_code == 200, r.text
        patient = {"resourceType": "Patient", "name": [{"family": "王"}]}
        r = await b.post("/fhir/R4/Patient", json=patient)
        assert r.status_code == 403 and "CSRF" in r.text
        r = await b.post("/fhir/R4/Patient", json=patient, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text
    # bearer requests need no CSRF token, and a bearer header wins over a cookie
    r = await client.post("/fhir/R4/Patient", json=patient)
    assert r.status_code == 201
    async with browser(client, cookie) as b:
        r = await b.post("/fhir/R4/Patient", json=patient, headers=auth_headers(tenant))
        assert r.status_code == 201


async def test_unknown_and_timed_out_sessions_are_refused(client, engine, tenant):
    staff = await make_staff(engine, tenant)
    add_whoami(client.app)
    async with browser(client, "not-a-session") as b:
        assert (await b.get("/api/test-whoami")).status_code == 401
        assert (await b.get("/fhir/R4/Patient")).status_code == 401
    cookie, _ = await sign_in(engine, staff.id, tenant)
    idle_us = 30 * 60 * 1_000_000
    async with unit_of_work(engine) as conn:  # unused for just over 30 minutes
        await conn.execute(update(session_table).where(session_table.c.id_hash == sessions.hash_session_id(cookie))
                           .values(last_seen_ts=session_table.c.last_seen_ts - idle_us - 1))
    async with browser(client, cookie) as b:
        assert (await b.get("/api/test-whoami")).status_code == 401
    cookie, _ = await sign_in(engine, staff.id, tenant)
    async with browser(client, cookie) as b:
        assert (await b.get("/api/test-whoami")).status_code == 200
    async with unit_of_work(engine) as conn:  # opened more than 12 hours ago, in use all along
        await conn.execute(update(session_table).where(session_table.c.id_hash == sessions.hash_session_id(cookie))
                           .values(expires_ts=session_table.c.created_ts - 1))
    async with browser(client, cookie) as b:
        assert (await b.get("/api/test-whoami")).status_code == 401


async def test_disabled_account_and_sign_out_everywhere(client, engine, tenant):
    staff = await make_staff(engine, tenant)
    add_whoami(client.app)
    c1, _ = await sign_in(engine, staff.id, tenant)
    c2, _ = await sign_in(engine, staff.id, tenant)
    async with unit_of_work(engine) as conn:
        assert len(await sessions.list_sessions(conn, staff.id)) == 2
        assert await sessions.close_all_sessions(conn, staff.id) == 2
    for c in (c1, c2):
        async with browser(client, c) as b:
            assert (await b.get("/api/test-whoami")).status_code == 401
    c3, _ = await sign_in(engine, staff.id, tenant)
    async with unit_of_work(engine) as conn:
        await accounts.set_status(conn, staff.id, "disabled")
    async with browser(client, c3) as b:
        assert (await b.get("/api/test-whoami")).status_code == 401


async def test_patient_account_by_phone_gets_its_compartment(client, engine, tenant):
    await make_staff(engine, tenant)
    async with unit_of_work(engine) as conn:
        acct = await accounts.create_patient_account(conn, "+86 138-0013-8000", "王小明", tenant=tenant)
        with pytest.raises(Exception) as dup:
            await accounts.create_patient_account(conn, "13800138000", "重复", tenant=tenant)
        assert getattr(dup.value, "status", None) == 409
        assert (await accounts.find_by_phone(conn, "138 0013 8000")).id == acct.id
        assert await accounts.account_phone(conn, acct.id) == "13800138000"
    cookie, _ = await sign_in(engine, acct.id, tenant)
    add_whoami(client.app)
    async with browser(client, cookie) as b:
        body = (await b.get("/api/test-whoami")).json()
        assert body["roles"] == ["patient"] and body["scopes"] == ["patient/*.cruds"] and body["patient"] is None
        assert body["subject"] == acct.id
    async with unit_of_work(engine) as conn:
        await accounts.link_patient_account(conn, acct.id, tenant, "Patient/pt-1")
    async with browser(client, cookie) as b:
        body = (await b.get("/api/test-whoami")).json()
        assert body["patient"] == "pt-1" and body["fhir_user"] == "Patient/pt-1"


async def test_require_page_user_redirects_to_sign_in(client, engine, tenant):
    async def page(ctx: AuthContext = Depends(sessions.require_page_user)):
        return {"who": ctx.subject}

    client.app.add_api_route("/test-private-page", page, methods=["GET"])
    async with browser(client) as b:
        r = await b.get("/test-private-page?x=1")
        assert r.status_code == 303 and r.headers["location"] == "/signin?next=/test-private-page%3Fx%3D1"
    staff = await make_staff(engine, tenant)
    cookie, _ = await sign_in(engine, staff.id, tenant)
    async with browser(client, cookie) as b:
        assert (await b.get("/test-private-page")).json() == {"who": staff.username}


def _websocket(headers: dict[str, str], query: str = "") -> tuple[WebSocket, list]:
    sent: list = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws/test", "raw_path": b"/ws/test", "query_string": query.encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "scheme": "ws",
             "server": ("testserver", 80), "client": ("127.0.0.1", 5000), "root_path": "", "subprotocols": []}
    return WebSocket(scope, receive, send), sent


async def test_websocket_context_from_cookie_or_access_token(engine, tenant):
    staff = await make_staff(engine, tenant)
    cookie, _ = await sign_in(engine, staff.id, tenant)
    ws, _ = _websocket({"host": "testserver", "origin": "http://testserver", "cookie": f"yiyun_session={cookie}"})
    ctx = await sessions.websocket_context(ws)
    assert ctx.tenant == tenant and ctx.roles == ("doctor",)
    # a page of another site cannot use the browser's cookie
    ws, sent = _websocket({"host": "testserver", "origin": "http://evil.example", "cookie": f"yiyun_session={cookie}"})
    with pytest.raises(sessions.WebSocketUnauthorized):
        await sessions.websocket_context(ws)
    assert sent[-1] == {"type": "websocket.close", "code": 4401, "reason": ""}
    token = auth_headers(tenant, scope="user/*.rs", subject="dr-x")["Authorization"].split()[1]
    ws, _ = _websocket({"host": "testserver"}, f"access_token={token}")
    assert (await sessions.websocket_context(ws)).subject == "dr-x"
    ws, sent = _websocket({"host": "testserver"})
    with pytest.raises(sessions.WebSocketUnauthorized):
        await sessions.websocket_context(ws)
    assert sent and sent[-1]["code"] == 4401


async def test_request_without_cookie_is_not_a_session(engine):
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    assert await sessions.session_context(Request(scope)) is None


async def test_use_keeps_a_session_alive(client, engine, tenant):
    staff = await make_staff(engine, tenant)
    cookie, _ = await sign_in(engine, staff.id, tenant)
    add_whoami(client.app)
    id_hash = sessions.hash_session_id(cookie)
    async with unit_of_work(engine) as conn:  # unused for 29 minutes: still alive, and used now
        await conn.execute(update(session_table).where(session_table.c.id_hash == id_hash)
                           .values(last_seen_ts=session_table.c.last_seen_ts - 29 * 60 * 1_000_000))
    async with browser(client, cookie) as b:
        assert (await b.get("/api/test-whoami")).status_code == 200
    async with unit_of_work(engine, write=False) as conn:
        info = await sessions.load_session(conn, cookie, touch=False)
    assert info is not None and not sessions.needs_touch(info)

