"""Keeps PostgreSQL's planner statistics of the store up to date while it grows fast.

Searches join the resource table with the index tables; PostgreSQL plans those joins from
statistics that autovacuum refreshes once a table has changed by 10 % (plus 50 rows), and
looks at most once a minute. A young store that grows fast (a new hospital's first hour of
bookings) is meanwhile planned as if its tables were empty: the plan for "the active
Appointments of this Slot" becomes a nested loop over every Appointment, and each booking
takes hundreds of milliseconds instead of one.

So the repository counts the resources it writes, and once a process has written more than
`MIN_WRITES` plus `GROWTH` of the store's size since the last look, it runs ANALYZE on the
store's tables in the background (ANALYZE samples a bounded number of rows and does not
block reads or writes). A large, settled store crosses that line rarely; autovacuum still
does the rest. SQLite plans these searches well without fresh statistics: nothing is done
there (its statistics are refreshed after imports, `yiyun db analyze`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.logging import get_logger

log = get_logger("yiyun.fhir.statistics")

MIN_WRITES = 500
GROWTH = 0.2  # of the rows in the resource table at the last ANALYZE
MIN_INTERVAL_S = 10.0


@dataclass
class _Watch:
    written: int = 0
    rows: float = 0.0  # fhir_resource's size at the last ANALYZE (0 until one ran here)
    last: float = 0.0
    task: asyncio.Task | None = None


_watches: "weakref.WeakKeyDictionary[AsyncEngine, _Watch]" = weakref.WeakKeyDictionary()


def note_writes(engine: AsyncEngine, count: int) -> None:
    """Count `count` resources written; start a background ANALYZE when the store grew enough."""
    if engine.dialect.name != "postgresql" or count <= 0 or not _enabled():
        return
    watch = _watches.setdefault(engine, _Watch())
    watch.written += count
    if watch.written < MIN_WRITES + GROWTH * watch.rows:
        return
    if (watch.task is not None and not watch.task.done()) or time.monotonic() - watch.last < MIN_INTERVAL_S:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    watch.written, watch.last = 0, time.monotonic()
    watch.task = loop.create_task(_analyze(engine, watch))


def _enabled() -> bool:
    from yiyun.core.settings import get_settings

    return get_settings().store_auto_analyze


async def _analyze(engine: AsyncEngine, watch: _Watch) -> None:
    from yiyun.fhir.search.tables import INDEX_TABLES
    from yiyun.fhir.tables import resource

    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in (resource, *INDEX_TABLES):
                await conn.execute(text(f'ANALYZE "{table.name}"'))
            rows = (await conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = :t"),
                                       {"t": resource.name})).scalar()
        watch.rows = max(float(rows or 0), 0.0)
        log.info("store_statistics_refreshed", resources=int(watch.rows))
    except Exception:  # statistics are an optimisation: never let them fail a request
        log.exception("store_statistics_failed")


async def wait_idle(engine: AsyncEngine) -> None:
    """Wait for a running ANALYZE of this engine (tests, orderly shutdown)."""
    watch = _watches.get(engine)
    if watch is not None and watch.task is not None:
        await asyncio.shield(watch.task)
