from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from yiyun.core.errors import YiyunError
from yiyun.knowledge import kb as kb_module
from yiyun.knowledge.ratelimit import TokenBucketLimiter, set_limiter

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
DEVSETS = HERE / "devsets"


@pytest.fixture(scope="session")
def fixture_kb() -> kb_module.KnowledgeBase:
    """A small hand-written knowledge base (independent of the packaged data)."""
    return kb_module.load(FIXTURES)


@pytest.fixture(scope="session")
def packaged_kb() -> kb_module.KnowledgeBase:
    return kb_module.get_kb()


def build_app() -> FastAPI:
    from yiyun.knowledge import api, pages

    app = FastAPI()

    @app.exception_handler(YiyunError)
    async def _yiyun_error(request: Request, exc: YiyunError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    app.include_router(api.router)
    app.include_router(pages.router)
    return app


@pytest.fixture()
def db_url(tmp_path) -> str:
    from yiyun.core.db import create_engine_for
    from yiyun.knowledge.models import metadata

    url = f"sqlite:///{tmp_path / 'knowledge.db'}"

    async def create():
        engine = create_engine_for(url)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        await engine.dispose()

    asyncio.run(create())
    return url


@pytest.fixture()
def client(db_url) -> TestClient:
    from yiyun.core.db import create_engine_for, unit_of_work
    from yiyun.knowledge import deps

    app = build_app()
    engine = create_engine_for(db_url)

    async def connection():
        async with unit_of_work(engine) as conn:
            yield conn

    app.dependency_overrides[deps.get_connection] = connection
    set_limiter(TokenBucketLimiter(rate_per_minute=100_000, burst=100_000))
    with TestClient(app) as c:
        yield c
    set_limiter(None)
