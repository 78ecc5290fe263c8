"""Database engines: SQLite (WAL) by default, PostgreSQL when configured.

One engine per process. Units of work are opened by callers (`unit_of_work`), commit
once at the end and roll back on any error, so a request never leaves half a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from yiyun.core.logging import get_logger
from yiyun.core.settings import Settings, async_url, get_settings

log = get_logger("yiyun.db")

_engines: dict[str, AsyncEngine] = {}
# Work to do once a unit of work has committed, by the id of its connection (see `after_commit`).
_after_commit: dict[int, list[Callable[[], Awaitable[None] | None]]] = {}


def is_sqlite(url_or_engine) -> bool:
    url = url_or_engine.url if hasattr(url_or_engine, "url") else make_url(str(url_or_engine))
    return url.get_backend_name() == "sqlite"


def _prepare_sqlite(engine: AsyncEngine) -> None:
    # The driver's own transaction handling is switched off so that we can issue
    # BEGIN IMMEDIATE for writers: two deferred writers upgrading their locks at the
    # same time would otherwise fail with SQLITE_BUSY instead of queueing.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine_for(url: str) -> AsyncEngine:
    url = async_url(url)
    if is_sqlite(url):
        db_path = make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        from yiyun.core.sqlite_driver import dbapi

        adapter = dbapi()
        options = {"module": adapter} if adapter is not None else {}
        engine = create_async_engine(url, pool_size=8, max_overflow=8, pool_timeout=60, **options)
        _prepare_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip per request; broken connections are recycled instead.
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800)


def get_engine(settings: Settings | None = None) -> AsyncEngine:
    settings = settings or get_settings()
    url = settings.resolved_database_url
    if url not in _engines:
        _engines[url] = create_engine_for(url)
    return _engines[url]


async def dispose_engines() -> None:
    for engine in list(_engines.values()):
        await engine.dispose()
    _engines.clear()


# SQLite has one writer at a time. Writers of this process queue here, in arrival order,
# before they BEGIN IMMEDIATE: a writer blocked inside SQLite instead retries on its busy
# handler's timer (sleeps of up to 100 ms), so after a commit the database often stands idle
# while the next writer sleeps, and a burst of bookings turns into seconds of waiting.
# Writers of other processes (a worker, the CLI) still meet through SQLite's busy timeout.
WRITER_WAIT_SECONDS = 30.0  # as long as the busy timeout: then the same "database is locked"
_writer_queues: "weakref.WeakKeyDictionary[AsyncEngine, dict[int, asyncio.Lock]]" = weakref.WeakKeyDictionary()


def _writer_queue(engine: AsyncEngine) -> asyncio.Lock:
    per_loop = _writer_queues.setdefault(engine, {})
    loop_id = id(asyncio.get_running_loop())
    lock = per_loop.get(loop_id)
    if lock is None:
        lock = per_loop[loop_id] = asyncio.Lock()
    return lock


@contextlib.asynccontextmanager
async def _sqlite_writer_turn(engine: AsyncEngine) -> AsyncIterator[None]:
    lock = _writer_queue(engine)
    try:
        await asyncio.wait_for(lock.acquire(), WRITER_WAIT_SECONDS)
    except TimeoutError:
        from sqlalchemy.exc import OperationalError

        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked (writer queue)")) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def unit_of_work(engine: AsyncEngine, *, write: bool = True) -> AsyncIterator[AsyncConnection]:
    """One transaction: committed when the block ends, rolled back on any exception."""
    if write and is_sqlite(engine):
        async with _sqlite_writer_turn(engine), _unit_of_work(engine, write=True) as conn:
            yield conn
        return
    async with _unit_of_work(engine, write=write) as conn:
        yield conn


@contextlib.asynccontextmanager
async def _unit_of_work(engine: AsyncEngine, *, write: bool) -> AsyncIterator[AsyncConnection]:
    conn = await engine.connect()
    key = id(conn.sync_connection)
    callbacks = _after_commit[key] = []
    try:
        if is_sqlite(engine):
            conn = await conn.execution_options(sqlite_begin="IMMEDIATE" if write else "DEFERRED")
        elif not write:
            # Reads need no BEGIN/COMMIT round trips on PostgreSQL.
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        async with conn.begin():
            yield conn
    finally:
        _after_commit.pop(key, None)
        await conn.close()
    await _run_after_commit(callbacks)


def after_commit(conn: AsyncConnection, callback: Callable[[], Awaitable[None] | None]) -> bool:
    """Run `callback` (a function, or one returning an awaitable) once the unit of work of
    `conn` has committed; never when it rolls back. For what must not be announced before
    it is stored, whichever caller opened the unit of work (a write hook does not know it).
    False when `conn` was not opened by `unit_of_work`: the caller decides what to do."""
    pending = _after_commit.get(id(conn.sync_connection))
    if pending is None:
        return False
    pending.append(callback)
    return True


async def _run_after_commit(callbacks: list) -> None:
    for callback in callbacks:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:  # the data is committed; a failed notice must not turn it into an error
            log.warning("after_commit_failed", exc_info=True)


async def refresh_statistics(engine: AsyncEngine) -> None:
    """ANALYZE, so the query planner knows the tables' sizes after a bulk load.

    PostgreSQL's autovacuum gets there eventually; until it does, a freshly loaded store
    is planned as if it were empty and indexed searches can turn into nested loops.
    """
    async with engine.connect() as conn:
        if is_sqlite(engine):
            await conn.exec_driver_sql("ANALYZE")
        else:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("ANALYZE")
