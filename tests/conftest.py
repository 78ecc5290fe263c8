"""Shared test set-up: the real databases, built by the migrations.

Every storage test runs on SQLite and on PostgreSQL. Each test session builds one fresh
database per engine through Alembic; each test gets its own tenant, which the store keeps
isolated, so tests never see each other's data. With CI=true an unreachable PostgreSQL
fails the run instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("YIYUN_SHARED_DATA", REPO.parent / "shared" / "data"))
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
os.environ.setdefault("YIYUN_LOG_LEVEL", "WARNING")
# servers started by tests run no job consumer unless a test asks for one
os.environ.setdefault("YIYUN_JOBS_INLINE", "false")
# background ANALYZE tasks would outlive the tests' event loops; tests/fhir/test_store_statistics.py turns it on
os.environ.setdefault("YIYUN_STORE_AUTO_ANALYZE", "false")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"shared test data missing: {path}") if IN_CI else pytest.skip(f"no shared data at {path}")
    return path


def _postgres_admin_url() -> str:
    return os.environ.get("YIYUN_TEST_DATABASE_URL", PG_DEFAULT)


def _make_pg_database() -> str | None:
    """A new, empty PostgreSQL database for this session (dropped at the end)."""
    admin = make_url(_postgres_admin_url()).set(drivername="postgresql+psycopg")
    name = f"yiyun_t_{uuid.uuid4().hex[:10]}"
    try:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except Exception as exc:  # unreachable server
        if IN_CI:
            pytest.fail(f"PostgreSQL unreachable at {admin.render_as_string(hide_password=True)}: {exc}")
        return None
    return admin.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "")


def _drop_pg_database(url: str) -> None:
    target = make_url(url)
    admin = make_url(_postgres_admin_url()).set(drivername="postgresql+psycopg")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory) -> dict[str, str | None]:
    from yiyun.core import migrations

    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'yiyun-test.db'}"
    pg_url = _make_pg_database()
    for url in (sqlite_url, pg_url):
        if url:
            migrations.upgrade("head", database_url=url)
    yield {"sqlite": sqlite_url, "postgresql": pg_url}
    if pg_url:
        _drop_pg_database(pg_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, database_urls, monkeypatch, tmp_path) -> str:
    """The database under test; the app and the repository use it through settings."""
    url = database_urls[request.param]
    if url is None:
        pytest.skip("PostgreSQL not reachable (set CI=true to make this a failure)")
    from yiyun.core.settings import get_settings

    monkeypatch.setenv("YIYUN_DATABASE_URL", url)
    monkeypatch.setenv("YIYUN_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def engine(db_url):
    from yiyun.core.db import dispose_engines, get_engine

    yield get_engine()
    await dispose_engines()


def auth_headers(tenant: str, scope: str = "system/*.cruds", **claims) -> dict[str, str]:
    """`Authorization: Bearer …` for a token of `tenant` (signed with the current settings' key)."""
    from yiyun.identity.tokens import issue_access_token

    claims.setdefault("subject", "service:tests")
    token, _ = issue_access_token(tenant=tenant, scope=scope, **claims)
    return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture
async def client(engine, tenant):
    """An HTTP client bound to the ASGI app, speaking as a backend service of `tenant`
    (a bearer token with `system/*.cruds`)."""
    from yiyun.app import create_app

    app = create_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=auth_headers(tenant)
    ) as c:
        c.app = app
        yield c
        await app.state.policy.recorder.close()  # what the lifespan does at shutdown


@pytest_asyncio.fixture
async def repo_factory(engine, tenant):
    """Open a unit of work and a repository for `tenant`: `async with repo_factory() as repo`."""
    import contextlib

    from yiyun.core.db import unit_of_work
    from yiyun.fhir.model import RequestContext
    from yiyun.fhir.repository import FhirRepository

    @contextlib.asynccontextmanager
    async def factory(write: bool = True, for_tenant: str | None = None):
        async with unit_of_work(engine, write=write) as conn:
            yield FhirRepository(conn, RequestContext(tenant=for_tenant or tenant, base_url="http://testserver/fhir/R4"))

    return factory


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(env: dict[str, str], timeout_s: float = 30.0):
    """`yiyun serve` as a separate process on a free port; yields its base URL."""
    import subprocess
    import sys
    import time

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "yiyun.cli", "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("server did not start: " + proc.stderr.read().decode()[-2000:])
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
