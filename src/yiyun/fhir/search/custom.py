"""Custom SearchParameter resources of a tenant (https://hl7.org/fhir/R4/searchparameter.html).

Active SearchParameters stored in the tenant's FHIR store are added to the built-in registry.
The tenant registry is cached and keyed by a cheap version of the tenant's SearchParameter
rows (count and newest `ts`), so a change is seen by the next write or search in any process;
existing resources are indexed for a new parameter by `reindex`.
"""

from __future__ import annotations

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.fhir.search.registry import Registry, SearchParamDef, builtin_registry, resource_types
from yiyun.fhir.tables import resource as resource_table

_TYPES = {"string", "token", "reference", "date", "number", "quantity", "uri", "composite"}
_cache: dict[str, tuple[tuple, Registry]] = {}


def invalidate(tenant: str | None = None) -> None:
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
