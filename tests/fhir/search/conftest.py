"""Search tests run on SQLite and PostgreSQL, each module on a fresh database of its own:
a temporary SQLite file, or a fresh PostgreSQL schema dropped afterwards. Each test writes
under its own tenant, so tests in one module never see each other's data.

With CI=true an unreachable PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from yiyun.core.db import create_engine_for
from yiyun.core.settings import async_url
from yiyun.fhir.model import RequestContext
from yiyun.fhir.tables import metadata

# the tests import their helpers from this folder
sys.path.insert(0, str(Path(__file__).parent))

PG_URL = os.environ.get("YIYUN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_sync_url(url: str) -> str:
    return async_url(url).replace("postgresql+asyncpg://", "postgresql+psycopg://")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def search_db(request, tmp_path_factory):
    """(kind, async url, connect_args) of a fresh database with the store's tables."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("search") / "search.db"
        sync = create_engine(f"sqlite:///{path}")
        metadata.create_all(sync)
        sync.dispose()
        yield "sqlite", f"sqlite:///{path}", None
        return
    schema = f"t_search_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(_pg_sync_url(PG_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no PostgreSQL here"
        msg = f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        sync = create_engine(_pg_sync_url(PG_URL), connect_args={"options": f"-csearch_path={schema}"})
        metadata.create_all(sync)
        sync.dispose()
        yield "postgresql", PG_URL, {"server_settings": {"search_path": schema}}
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest_asyncio.fixture
async def sengine(search_db):
    kind, url, connect_args = search_db
    if kind == "sqlite":
        engine = create_engine_for(url)
    else:
        engine = create_async_engine(async_url(url), connect_args=connect_args, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def stenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ctx(stenant) -> RequestContext:
    return RequestContext(tenant=stenant, base_url="http://example.test/fhir/R4")


