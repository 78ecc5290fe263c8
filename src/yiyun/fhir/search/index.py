"""Write-time index extraction (https://hl7.org/fhir/R4/search.html): each current resource
version gets typed index rows; search is then indexed SQL over those rows."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

import orjson

from yiyun.fhir.model import StoredResource
from yiyun.fhir.protection import index_view
from yiyun.fhir.search import custom
from yiyun.fhir.search.registry import Registry, builtin_registry
from yiyun.fhir.search.tables import INDEX_TABLES, TABLE_BY_TYPE
from yiyun.fhir.tables import resource as resource_table

_TABLE_KEYS = list(TABLE_BY_TYPE)
_COLUMNS = {
    key: [c.name for c in table.columns if c.name not in ("rid", "tenant", "res_type")]
    for key, table in TABLE_BY_TYPE.items()
}


def extract(res: dict, registry: Registry | None = None) -> dict[str, list[tuple]]:
    """Index rows of one resource: {table key: [(param, *typed columns), ...]}, deduplicated."""
    registry = registry or builtin_registry()
    sink: dict[str, list] = {k: [] for k in _TABLE_KEYS}
    rt = res.get("resourceType")
    if type(rt) is not str:
        return sink
    for cp in registry.compiled(rt):
        cp.extract(res, sink)
    for k, rows in sink.items():
        if len(rows) > 1:
            sink[k] = list(dict.fromkeys(rows))
    return sink


async def write_index(
    conn: AsyncConnection, items: list[tuple[int, str, dict]], *, replace: bool,
    previous: dict[int, StoredResource] | None = None,
) -> None:
    """Index the current version of each (rid, tenant, resource); one executemany per table.

    `replace` drops the resources' existing rows first. `previous` ({rid: the stored version
    being replaced}) narrows that to the parameters whose rows
    changed: a Slot going from free to busy rewrites its `status` row, not its eight tables.
    Only for tenants without custom SearchParameters, whose rows were all built by the same
    built-in registry (a custom parameter added since a row was written is picked up by a
    full rewrite; `reindex` always rewrites everything)."""
    if not items:
        return
    registries: dict[str, Registry] = {}
    for _, tenant, _ in items:
        if tenant not in registries:
            registries[tenant] = await custom.registry_for(conn, tenant)
    builtin = builtin_registry()
    previous = previous or {}
    whole: list[int] = []
    changed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    batches: dict[str, list[tuple]] = defaultdict(list)
    for rid, tenant, res in items:
        reg = registries[tenant]
        head = (rid, tenant, res.get("resourceType"))
        rows_now = extract(res, reg)
        replaced = previous.get(rid) if replace and reg is builtin else None
        if replaced is None:
            whole.append(rid)
            for key, rows in rows_now.items():
                batches[key].extend(head + row for row in rows)
            continue
        rows_before = extract(index_view(replaced.resource), reg)
        for key, rows in rows_now.items():
            old, new = set(rows_before[key]), set(rows)
            if old == new:
                continue
            params = {row[0] for row in old ^ new}
            changed[key].extend((rid, p) for p in sorted(params))
            batches[key].extend(head + row for row in rows if row[0] in params)
    if replace:
        await delete_index(conn, whole)
        for key, pairs in changed.items():
            table = TABLE_BY_TYPE[key]
            for i in range(0, len(pairs), 500):
                await conn.execute(delete(table).where(tuple_(table.c.rid, table.c.param).in_(pairs[i:i + 500])))
    for key, rows in batches.items():
        if rows:
            # plain DB-API executemany: the rows are already typed tuples, and building a dict
            # per row for SQLAlchemy's insert() costs more than extracting them
            await conn.exec_driver_sql(_insert_sql(conn.dialect.paramstyle, key), rows)


_SQL_CACHE: dict[tuple[str, str], str] = {}


def _insert_sql(paramstyle: str, key: str) -> str:
    sql = _SQL_CACHE.get((paramstyle, key))
    if sql is None:
        cols = ["rid", "tenant", "res_type", *_COLUMNS[key]]
        if paramstyle == "qmark":
            marks = ", ".join("?" for _ in cols)
        elif paramstyle == "numeric_dollar":
            marks = ", ".join(f"${i + 1}" for i in range(len(cols)))
        elif paramstyle == "format":
            marks = ", ".join("%s" for _ in cols)
        elif paramstyle == "pyformat":
            marks = ", ".join(f"%({c})s" for c in cols)  # pragma: no cover - not used by our drivers
        else:
            raise RuntimeError(f"unsupported DB-API paramstyle {paramstyle}")
        sql = f'INSERT INTO {TABLE_BY_TYPE[key].name} ({", ".join(cols)}) VALUES ({marks})'
        _SQL_CACHE[(paramstyle, key)] = sql
    return sql


async def delete_index(conn: AsyncConnection, rids: list[int]) -> None:
    """Drop all index rows of these resources (deleted, or about to be re-indexed)."""
    if not rids:
        return
    for i in range(0, len(rids), 500):
        chunk = list(rids[i : i + 500])
        for table in INDEX_TABLES:
            await conn.execute(delete(table).where(table.c.rid.in_(chunk)))


async def reindex(conn: AsyncConnection, tenant: str | None = None, batch: int = 500) -> int:
    """Recompute index rows of every live resource (of one tenant, or all); returns the count.

    Needed after custom SearchParameters change: their expressions apply to new writes at once,
    to existing resources only after this."""
    custom.invalidate(tenant)
    r = resource_table
    last, count = 0, 0
    while True:
        q = (
            select(r.c.rid, r.c.tenant, r.c.content)
            .where(r.c.deleted.is_(False), r.c.rid > last)
            .order_by(r.c.rid)
            .limit(batch)
        )
        if tenant is not None:
            q = q.where(r.c.tenant == tenant)
        rows = (await conn.execute(q)).all()
        if not rows:
            await analyze(conn)
            return count
        # resources with protected values are indexed by blind index, never by their mask
        items = [(row.rid, row.tenant, index_view(orjson.loads(row.content))) for row in rows]
        await write_index(conn, items, replace=True)
        count += len(items)
        last = rows[-1].rid


async def analyze(conn: AsyncConnection) -> None:
    """Refresh planner statistics of the store and index tables.

    PostgreSQL plans the nested IN-subqueries of chains and _has from these statistics; right
    after a bulk load (before autovacuum has run) its estimates of one row per table lead to
    nested-loop plans thousands of times slower. Call after large imports and reindexing."""
    if conn.dialect.name != "postgresql":
        return
    for table in [resource_table, *INDEX_TABLES]:
        await conn.execute(text(f'ANALYZE "{table.name}"'))
