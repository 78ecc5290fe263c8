"""The audit chain on SQLite and PostgreSQL: appends, tampering found by verify, concurrency,
the FHIR AuditEvent view, queries and the `yiyun audit verify` command."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import text

from yiyun.core.db import unit_of_work
from yiyun.fhir.model import RequestContext
from yiyun.fhir.validation import validate_resource
from yiyun.identity.audit import (
    GENESIS,
    AuditChainError,
    AuditEntry,
    append,
    append_committed,
    as_audit_event,
    entry_from_context,
    heads,
    query,
    verify,
)
from yiyun.identity.protection.keyring import parse_keyring, reset_keyrings

KEY_A = "a1:" + base64.b64encode(b"A" * 32).decode()
KEY_B = "b2:" + base64.b64encode(b"B" * 32).decode()


@pytest.fixture(autouse=True)
def _audit_key(monkeypatch):
    monkeypatch.setenv("YIYUN_AUDIT_KEYS", KEY_A)
    reset_keyrings()
    yield
    reset_keyrings()


def _entry(tenant: str, i: int, **kw) -> AuditEntry:
    base = dict(tenant=tenant, actor="Practitioner/li", role="doctor", action="read", resource_type="Patient",
                resource_id=f"p{i}", patient=f"Patient/p{i}", purpose="TREAT", client_address="10.0.0.7")
    base.update(kw)
    return AuditEntry(**base)


async def _fill(engine, tenant: str, n: int, batch: int = 1) -> None:
    for start in range(0, n, batch):
        async with unit_of_work(engine) as conn:
            await append(conn, [_entry(tenant, i) for i in range(start, min(start + batch, n))])


async def _verify(engine, tenant, **kw):
    async with unit_of_work(engine, write=False) as conn:
        return await verify(conn, tenant=tenant, **kw)


async def _sql(engine, sql: str, **params) -> None:
    async with unit_of_work(engine) as conn:
        await conn.execute(text(sql), params)


def _problems(report):
    return [(p.seq, p.kind) for p in report.problems]


async def test_append_and_verify(engine, tenant):
    await _fill(engine, tenant, 7, batch=3)
    await _fill(engine, tenant, 3)
    report = await _verify(engine, tenant)
    assert report.ok and report.checked == 10 and report.chains == 1, report.as_dict()
    async with unit_of_work(engine, write=False) as conn:
        rows = (await conn.execute(text("SELECT seq, prev_hash, hash FROM audit_log WHERE tenant=:t ORDER BY seq"),
                                   {"t": tenant})).all()
        chain_heads = dict((t, (s, h)) for t, s, h in await heads(conn))
    assert [r.seq for r in rows] == list(range(1, 11))
    assert rows[0].prev_hash == GENESIS
    assert all(rows[i].prev_hash == rows[i - 1].hash for i in range(1, 10))
    assert chain_heads[tenant] == (10, rows[-1].hash)


async def test_changed_entry_is_found_at_its_seq(engine, tenant):
    await _fill(engine, tenant, 10, batch=5)
    await _sql(engine, "UPDATE audit_log SET outcome='denied' WHERE tenant=:t AND seq=4", t=tenant)
    report = await _verify(engine, tenant)
    assert _problems(report) == [(4, "changed")]
    assert report.first.seq == 4


async def test_removed_entry_is_found_at_its_seq(engine, tenant):
    await _fill(engine, tenant, 10, batch=5)
    await _sql(engine, "DELETE FROM audit_log WHERE tenant=:t AND seq=6", t=tenant)
    report = await _verify(engine, tenant)
    assert _problems(report) == [(6, "removed")]


async def test_swapped_entries_are_found_as_reordered(engine, tenant):
    await _fill(engine, tenant, 10, batch=10)
    await _sql(engine, "UPDATE audit_log SET seq=-1 WHERE tenant=:t AND seq=3", t=tenant)
    await _sql(engine, "UPDATE audit_log SET seq=3 WHERE tenant=:t AND seq=7", t=tenant)
    await _sql(engine, "UPDATE audit_log SET seq=7 WHERE tenant=:t AND seq=-1", t=tenant)
    report = await _verify(engine, tenant)
    assert _problems(report) == [(3, "reordered"), (7, "reordered")]
    assert "written as #7" in report.problems[0].message


async def test_adjacent_swap_and_several_problems_are_all_reported(engine, tenant):
    await _fill(engine, tenant, 12, batch=12)
    await _sql(engine, "UPDATE audit_log SET seq=-1 WHERE tenant=:t AND seq=5", t=tenant)
    await _sql(engine, "UPDATE audit_log SET seq=5 WHERE tenant=:t AND seq=6", t=tenant)
    await _sql(engine, "UPDATE audit_log SET seq=6 WHERE tenant=:t AND seq=-1", t=tenant)
    await _sql(engine, "UPDATE audit_log SET actor='Practitioner/wang' WHERE tenant=:t AND seq=2", t=tenant)
    await _sql(engine, "DELETE FROM audit_log WHERE tenant=:t AND seq IN (9, 10)", t=tenant)
    report = await _verify(engine, tenant)
    assert _problems(report) == [(2, "changed"), (5, "reordered"), (6, "reordered"), (9, "removed")]
    assert "#9..#10" in report.problems[-1].message


async def test_truncated_head_and_anchors(engine, tenant):
    await _fill(engine, tenant, 6, batch=6)
    async with unit_of_work(engine, write=False) as conn:
        anchor = [h for h in await heads(conn) if h[0] == tenant]
    await _sql(engine, "DELETE FROM audit_log WHERE tenant=:t AND seq >= 5", t=tenant)
    assert _problems(await _verify(engine, tenant)) == [(5, "truncated")]
    # Rewriting the head as well hides the truncation from the chain alone …
    await _sql(engine, "UPDATE audit_chain_head SET seq=4, hash=(SELECT hash FROM audit_log WHERE tenant=:t AND seq=4) "
                       "WHERE tenant=:t", t=tenant)
    assert (await _verify(engine, tenant)).ok
    # … but not from a head recorded outside the database.
    assert _problems(await _verify(engine, tenant, anchors=anchor)) == [(6, "anchor")]


async def test_a_chain_without_its_head_is_reported_and_not_restarted(engine, tenant):
    await _fill(engine, tenant, 3, batch=3)
    await _sql(engine, "DELETE FROM audit_chain_head WHERE tenant=:t", t=tenant)
    assert _problems(await _verify(engine, tenant)) == [(3, "head-missing")]
    with pytest.raises(AuditChainError):
        await _fill(engine, tenant, 1)


async def test_rewritten_entry_with_a_guessed_key_is_found(engine, tenant):
    """Someone with write access but without the key cannot forge a consistent chain."""
    from yiyun.identity.audit import audit_log, entry_hash

    await _fill(engine, tenant, 5, batch=5)
    forged_ring = parse_keyring("a1:" + base64.b64encode(b"X" * 32).decode())
    async with unit_of_work(engine) as conn:
        chain = audit_log.select().where(audit_log.c.tenant == tenant).order_by(audit_log.c.seq)
        rows = (await conn.execute(chain)).mappings().all()
        prev = rows[1]["hash"]
        for r in rows[2:]:
            row = dict(r, prev_hash=prev, outcome="denied" if r["seq"] == 3 else r["outcome"])
            row["hash"] = prev = entry_hash(row, forged_ring.derive("a1", b"yiyun/audit-chain/v1"))
            await conn.execute(audit_log.update().where((audit_log.c.tenant == tenant) & (audit_log.c.seq == r["seq"]))
                               .values(outcome=row["outcome"], prev_hash=row["prev_hash"], hash=row["hash"]))
        await conn.execute(text("UPDATE audit_chain_head SET hash=:h WHERE tenant=:t"), {"h": prev, "t": tenant})
    report = await _verify(engine, tenant)
    assert [p for p in _problems(report)][0] == (3, "changed")
    assert {k for _, k in _problems(report)} == {"changed"}


async def test_appends_commit_and_roll_back_with_the_callers_work(engine, tenant):
    with pytest.raises(RuntimeError):
        async with unit_of_work(engine) as conn:
            await append(conn, [_entry(tenant, 1)])
            raise RuntimeError("the audited write failed")
    records = await append_committed(engine, [_entry(tenant, 2, outcome="error")])
    assert [r.seq for r in records] == [1]
    assert (await _verify(engine, tenant)).ok


async def test_appends_need_a_real_write_transaction(engine, tenant):
    async with unit_of_work(engine, write=False) as conn:
        with pytest.raises(AuditChainError):
            await append(conn, [_entry(tenant, 1)])


async def test_concurrent_tasks_never_fork_the_chain(engine, tenant):
    async def worker(w: int):
        for i in range(15):
            async with unit_of_work(engine) as conn:
                await append(conn, [_entry(tenant, w * 100 + i, actor=f"Practitioner/w{w}")])

    await asyncio.gather(*(worker(w) for w in range(6)))
    report = await _verify(engine, tenant)
    assert report.ok and report.checked == 90, report.as_dict()


async def test_a_second_connection_waits_for_the_first_to_commit(engine, tenant):
    async with unit_of_work(engine) as first:
        await append(first, [_entry(tenant, 1)])

        async def second():
            async with unit_of_work(engine) as conn:
                return await append(conn, [_entry(tenant, 2)])

        task = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not task.done()  # the chain head is held until the first transaction ends
        await append(first, [_entry(tenant, 3)])
    records = await task
    assert [r.seq for r in records] == [3]
    assert (await _verify(engine, tenant)).ok


_PROCESS = textwrap.dedent("""
    import asyncio, sys
    from yiyun.core.db import get_engine, unit_of_work, dispose_engines
    from yiyun.identity.audit import AuditEntry, append

    async def main(tenant, who, n):
        engine = get_engine()
        for i in range(n):
            async with unit_of_work(engine) as conn:
                await append(conn, [AuditEntry(tenant=tenant, actor=who, action="read", resource_type="Patient",
                                               resource_id=str(i))])
        await dispose_engines()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


