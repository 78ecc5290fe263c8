"""Custom SearchParameter resources of a tenant (https://hl7.org/fhir/R4/searchparameter.html).

Active SearchParameters stored in the tenant's FHIR store are added to the built-in registry.
The tenant registry is cached and keyed by a cheap version of the tenant's SearchParameter
rows (count and newest `ts`), so a change is seen by the next write or search in any process;
existing resources are indexed for a new parameter by `reindex`. Within one transaction the
version is asked once per tenant (a booking writes three resources and searches twice), unless
a SearchParameter is written in that transaction (`invalidate`).
"""

from __future__ import annotations

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.fhir.search.registry import Registry, SearchParamDef, builtin_registry, resource_types
from yiyun.fhir.tables import resource as resource_table

_TYPES = {"string", "token", "reference", "date", "number", "quantity", "uri", "composite"}
_cache: dict[str, tuple[tuple, Registry]] = {}
_generation = 0  # bumped by every invalidation: drops the per-transaction memos
_MEMO_KEY = "yiyun.custom_registry"


def invalidate(tenant: str | None = None) -> None:
    global _generation
    _generation += 1
    if tenant is None:
        _cache.clear()
    else:
        _cache.pop(tenant, None)


def _definition(sp: dict) -> SearchParamDef | None:
    code, typ, expr = sp.get("code"), sp.get("type"), sp.get("expression")
    base = [b for b in sp.get("base") or [] if b in resource_types() or b in ("Resource", "DomainResource")]
    if sp.get("status") != "active" or not isinstance(code, str) or typ not in _TYPES:
        return None
    if not isinstance(expr, str) or not expr.strip() or not base or code.startswith("_"):
        return None
    comps = []
    if typ == "composite":
        return None  # components name other parameters by canonical URL; not resolved for custom ones
    return SearchParamDef(
        code=code,
        type=typ,
        url=sp.get("url") or f"SearchParameter/{sp.get('id')}",
        expression=expr,
        base=base,
        target=[t for t in sp.get("target") or [] if isinstance(t, str)],
        documentation=sp.get("description") or "",
        components=comps,
        custom=True,
    )


async def registry_for(conn: AsyncConnection, tenant: str) -> Registry:
    memo = _transaction_memo(conn)
    if memo is not None and tenant in memo:
        return memo[tenant]
    reg = await _registry_now(conn, tenant)
    if memo is not None:
        memo[tenant] = reg
    return reg


def _transaction_memo(conn: AsyncConnection) -> dict[str, Registry] | None:
    """The registries already resolved in the connection's current transaction (None outside
    one). Kept on the DB-API connection's info, tagged with the transaction object, so a new
    transaction on the same pooled connection starts empty."""
    sync = conn.sync_connection
    txn = sync.get_transaction() if sync is not None else None
    if txn is None:
        return None
    held = sync.info.get(_MEMO_KEY)
    if held is None or held[0] is not txn or held[1] != _generation:
        held = (txn, _generation, {})
        sync.info[_MEMO_KEY] = held
    return held[2]


async def _registry_now(conn: AsyncConnection, tenant: str) -> Registry:
    r = resource_table
    version = tuple(
        (
            await conn.execute(
                select(func.count(), func.max(r.c.ts)).where(
                    r.c.tenant == tenant, r.c.res_type == "SearchParameter", r.c.deleted.is_(False)
                )
            )
        ).one()
    )
    if version[0] == 0:
        return builtin_registry()
    hit = _cache.get(tenant)
    if hit and hit[0] == version:
        return hit[1]
    rows = await conn.execute(
        select(r.c.content).where(r.c.tenant == tenant, r.c.res_type == "SearchParameter", r.c.deleted.is_(False))
    )
    defs = []
    for (content,) in rows:
        try:
            d = _definition(orjson.loads(content))
        except (ValueError, TypeError):
            d = None
        if d:
            defs.append(d)
    reg = Registry(defs, parent=builtin_registry()) if defs else builtin_registry()
    _cache[tenant] = (version, reg)
    return reg


async def _search_parameter_written(repo, plans) -> None:
    """A SearchParameter written in a transaction counts for that transaction's next index
    write or search (the per-transaction memo would otherwise keep the registry it began with)."""
    invalidate(repo.ctx.tenant)


def _register_hook() -> None:
    from yiyun.fhir.hooks import register_write_hook

    register_write_hook("SearchParameter", _search_parameter_written)


_register_hook()
