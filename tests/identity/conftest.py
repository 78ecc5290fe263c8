"""Shared set-up of the identity tests: the application and a client without default
credentials (each test sends the token or session of the persona it plays)."""

from __future__ import annotations

import httpx
import pytest_asyncio

from tests.conftest import auth_headers

FHIR = "/fhir/R4"


@pytest_asyncio.fixture
async def app(engine):
    from yiyun.app import create_app

    app = create_app()
    yield app
    await app.state.policy.recorder.close()


@pytest_asyncio.fixture
async def c(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield client


async def make(c, tenant, body) -> dict:
    """Create `body` as the tenant's backend service; the stored resource."""
    r = await c.post(f"{FHIR}/{body['resourceType']}", json=body, headers=auth_headers(tenant))
    assert r.status_code == 201, r.text
    return r.json()