async def test_two_processes_appending_at_once_never_fork_the_chain(engine, tenant, db_url):
    env = {**os.environ, "YIYUN_DATABASE_URL": db_url, "YIYUN_AUDIT_KEYS": KEY_A}
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", _PROCESS, tenant, f"Practitioner/p{k}", "40", env=env,
                                             stderr=subprocess.PIPE)
        for k in range(2)
    ]
    for p in procs:
        _, err = await p.communicate()
        assert p.returncode == 0, err.decode()[-2000:]
    report = await _verify(engine, tenant)
    assert report.ok and report.checked == 80, report.as_dict()
    async with unit_of_work(engine, write=False) as conn:
        actors = {r.actor for r in await query(conn, tenant=tenant, limit=1000)}
    assert actors == {"Practitioner/p0", "Practitioner/p1"}


async def test_unsafe_values_are_stored_as_hashed(engine, tenant):
    entry = _entry(tenant, 1, actor="x" * 400 + "\x00", client_address="2001:db8::1",
                   detail={"query": "name=张三", "big": "y" * 10_000})
    entry2 = _entry(tenant, 2, action="search", resource_id=None, detail=[("name", "张三"), ("birthdate", "1950")])
    async with unit_of_work(engine) as conn:
        records = await append(conn, [entry, entry2])
    assert len(records[0].actor) == 256 and json.loads(records[0].detail)["truncated"] is True
    assert json.loads(records[1].detail) == {"query": "name=%E5%BC%A0%E4%B8%89&birthdate=1950"}
    assert (await _verify(engine, tenant)).ok


