"""`yiyun tenant`, `yiyun user`, `yiyun token`: run as operators run them, in a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.conftest import REPO


def yiyun(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yiyun.cli", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(db_url, tmp_path, monkeypatch):
    from yiyun.core.settings import get_settings

    secret = "cli-test-key-" + uuid.uuid4().hex
    monkeypatch.setenv("YIYUN_SECRET_KEY", secret)
    get_settings.cache_clear()
    return {"YIYUN_DATABASE_URL": db_url, "YIYUN_DATA_DIR": str(tmp_path / "var"), "YIYUN_SECRET_KEY": secret,
            "YIYUN_LOG_LEVEL": "WARNING"}


async def test_tenant_user_and_token_commands(env, engine):
    slug = f"h-{uuid.uuid4().hex[:10]}"
    made = yiyun("tenant", "create", slug, "--name", "长沙市中心医院", "--kind", "hospital", env=env)
    assert made.returncode == 0 and slug in made.stdout, made.stderr
    assert slug in yiyun("tenant", "list", env=env).stdout
    user = yiyun("user", "create", f"li-{slug}", "--tenant", slug, "--role", "doctor", "--name", "李医生",
                 env={**env, "YIYUN_NEW_PASSWORD": "Correct-Horse-Battery-9"})
    assert user.returncode == 0 and "doctor" in user.stdout, user.stderr

    issued = yiyun("token", "issue", "--tenant", slug, "--scope", "system/Patient.rs", "--client", "lab", env=env)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]

    from yiyun.app import create_app

    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        h = {"Authorization": f"Bearer {token}"}
        assert (await c.get("/fhir/R4/Patient", headers=h)).status_code == 200
        assert (await c.get("/fhir/R4/Observation", headers=h)).status_code == 403
        assert (await c.post("/fhir/R4/Patient", json={"resourceType": "Patient"}, headers=h)).status_code == 403
    await app.state.policy.recorder.close()

    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query

    async with unit_of_work(engine, write=False) as conn:
        actions = [r.action for r in await query(conn, tenant=slug)]
    assert "token-issued" in actions and "search" in actions


def test_bad_inputs_exit_2(env):
    slug = f"h-{uuid.uuid4().hex[:10]}"
    assert yiyun("tenant", "create", "Bad Slug!", "--name", "x", "--kind", "hospital", env=env).returncode == 2
    assert yiyun("tenant", "create", slug, "--name", "x", "--kind", "spaceship", env=env).returncode == 2
    assert yiyun("tenant", "create", slug, "--name", "x", "--kind", "clinic", env=env).returncode == 0
    assert yiyun("tenant", "create", slug, "--name", "x", "--kind", "clinic", env=env).returncode == 2
    weak = yiyun("user", "create", f"u-{slug}", "--tenant", slug, "--role", "doctor", "--name", "x",
                 env={**env, "YIYUN_NEW_PASSWORD": "123"})
    assert weak.returncode == 2
    assert yiyun("user", "create", f"v-{slug}", "--tenant", slug, "--role", "wizard", "--name", "x",
                 env={**env, "YIYUN_NEW_PASSWORD": "Correct-Horse-Battery-9"}).returncode == 2
    assert yiyun("token", "issue", "--tenant", "no-such-tenant", "--scope", "system/*.rs", env=env).returncode == 2
    assert yiyun("token", "issue", "--tenant", slug, "--scope", "patient/*.rs", env=env).returncode == 2
    assert yiyun("token", "issue", "--tenant", slug, "--scope", "root", env=env).returncode == 2
