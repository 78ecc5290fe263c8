"""SQLite through aiosqlite, one trip to the database thread per statement.

aiosqlite runs each sqlite3 call on the connection's own thread and hands the result back
to the event loop. SQLAlchemy's adapter makes four such trips per statement (open a
cursor, execute, fetch the rows, close the cursor); each costs a thread wake-up and an
event-loop wake-up, about as much as a small indexed query itself. This cursor does the
four on the database thread in one call, so a statement costs one trip: a booking's twenty
statements save several milliseconds, and every read and search gains the same way.

The standard dialect is kept (same URL, `sqlite+aiosqlite`); only the DB-API adapter it is
given differs (`create_async_engine(..., module=dbapi())`). Server-side cursors (streamed
results) keep the stock implementation. If aiosqlite no longer offers the call this relies
on (`Connection._execute`), `dbapi()` returns None and the stock adapter is used.
"""

from __future__ import annotations

import collections
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_


def _run_statement(conn, operation: Any, parameters: Any, many: bool):
    """On the database thread: execute, fetch everything, close; one round trip."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else ()
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose results are complete once `execute` returns."""

    __slots__ = ("_description", "_rowcount", "_lastrowid")

    def __init__(self, adapt_connection) -> None:  # no driver cursor: nothing to open
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description = None
        self._rowcount = -1
        self._lastrowid = None

    @property
    def description(self):
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self):
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        return  # nothing is open on the database thread

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        driver = self._connection
        async with self._adapt_connection._execute_mutex:
            result = await driver._execute(_run_statement, driver._conn, operation, parameters, many)  # noqa: SLF001
        self._description, self._rowcount, self._lastrowid, rows = result
        self._rows = collections.deque(rows)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        stock = super().connect(*arg, **kw)
        return OneTripConnection(self, stock._connection)


def dbapi() -> OneTripDbapi | None:
    """The adapter to give the aiosqlite dialect, or None to keep the stock one."""
    import sqlite3

    import aiosqlite

    if not callable(getattr(aiosqlite.Connection, "_execute", None)):
        return None
    return OneTripDbapi(aiosqlite, sqlite3)