async def test_audit_key_rotation_keeps_old_entries_verifiable(engine, tenant, monkeypatch):
    await _fill(engine, tenant, 3, batch=3)
    monkeypatch.setenv("YIYUN_AUDIT_KEYS", f"{KEY_B},{KEY_A}")
    reset_keyrings()
    await _fill(engine, tenant, 2, batch=2)
    async with unit_of_work(engine, write=False) as conn:
        key_ids = (await conn.execute(text("SELECT key_id FROM audit_log WHERE tenant=:t ORDER BY seq"),
                                      {"t": tenant})).scalars().all()
    assert key_ids == ["a1", "a1", "a1", "b2", "b2"]
    assert (await _verify(engine, tenant)).ok
    report = await _verify(engine, tenant, keyring=parse_keyring(KEY_B))
    assert {(p.seq, p.kind) for p in report.problems} >= {(1, "unknown-key"), (3, "unknown-key")}


async def test_query_filters_and_pages(engine, tenant):
    entries = [
        _entry(tenant, 1, ts=1_000),
        _entry(tenant, 2, actor="Practitioner/wang", action="update", resource_type="Observation", resource_id="o1",
               patient="Patient/p1", ts=2_000),
        _entry(tenant, 3, action="search", resource_id=None, patient=None, ts=3_000),
        _entry(tenant, 4, actor="u-zhang", action="login-failed", resource_type=None, resource_id=None, patient=None,
               outcome="denied", ts=4_000),
        _entry(tenant, 5, resource_id="p1", patient="Patient/p1", ts=5_000),
    ]
    async with unit_of_work(engine) as conn:
        await append(conn, entries)
    async with unit_of_work(engine, write=False) as conn:
        seqs = lambda rows: [r.seq for r in rows]  # noqa: E731
        assert seqs(await query(conn, tenant=tenant)) == [5, 4, 3, 2, 1]
        assert seqs(await query(conn, tenant=tenant, patient="Patient/p1")) == [5, 2, 1]
        assert seqs(await query(conn, tenant=tenant, resource="Patient/p1")) == [5, 1]
        assert seqs(await query(conn, tenant=tenant, resource="Observation")) == [2]
        assert seqs(await query(conn, tenant=tenant, actor="Practitioner/wang")) == [2]
        assert seqs(await query(conn, tenant=tenant, action="login-failed", outcome="denied")) == [4]
        assert seqs(await query(conn, tenant=tenant, since_us=2_000, until_us=4_000)) == [3, 2]
        assert seqs(await query(conn, tenant=tenant, limit=2)) == [5, 4]
        assert seqs(await query(conn, tenant=tenant, limit=2, before_seq=4)) == [3, 2]
        assert await query(conn, tenant=tenant + "-other") == []


