"""The SQLite adapter that runs each statement in one trip to aiosqlite's thread behaves as
the DB-API promises: rows, rowcount, lastrowid, executemany, errors as the dialect's own."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from yiyun.core.db import create_engine_for
from yiyun.core.sqlite_driver import OneTripCursor


async def test_one_trip_cursor_semantics(tmp_path):
    engine = create_engine_for(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        async with engine.begin() as conn:
            raw = await conn.get_raw_connection()
            assert type(raw.dbapi_connection.cursor()) is OneTripCursor
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
            res = await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": f"x{i}"} for i in range(5)])
            assert res.rowcount == 5
            one = await conn.execute(text("INSERT INTO t (v) VALUES ('y')"))
            assert one.lastrowid == 6
            upd = await conn.execute(text("UPDATE t SET v = v || '!' WHERE id <= 3"))
            assert upd.rowcount == 3
            rows = (await conn.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
            assert [tuple(r) for r in rows[:2]] == [(1, "x0!"), (2, "x1!")] and len(rows) == 6
            assert (await conn.execute(text("SELECT v FROM t WHERE id = 99"))).first() is None
            with pytest.raises(IntegrityError):
                await conn.execute(text("INSERT INTO t (v) VALUES ('y')"))
        async with engine.connect() as conn:
            with pytest.raises(OperationalError):
                await conn.execute(text("SELECT nope FROM t"))
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 6
            streamed = await conn.stream(text("SELECT id FROM t ORDER BY id"))
            assert [r[0] async for r in streamed] == [1, 2, 3, 4, 5, 6]
    finally:
        await engine.dispose()
