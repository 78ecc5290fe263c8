"""Security events found in the audit log: failed sign-ins, many patients, break-glass and
after-hours access; incremental scans, deduplication, per-tenant policy, acknowledging."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from yiyun.core.db import unit_of_work
from yiyun.core.errors import BadRequest, NotFound
from yiyun.identity.audit import AuditEntry, append
from yiyun.identity.security_events import acknowledge, list_events, scan, set_policy
from yiyun.identity.security_tables import security_scan_state

SH = ZoneInfo("Asia/Shanghai")
MIN = 60_000_000


def at(hour: int, minute: int = 0, day: int = 10) -> int:
    """µs since the epoch of a Shanghai wall-clock time on 2026-03-<day>."""
    return int(datetime(2026, 3, day, hour, minute, tzinfo=SH).timestamp() * 1_000_000)


async def add(engine, entries: list[AuditEntry]) -> None:
    async with unit_of_work(engine) as conn:
        await append(conn, entries)


async def events(engine, tenant, **kw):
    async with unit_of_work(engine, write=False) as conn:
        return await list_events(conn, tenant, **kw)


def failed(tenant, ts, actor="acc-1", address="10.0.0.9"):
    return AuditEntry(tenant=tenant, actor=actor, action="login-failed", outcome="denied", client_address=address, ts=ts)


def read(tenant, ts, patient, actor="Practitioner/li", role="doctor"):
    return AuditEntry(tenant=tenant, actor=actor, role=role, action="read", resource_type="Patient",
                      resource_id=patient, patient=patient, ts=ts)


async def test_failed_signins_raise_one_event_per_account_and_address(engine, tenant):
    base = at(10)
    await add(engine, [failed(tenant, base + i * MIN) for i in range(9)])
    report = await scan(engine, tenant=tenant)
    assert report.scanned == 9 and report.raised == 0
    assert await events(engine, tenant) == []
    await add(engine, [failed(tenant, base + 9 * MIN)])
    report = await scan(engine, tenant=tenant)
    assert report.scanned == 1 and report.raised == 2
    evs = {e["subject"]: e for e in await events(engine, tenant)}
    assert set(evs) == {"acc-1", "address:10.0.0.9"}
    assert evs["acc-1"]["kind"] == "failed-signins" and evs["acc-1"]["detail"]["failures"] == 10
    assert evs["acc-1"]["count"] == 1 and evs["acc-1"]["status"] == "open"
    # two more failures in the window: the same events count up instead of new ones
    await add(engine, [failed(tenant, base + 10 * MIN), failed(tenant, base + 11 * MIN)])
    report = await scan(engine, tenant=tenant)
    assert report.raised == 0 and report.repeated == 4
    evs = {e["subject"]: e for e in await events(engine, tenant)}
    assert evs["acc-1"]["count"] == 3 and evs["address:10.0.0.9"]["count"] == 3


async def test_failures_spread_beyond_the_window_raise_nothing(engine, tenant):
    # ten failures, one every 2 minutes: never more than 8 within 15 minutes
    await add(engine, [failed(tenant, at(10) + i * 2 * MIN, address=f"10.0.1.{i}") for i in range(10)])
    assert (await scan(engine, tenant=tenant)).raised == 0
    # spread over two scans: the window reaches back into entries scanned before
    await add(engine, [failed(tenant, at(12) + i * 10_000_000, actor="acc-2", address="10.9.9.9") for i in range(6)])
    assert (await scan(engine, tenant=tenant)).raised == 0
    await add(engine, [failed(tenant, at(12) + (6 + i) * 10_000_000, actor="acc-2", address="10.9.9.9")
                       for i in range(4)])
    report = await scan(engine, tenant=tenant)
    assert report.raised == 2 and report.scanned == 4


async def test_reading_many_distinct_patients_raises_an_event(engine, tenant):
    base = at(10)
    # 50 distinct patients (and re-reads of them) in an hour: not unusual by default
    await add(engine, [read(tenant, base + i * 1_000_000, f"p{i % 50}") for i in range(80)])
    assert (await scan(engine, tenant=tenant)).raised == 0
    await add(engine, [read(tenant, base + 90 * 1_000_000, "p-new")])
    report = await scan(engine, tenant=tenant)
    assert report.by_kind == {"many-patients": 1}
    [ev] = await events(engine, tenant)
    assert ev["subject"] == "Practitioner/li" and ev["detail"]["distinct_patients"] == 51
    # the same reads by another user an hour and a half apart are not counted together
    await add(engine, [read(tenant, base + i * 2 * MIN, f"q{i}", actor="Practitioner/wang") for i in range(60)])
    assert (await scan(engine, tenant=tenant)).raised == 0


async def test_tenant_policy_tunes_the_threshold(engine, tenant):
    async with unit_of_work(engine) as conn:
        await set_policy(conn, tenant, {"many_patients": {"threshold": 3, "window_minutes": 10}}, by="po")
    await add(engine, [read(tenant, at(10) + i * MIN, f"p{i}") for i in range(4)])
    report = await scan(engine, tenant=tenant)
    assert report.by_kind == {"many-patients": 1}
    with pytest.raises(BadRequest):
        async with unit_of_work(engine) as conn:
            await set_policy(conn, tenant, {"many_patients": {"threshold": 0}})
    with pytest.raises(BadRequest):
        async with unit_of_work(engine) as conn:
            await set_policy(conn, tenant, {"after_hours": {"start": "25:00"}})
    with pytest.raises(BadRequest):
        async with unit_of_work(engine) as conn:
            await set_policy(conn, tenant, {"no_such_rule": True})


async def test_every_break_glass_is_its_own_high_event(engine, tenant):
    bg = [AuditEntry(tenant=tenant, actor="Practitioner/li", role="doctor", action="break-glass", purpose="ETREAT",
                     resource_type="Patient", resource_id=f"p{i}", patient=f"p{i}", ts=at(11) + i * MIN,
                     detail={"reason": f"昏迷患者 {i}"})
          for i in range(2)]
    await add(engine, bg)
    report = await scan(engine, tenant=tenant)
    assert report.by_kind == {"break-glass": 2}
    evs = await events(engine, tenant, kind="break-glass")
    assert {e["severity"] for e in evs} == {"high"}
    assert {e["detail"]["patient"] for e in evs} == {"Patient/p0", "Patient/p1"}
    assert {e["detail"]["reason"] for e in evs} == {"昏迷患者 0", "昏迷患者 1"}


async def test_after_hours_access_by_policy(engine, tenant):
    await add(engine, [read(tenant, at(23, 30), "p1"), read(tenant, at(10), "p2"),
                       read(tenant, at(23, 40), "p3", actor="service:lab", role=None)])
    report = await scan(engine, tenant=tenant)
    assert report.by_kind == {"after-hours": 1}
    [ev] = await events(engine, tenant)
    assert ev["subject"] == "Practitioner/li" and ev["detail"]["patient"] == "Patient/p1"
    # an emergency department exempts its doctors; another tenant switches the rule off
    async with unit_of_work(engine) as conn:
        await set_policy(conn, tenant, {"after_hours": {"exempt_roles": ["doctor"]}})
    await add(engine, [read(tenant, at(2, day=11), "p4")])
    assert (await scan(engine, tenant=tenant)).raised == 0
    await add(engine, [read(tenant, at(2, day=11), "p5", actor="Practitioner/zhao", role="nurse")])
    assert (await scan(engine, tenant=tenant)).raised == 1
    async with unit_of_work(engine) as conn:
        await set_policy(conn, tenant, {"after_hours": {"enabled": False}})
    await add(engine, [read(tenant, at(3, day=12), "p6", actor="Practitioner/qian", role="nurse")])
    assert (await scan(engine, tenant=tenant)).raised == 0


async def test_scans_are_incremental_and_chunked(engine, tenant):
    await add(engine, [read(tenant, at(10) + i, f"p{i % 3}") for i in range(25)])
    report = await scan(engine, tenant=tenant, chunk=10)
    assert report.scanned == 25
    assert (await scan(engine, tenant=tenant)).scanned == 0
    async with unit_of_work(engine, write=False) as conn:
        state = (await conn.execute(select(security_scan_state).where(security_scan_state.c.tenant == tenant))).first()
    assert state.last_seq == 25


async def test_acknowledge_and_close(engine, tenant):
    await add(engine, [failed(tenant, at(9) + i) for i in range(10)])
    await scan(engine, tenant=tenant)
    ev = (await events(engine, tenant))[0]
    async with unit_of_work(engine) as conn:
        acked = await acknowledge(conn, tenant, ev["id"], by="Practitioner/po")
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "Practitioner/po"
    async with unit_of_work(engine) as conn:
        with pytest.raises(NotFound):
            await acknowledge(conn, "other-tenant", ev["id"], by="x")
    async with unit_of_work(engine) as conn:
        await acknowledge(conn, tenant, ev["id"], by="Practitioner/po", status="closed")
    # a closed event is not reopened: the next failures raise a new one
    await add(engine, [failed(tenant, at(9) + 20 + i) for i in range(1)])
    await scan(engine, tenant=tenant)
    open_events = await events(engine, tenant, status="open")
    assert len(open_events) >= 1 and ev["id"] not in {e["id"] for e in open_events}


def test_security_commands(db_url, tenant):
    import asyncio
    import json
    import os
    import subprocess
    import sys

    from yiyun.core.db import dispose_engines, get_engine

    async def seed():
        await add(get_engine(), [AuditEntry(tenant=tenant, actor="Practitioner/li", role="doctor",
                                            action="break-glass", resource_type="Patient", resource_id="p1")])
        await dispose_engines()

    asyncio.run(seed())
    env = {**os.environ, "YIYUN_DATABASE_URL": db_url}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "yiyun.cli", "security", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    out = cli("scan", "--tenant", tenant, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["by_kind"] == {"break-glass": 1}
    assert "scanned 0 entries" in cli("scan", "--tenant", tenant).stdout
    listed = [json.loads(line) for line in cli("events", "--tenant", tenant).stdout.splitlines()]
    assert [e["kind"] for e in listed] == ["break-glass"]
    changed = cli("policy", "--tenant", tenant, "--set", '{"after_hours": {"enabled": false}}')
    assert changed.returncode == 0 and json.loads(changed.stdout)["after_hours"]["enabled"] is False
    assert cli("policy", "--tenant", tenant, "--set", '{"after_hours": {"start": "x"}}').returncode == 2
    assert cli("policy", "--tenant", tenant, "--set", "{not json").returncode == 2


async def test_many_patients_counts_records_and_searches_that_name_no_patient(engine, tenant, repo_factory):
    """Staff reading Observations (entries without a patient) and searching one patient at a
    time are attributed to the patients whose records they are."""
    async with repo_factory() as repo:
        pats = [(await repo.create({"resourceType": "Patient", "name": [{"family": f"p{i}"}]})).stored.res_id
                for i in range(4)]
        obs = [(await repo.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                  "subject": {"reference": f"Patient/{p}"}})).stored.res_id for p in pats[:2]]
    async with unit_of_work(engine) as conn:
        await set_policy(conn, tenant, {"many_patients": {"threshold": 3}})
    entries = [AuditEntry(tenant=tenant, actor="Practitioner/li", role="doctor", action="read",
                          resource_type="Observation", resource_id=o, ts=at(10) + i * MIN) for i, o in enumerate(obs)]
    entries += [AuditEntry(tenant=tenant, actor="Practitioner/li", role="doctor", action="search",
                           resource_type="Observation", detail=[("subject", f"Patient/{p}")], ts=at(10, 5) + i * MIN)
                for i, p in enumerate(pats[2:])]
    await add(engine, entries[:3])
    assert (await scan(engine, tenant=tenant)).raised == 0  # three patients: not more than 3
    await add(engine, entries[3:])
    report = await scan(engine, tenant=tenant)
    assert report.by_kind == {"many-patients": 1}
    [ev] = await events(engine, tenant)
    assert ev["detail"]["distinct_patients"] == 4