def _no_errors(resource):
    return [(i.diagnostics, i.expression) for i in validate_resource(resource) if i.severity == "error"]


async def test_audit_events_are_valid_fhir(engine, tenant):
    ctx = RequestContext(tenant=tenant, subject="Practitioner/li", roles=("doctor", "attending"), purpose="TREAT",
                         client_address="192.168.1.20")
    entries = [
        entry_from_context(ctx, "read", "Patient", "p1", "ok", patient="Patient/p1"),
        entry_from_context(ctx, "search", "Observation", None, "ok", [("patient", "p1"), ("code", "8867-4")]),
        entry_from_context(ctx, "create", "Observation", "o1", "ok", patient="Patient/p1"),
        entry_from_context(ctx, "delete", "Condition", "c1", "not-found"),
        AuditEntry(tenant=tenant, actor="zhang.san", action="login-failed", outcome="denied", client_address="2001:db8::5",
                   detail={"reason": "bad password", "attempt": 3}),
        AuditEntry(tenant=tenant, actor="Practitioner/li", action="break-glass", purpose="ETREAT", resource_type="Patient",
                   resource_id="p9", patient="Patient/p9", detail={"reason": "急诊抢救"}),
        AuditEntry(tenant=tenant, actor="Practitioner/li", action="export", resource_type="Group", resource_id="g1",
                   purpose="HRESCH", client_address="gateway.internal"),
        AuditEntry(tenant=tenant, actor="Patient/p1", action="consent", resource_type="Consent", resource_id="c7",
                   patient="Patient/p1", purpose="PATADMIN"),
        AuditEntry(tenant=tenant, actor="system", action="token-issued", outcome="error"),
        AuditEntry(tenant=tenant, actor="system", action="something-new"),
    ]
    async with unit_of_work(engine) as conn:
        records = await append(conn, entries)
    events = [as_audit_event(r) for r in records]
    for event in events:
        assert _no_errors(event) == [], event
    read, search, create, delete, failed, glass, export, consent, token, other = events
    assert read["type"]["code"] == "rest" and read["subtype"][0] == {
        "system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}
    assert (read["action"], create["action"], delete["action"], search["action"]) == ("R", "C", "D", "E")
    assert (read["outcome"], delete["outcome"], failed["outcome"], token["outcome"]) == ("0", "4", "4", "8")
    assert read["agent"][0]["who"] == {"reference": "Practitioner/li"}
    assert read["agent"][0]["network"] == {"address": "192.168.1.20", "type": "2"}
    assert [r["text"] for r in read["agent"][0]["role"]] == ["doctor", "attending"]
    assert read["entity"][0]["what"] == {"reference": "Patient/p1"} and len(read["entity"]) == 1
    assert create["entity"][1]["what"] == {"reference": "Patient/p1"} and create["entity"][1]["role"]["code"] == "1"
    assert base64.b64decode(search["entity"][0]["query"]).decode() == "Observation?patient=p1&code=8867-4"
    assert read["purposeOfEvent"][0]["coding"][0] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                                      "code": "TREAT"}
    assert failed["type"]["code"] == "110114" and failed["subtype"][0]["code"] == "110122"
    assert failed["agent"][0]["who"]["identifier"]["value"] == "zhang.san"
    assert glass["subtype"][0]["code"] == "110127" and glass["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert export["type"]["code"] == "110106" and export["agent"][0]["network"]["type"] == "1"
    chain = {d["type"]: d["valueString"] for d in read["entity"][0]["detail"]}
    assert chain["chain-seq"] == str(records[0].seq) and chain["chain-hash"] == records[0].hash
    assert read["recorded"].endswith("Z")


def test_cli_verify_reports_ok_and_each_problem(db_url, tenant):
    from typer.testing import CliRunner

    from yiyun.core.db import dispose_engines, get_engine
    from yiyun.identity.cli import audit_app

    async def setup(tamper: bool):
        engine = get_engine()
        try:
            if tamper:
                await _sql(engine, "UPDATE audit_log SET purpose='ETREAT' WHERE tenant=:t AND seq=2", t=tenant)
                await _sql(engine, "DELETE FROM audit_log WHERE tenant=:t AND seq=4", t=tenant)
            else:
                await _fill(engine, tenant, 5, batch=5)
        finally:
            await dispose_engines()

    runner = CliRunner()
    asyncio.run(setup(False))
    ok = runner.invoke(audit_app, ["verify", "--tenant", tenant])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == "OK: 5 entries in 1 chain(s) verified"
    asyncio.run(setup(True))
    bad = runner.invoke(audit_app, ["verify", "--tenant", tenant])
    assert bad.exit_code == 1
    assert f"PROBLEM tenant={tenant} seq=2 changed" in bad.output
    assert f"PROBLEM tenant={tenant} seq=4 removed" in bad.output
    as_json = runner.invoke(audit_app, ["verify", "--tenant", tenant, "--json"])
    assert as_json.exit_code == 1
    assert [(p["seq"], p["kind"]) for p in json.loads(as_json.output)["problems"]] == [(2, "changed"), (4, "removed")]


def test_cli_heads_anchor_a_later_verify(db_url, tenant, tmp_path):
    from typer.testing import CliRunner

    from yiyun.core.db import dispose_engines, get_engine
    from yiyun.identity.cli import audit_app

    async def run(coro_fn):
        try:
            return await coro_fn(get_engine())
        finally:
            await dispose_engines()

    asyncio.run(run(lambda e: _fill(e, tenant, 4, batch=4)))
    runner = CliRunner()
    heads_out = runner.invoke(audit_app, ["heads", "--json"])
    assert heads_out.exit_code == 0
    mine = [line for line in heads_out.output.splitlines() if json.loads(line)["tenant"] == tenant]
    assert len(mine) == 1 and json.loads(mine[0])["seq"] == 4
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text(mine[0] + "\n")
    assert runner.invoke(audit_app, ["verify", "--tenant", tenant, "--anchors", str(anchors)]).exit_code == 0
    asyncio.run(run(lambda e: _sql(e, "DELETE FROM audit_log WHERE tenant=:t AND seq=4", t=tenant)))
    asyncio.run(run(lambda e: _sql(
        e, "UPDATE audit_chain_head SET seq=3, hash=(SELECT hash FROM audit_log WHERE tenant=:t AND seq=3) WHERE tenant=:t",
        t=tenant)))
    assert runner.invoke(audit_app, ["verify", "--tenant", tenant]).exit_code == 0
    anchored = runner.invoke(audit_app, ["verify", "--tenant", tenant, "--anchors", str(anchors)])
    assert anchored.exit_code == 1 and "seq=4 anchor" in anchored.output


def test_migration_creates_and_drops_the_audit_tables(tmp_path):
    import sqlite3

    from yiyun.core import migrations

    path = tmp_path / "m.db"
    url = f"sqlite:///{path}"

    def tables():
        with sqlite3.connect(path) as c:
            return {r[0] for r in c.execute("select name from sqlite_master where name like 'audit%' or name like 'ix_audit%'")}

    migrations.upgrade("0003_audit", url)
    assert tables() == {"audit_log", "audit_chain_head", "ix_audit_log_resource", "ix_audit_log_actor", "ix_audit_log_patient"}
    migrations.downgrade("0002_knowledge", url)
    assert tables() == set()
