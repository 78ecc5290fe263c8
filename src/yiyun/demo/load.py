"""Loading the demo region into the store, once (`yiyun demo`, `make demo`)."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.db import refresh_statistics, unit_of_work
from yiyun.core.settings import get_settings
from yiyun.fhir.loader import Loader, LoadReport
from yiyun.fhir.model import RequestContext
from yiyun.fhir.tables import resource as resource_t

CHUNK = 500


async def _already_loaded(engine: AsyncEngine, tenant: str, organization_id: str) -> bool:
    async with unit_of_work(engine, write=False) as conn:
        row = (
            await conn.execute(
                select(resource_t.c.rid).where(
                    resource_t.c.tenant == tenant,
                    resource_t.c.res_type == "Organization",
                    resource_t.c.res_id == organization_id,
                )
            )
        ).first()
    return row is not None


async def _register_tenants(engine: AsyncEngine, tenants) -> None:
    """The demo organisations become tenants, so tokens can be issued for them."""
    from yiyun.core.errors import Conflict
    from yiyun.identity.accounts import create_tenant

    async with unit_of_work(engine) as conn:
        for t in tenants:
            try:
                await create_tenant(conn, t.slug, name=t.name, kind=t.kind)
            except Conflict:
                pass


async def _after_load(engine: AsyncEngine, data) -> dict:
    """What the modules add once the region's records are in: sign-in accounts, then the
    hospitals' online services and schedules (which need today's date, so are not part of
    the pure, seeded data set)."""
    from yiyun.demo.accounts import create_demo_accounts
    from yiyun.demo.hospital import create_demo_services

    accounts = await create_demo_accounts(engine, data)
    services = await create_demo_services(engine, data)
    return {k: v for k, v in (("accounts", accounts), ("services", services)) if v}


async def load_demo(engine: AsyncEngine, *, seed: int, if_empty: bool) -> dict:
    from yiyun.demo import generate_demo

    started = time.perf_counter()
    data = generate_demo(seed)
    first = data.tenants[0]
    if if_empty and await _already_loaded(engine, first.slug, first.organization_id):
        return {"status": "already-loaded", "tenants": [t.slug for t in data.tenants]}
    await _register_tenants(engine, data.tenants)
    base = get_settings().base_url.rstrip("/") + "/fhir/R4"
    by_tenant: dict[str, list[dict]] = {}
    for tenant, resource in data.resources:
        by_tenant.setdefault(tenant, []).append(resource)
    report = LoadReport()
    for tenant, resources in by_tenant.items():
        loader = Loader(engine, RequestContext(tenant=tenant, subject="demo", base_url=base))
        for start in range(0, len(resources), CHUNK):
            await loader.load_resources(resources[start : start + CHUNK], report)
    if report.failed:
        where, why = report.failed[0]
        raise RuntimeError(f"demo data failed to load ({len(report.failed)} failures), first: {where}: {why}")
    extras = await _after_load(engine, data)
    await refresh_statistics(engine)
    return {
        "status": "loaded",
        "tenants": [t.slug for t in data.tenants],
        "resources": report.resources,
        **extras,
        "seconds": round(time.perf_counter() - started, 1),
    }
