"""Small helpers shared by the search tests."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import func, select

from yiyun.fhir import search as fhir_search
from yiyun.fhir.search import custom
from yiyun.fhir.tables import resource as resource_table


def q(s: str) -> list[tuple[str, str]]:
    """'a=1&b=2' -> [('a', '1'), ('b', '2')] (URL-decoded, repeated keys kept)."""
    return parse_qsl(s, keep_blank_values=True)


async def ids(conn, ctx, res_type, query: str, **kw) -> list[str]:
    res = await fhir_search.search(conn, ctx, res_type, q(query), **kw)
    return [m.res_id for m in res.matches]


async def sids(conn, ctx, res_type, query: str, **kw) -> set[str]:
    return set(await ids(conn, ctx, res_type, query, page_size_max=1000, page_size_default=1000, **kw))


_clock = [int(time.time() * 1_000_000)]


def _now_us() -> int:
    _clock[0] = max(_clock[0] + 1, int(time.time() * 1_000_000))
    return _clock[0]


async def put(conn, tenant: str, resources: list[dict], *, ts: int | None = None) -> list[int]:
    """Store resources as current versions (fhir_resource rows) and index them; returns rids.

    A resource whose (type, id) is already stored is updated in place (new version)."""
    r = resource_table
    out, new_items, upd_items = [], [], []
    next_rid = (await conn.execute(select(func.coalesce(func.max(r.c.rid), 0)))).scalar_one() + 1
    for res in resources:
        rt, rid_ = res["resourceType"], res.get("id") or uuid.uuid4().hex
        res["id"] = rid_
        stamp = ts if ts is not None else _now_us()
        row = (
            await conn.execute(
                select(r.c.rid, r.c.version_id).where(r.c.tenant == tenant, r.c.res_type == rt, r.c.res_id == rid_)
            )
        ).first()
        content = orjson.dumps(res)
        if row:
            await conn.execute(
                r.update()
                .where(r.c.rid == row.rid)
                .values(version_id=row.version_id + 1, ts=stamp, content=content, deleted=False)
            )
            upd_items.append((row.rid, tenant, res))
            out.append(row.rid)
            continue
        await conn.execute(
            r.insert().values(
                rid=next_rid, tenant=tenant, res_type=rt, res_id=rid_, version_id=1, ts=stamp, deleted=False,
                content=content,
            )
        )
        new_items.append((next_rid, tenant, res))
        out.append(next_rid)
        next_rid += 1
    if any(res.get("resourceType") == "SearchParameter" for res in resources):
        custom.invalidate(tenant)  # as the repository's SearchParameter write hook does
    await fhir_search.write_index(conn, new_items, replace=False)
    await fhir_search.write_index(conn, upd_items, replace=True)
    return out


async def remove(conn, tenant: str, rt: str, rid_: str) -> None:
    r = resource_table
    row = (
        await conn.execute(select(r.c.rid).where(r.c.tenant == tenant, r.c.res_type == rt, r.c.res_id == rid_))
    ).one()
    await conn.execute(r.update().where(r.c.rid == row.rid).values(deleted=True))
    if rt == "SearchParameter":
        custom.invalidate(tenant)
    await fhir_search.delete_index(conn, [row.rid])
