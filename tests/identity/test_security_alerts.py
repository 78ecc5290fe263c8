"""High-severity security events reach privacy officers: a live message on the tenant's
channel, an SMS to officers with a phone (at most one per 15 minutes each), an unread count
on the events page. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest_asyncio
from sqlalchemy import select, update

from yiyun.core.db import unit_of_work
from yiyun.identity.audit import AuditEntry, append
from yiyun.identity.security_events import scan

MIN = 60_000_000


def number() -> str:
    return f"139{uuid.uuid4().int % 10**8:08d}"


@pytest_asyncio.fixture
async def hospital(engine):
    """A hospital with two privacy officers (one with a phone on file) and a doctor with a phone."""
    from yiyun.identity.accounts import create_staff, create_tenant
    from yiyun.identity.protection.fields import PHONE, blind_index, encrypt
    from yiyun.identity.sessions import open_session
    from yiyun.identity.signin_tables import phone

    slug = f"sa-{uuid.uuid4().hex[:8]}"
    phones = {"po1": number(), "doc": number()}
    async with unit_of_work(engine) as conn:
        await create_tenant(conn, slug, name="丙医院", kind="hospital")
        ids, cookies = {}, {}
        for who, roles in (("po1", ["privacy-officer"]), ("po2", ["privacy-officer", "admin"]), ("doc", ["doctor"])):
            acc = await create_staff(conn, username=f"{who}-{slug}", display_name=who, password="",
                                     password_hash="$argon2id$v=19$m=65536,t=3,p=4$x$y", tenant_slug=slug, roles=roles)
            ids[who] = acc.id
            cookies[who] = (await open_session(conn, acc.id, slug))[0]
            if who in phones:
                await conn.execute(phone.insert().values(account_id=acc.id, phone=encrypt(phones[who], PHONE),
                                                         phone_index=blind_index(phones[who], PHONE)))
    return {"tenant": slug, "ids": ids, "phones": phones, "cookies": cookies}


def break_glass(tenant: str, ts: int | None = None) -> AuditEntry:
    return AuditEntry(tenant=tenant, actor="staff:li", role="doctor", action="break-glass", resource_type="Patient",
                      resource_id="p1", patient="Patient/p1", outcome="ok", detail={"reason": "昏迷急诊，无法取得联系"},
                      **({"ts": ts} if ts else {}))


async def add(engine, entries) -> None:
    async with unit_of_work(engine) as conn:
        await append(conn, entries)


async def texts_to(engine, phone_number: str) -> list[str]:
    from yiyun.identity.sms import outbox_messages

    async with unit_of_work(engine, write=False) as conn:
        return [m.body for m in await outbox_messages(conn, limit=500) if m.phone == phone_number]


async def test_high_severity_event_is_published_and_texted_once_per_quarter_hour(engine, hospital):
    from yiyun.core.realtime import get_broker
    from yiyun.identity import security_alerts
    from yiyun.identity.security_tables import security_alert_recipient

    t = hospital["tenant"]
    async with get_broker().subscribe(security_alerts.channel(t)) as sub:
        await add(engine, [break_glass(t)])
        assert (await scan(engine, tenant=t)).raised == 1
        message = await sub.get(timeout=2)
        assert message["type"] == "security-events" and [e["kind"] for e in message["events"]] == ["break-glass"]
        texts = await texts_to(engine, hospital["phones"]["po1"])
        assert len(texts) == 1 and "紧急调阅病历" in texts[0] and "丙医院" in texts[0]
        assert "p1" not in texts[0] and "staff:li" not in texts[0]  # no one named in an SMS
        assert await texts_to(engine, hospital["phones"]["doc"]) == []  # doctors are not paged

        # a second emergency access five minutes later: shown live, but no second SMS
        await add(engine, [break_glass(t)])
        await scan(engine, tenant=t)
        assert (await sub.get(timeout=2))["events"][0]["kind"] == "break-glass"
        assert len(await texts_to(engine, hospital["phones"]["po1"])) == 1

        # a medium-severity event pages nobody
        await add(engine, [AuditEntry(tenant=t, actor="acc-x", action="login-failed", outcome="denied",
                                      client_address="10.9.9.9") for _ in range(10)])
        assert (await scan(engine, tenant=t)).raised == 2
        assert await sub.get(timeout=0.3) is None

        # a quarter of an hour after the last SMS the officer is texted again
        async with unit_of_work(engine) as conn:
            await conn.execute(update(security_alert_recipient).where(
                security_alert_recipient.c.account_id == hospital["ids"]["po1"]).values(
                last_sms_ts=security_alert_recipient.c.last_sms_ts - 15 * MIN))
        await add(engine, [break_glass(t)])
        await scan(engine, tenant=t)
        assert len(await texts_to(engine, hospital["phones"]["po1"])) == 2
    async with unit_of_work(engine, write=False) as conn:
        rows = (await conn.execute(select(security_alert_recipient.c.account_id).where(
            security_alert_recipient.c.tenant == t))).scalars().all()
    assert sorted(rows) == [hospital["ids"]["po1"]]  # the officer without a phone has no SMS turn


async def test_two_scanners_claim_one_sms_turn(engine, hospital):
    from yiyun.identity.security_alerts import claim_sms

    t, po1 = hospital["tenant"], hospital["ids"]["po1"]
    async with unit_of_work(engine) as conn:
        assert await claim_sms(conn, t, po1) is True
        assert await claim_sms(conn, t, po1) is False
    async with unit_of_work(engine) as conn:
        assert await claim_sms(conn, t, po1) is False


async def test_unread_count_until_the_officer_opens_the_events_page(app, c, engine, hospital):
    t = hospital["tenant"]
    officer = {"Cookie": f"yiyun_session={hospital['cookies']['po2']}"}
    doctor = {"Cookie": f"yiyun_session={hospital['cookies']['doc']}"}
    await add(engine, [break_glass(t), break_glass(t)])
    await scan(engine, tenant=t)
    r = await c.get("/api/security/alerts", headers=officer)
    assert r.status_code == 200 and r.json() == {"unread": 2}
    assert (await c.get("/api/security/alerts", headers=doctor)).status_code == 403
    # every staff page of an officer carries the live badge; a doctor's does not
    assert 'id="security-alerts"' in (await c.get("/account", headers=officer)).text
    assert 'id="security-alerts"' not in (await c.get("/account", headers=doctor)).text
    page = await c.get("/audit/security-events", headers=officer)
    assert page.status_code == 200 and 'data-unread="2"' in page.text and "2 条新事件" in page.text
    assert (await c.get("/api/security/alerts", headers=officer)).json() == {"unread": 0}
    await add(engine, [break_glass(t)])
    await scan(engine, tenant=t)
    assert (await c.get("/api/security/alerts", headers=officer)).json() == {"unread": 1}


async def test_a_signed_in_officer_gets_the_alert_live_from_another_process(monkeypatch, engine, hospital):
    """The scan runs here, the officer's socket is on a real server process: the alert
    crosses through Redis. With CI=true an unreachable Redis fails this test."""
    import asyncio
    import json
    import os

    import pytest
    import websockets

    from tests.conftest import auth_headers, running_server
    from tests.hospital.test_consultation_ws import redis_url, token
    from yiyun.core.realtime import close_brokers
    from yiyun.core.settings import get_settings

    t = hospital["tenant"]
    monkeypatch.setenv("YIYUN_REDIS_URL", redis_url())
    get_settings.cache_clear()
    officer = auth_headers(t, "user/*.read", roles=("privacy-officer",), subject=hospital["ids"]["po2"])
    doctor = auth_headers(t, "user/*.read", roles=("doctor",), subject="staff:li")
    try:
        with running_server({**os.environ, "YIYUN_LOG_LEVEL": "WARNING"}) as base:
            socket = base.replace("http://", "ws://") + "/ws/security-alerts?access_token="
            async with websockets.connect(socket + token(doctor)) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd.code == 4403
            async with websockets.connect(socket + token(officer)) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "hello", "unread": 0}
                await add(engine, [break_glass(t)])
                await scan(engine, tenant=t)
                alert = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert alert["type"] == "security-events" and alert["unread"] == 1
                assert [e["kind"] for e in alert["events"]] == ["break-glass"]
    finally:
        await close_brokers()
        get_settings.cache_clear()


async def test_suspicious_access_alerts_and_each_tenant_chooses_what_alerts(engine, hospital):
    import pytest

    from yiyun.core.errors import BadRequest
    from yiyun.core.realtime import get_broker
    from yiyun.identity import security_alerts
    from yiyun.identity.security_events import set_policy

    t = hospital["tenant"]
    async with get_broker().subscribe(security_alerts.channel(t)) as sub:
        # one doctor opening 51 different patients' records within the hour
        await add(engine, [AuditEntry(tenant=t, actor="staff:wu", role="doctor", action="read", resource_type="Patient",
                                      resource_id=f"p{i}", patient=f"Patient/p{i}") for i in range(51)])
        await scan(engine, tenant=t)
        assert [e["kind"] for e in (await sub.get(timeout=2))["events"]] == ["many-patients"]
        assert len(await texts_to(engine, hospital["phones"]["po1"])) == 1
        async with unit_of_work(engine) as conn:
            await set_policy(conn, t, {"alerts": {"kinds": []}}, by="po2")
            with pytest.raises(BadRequest):
                await set_policy(conn, t, {"alerts": {"kinds": ["everything"]}}, by="po2")
        await add(engine, [break_glass(t)])
        assert (await scan(engine, tenant=t)).raised == 1
        assert await sub.get(timeout=0.3) is None
