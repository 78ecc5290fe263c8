"""PostgreSQL: a store that grows fast has its planner statistics refreshed by the
repository in the background, without waiting for autovacuum."""

from __future__ import annotations

from sqlalchemy import text

from yiyun.core.db import unit_of_work
from yiyun.core.settings import get_settings
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.fhir.search import statistics


async def _analysed_rows(engine) -> float:
    async with unit_of_work(engine, write=False) as conn:
        return float((await conn.execute(text(
            "SELECT reltuples FROM pg_class WHERE relname = 'fhir_resource'"))).scalar() or 0)


async def _book_many(engine, tenant: str, n: int, per_transaction: int = 20) -> None:
    for start in range(0, n, per_transaction):
        async with unit_of_work(engine) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=tenant), validate=False)
            for i in range(start, start + per_transaction):
                await repo.create({"resourceType": "Appointment", "status": "booked",
                                   "slot": [{"reference": f"Slot/s{i}"}],
                                   "participant": [{"actor": {"reference": f"Patient/p{i}"}, "status": "accepted"}]})


async def test_fast_growth_refreshes_statistics(engine, tenant, monkeypatch):
    monkeypatch.setenv("YIYUN_STORE_AUTO_ANALYZE", "true")
    get_settings.cache_clear()
    monkeypatch.setattr(statistics, "MIN_WRITES", 100)
    monkeypatch.setattr(statistics, "MIN_INTERVAL_S", 0.0)
    if engine.dialect.name == "sqlite":  # SQLite plans these searches well without: left alone
        await _book_many(engine, tenant, 120)
        assert engine not in statistics._watches
        return
    async with unit_of_work(engine) as conn:
        await conn.execute(text("ANALYZE fhir_resource"))
    before = await _analysed_rows(engine)
    await _book_many(engine, tenant, 120)  # the line is crossed in the 5th transaction
    await statistics.wait_idle(engine)
    assert await _analysed_rows(engine) >= before + 80  # what the first four had committed
    # a store that did not grow past the line is left to autovacuum
    watch = statistics._watches[engine]
    assert 0 < watch.written < statistics.MIN_WRITES + statistics.GROWTH * watch.rows


async def test_off_by_setting(engine, tenant, monkeypatch):
    monkeypatch.setenv("YIYUN_STORE_AUTO_ANALYZE", "false")
    get_settings.cache_clear()
    monkeypatch.setattr(statistics, "MIN_WRITES", 1)
    statistics.note_writes(engine, 10)
    assert engine not in statistics._watches or statistics._watches[engine].task is None
