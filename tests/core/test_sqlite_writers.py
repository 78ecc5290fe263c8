"""SQLite writers of one process take turns in arrival order before BEGIN IMMEDIATE, so a
burst of writers neither fails nor waits on SQLite's busy-retry timer; a writer that cannot
get its turn ends with SQLite's own "database is locked" error, never a hang."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from yiyun.core import db
from yiyun.core.db import create_engine_for, unit_of_work


async def test_writers_take_turns_in_arrival_order(tmp_path):
    engine = create_engine_for(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        async with unit_of_work(engine) as conn:
            await conn.execute(text("CREATE TABLE log (n INTEGER, step TEXT)"))

        async def writer(n: int) -> None:
            async with unit_of_work(engine) as conn:
                await conn.execute(text("INSERT INTO log VALUES (:n, 'begin')"), {"n": n})
                await asyncio.sleep(0.002)  # other writers are ready to go meanwhile
                await conn.execute(text("INSERT INTO log VALUES (:n, 'end')"), {"n": n})

        await asyncio.gather(*[writer(n) for n in range(40)])
        async with unit_of_work(engine, write=False) as conn:
            rows = [(r.n, r.step) for r in await conn.execute(text("SELECT n, step FROM log ORDER BY rowid"))]
        # whole transactions, one after another, in the order they asked
        assert rows == [(n, step) for n in range(40) for step in ("begin", "end")]
    finally:
        await engine.dispose()


async def test_a_writer_that_never_gets_its_turn_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "WRITER_WAIT_SECONDS", 0.2)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        async with unit_of_work(engine) as outer:
            await outer.execute(text("CREATE TABLE t (x INTEGER)"))
            with pytest.raises(OperationalError, match="locked"):
                async with unit_of_work(engine):  # a second writer inside the first: cannot proceed
                    pass
        async with unit_of_work(engine) as conn:  # the queue is free again
            await conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
