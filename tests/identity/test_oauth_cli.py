"""`yiyun client create|list|disable`, run as operators run them, in a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO


def yiyun(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yiyun.cli", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(db_url, tmp_path):
    return {"YIYUN_DATABASE_URL": db_url, "YIYUN_DATA_DIR": str(tmp_path / "var"), "YIYUN_LOG_LEVEL": "WARNING"}


def test_client_commands(env, tmp_path):
    from joserfc.jwk import ECKey

    slug = f"h-{uuid.uuid4().hex[:10]}"
    assert yiyun("tenant", "create", slug, "--name", "长沙市中心医院", "--kind", "hospital", env=env).returncode == 0
    key = ECKey.generate_key("P-384", private=True)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))

    backend = yiyun("client", "create", "--tenant", slug, "--name", "检验科接口", "--type", "backend",
                    "--scope", "system/Observation.cruds", "--jwks-file", str(jwks_file), env=env)
    assert backend.returncode == 0, backend.stderr
    backend_id = backend.stdout.split("client_id:")[1].split()[0]
    assert "client_secret" not in backend.stdout

    app = yiyun("client", "create", "--tenant", slug, "--name", "血压管家", "--type", "confidential",
                "--redirect-uri", "https://bp.example/callback", "--scope",
                "launch/patient openid fhirUser offline_access patient/*.rs", env=env)
    assert app.returncode == 0, app.stderr
    assert "client_secret:" in app.stdout

    listed = yiyun("client", "list", "--tenant", slug, env=env).stdout
    assert backend_id in listed and "血压管家" in listed and "active" in listed

    assert yiyun("client", "disable", backend_id, env=env).returncode == 0
    assert f"{backend_id}\t{slug}\tbackend\tdisabled" in yiyun("client", "list", env=env).stdout

    # refusals: exit 2 with the reason
    for args in (["--type", "backend", "--scope", "patient/*.rs"],
                 ["--type", "public", "--scope", "patient/*.rs"],
                 ["--type", "web", "--scope", "system/*.rs"]):
        bad = yiyun("client", "create", "--tenant", slug, "--name", "x", *args, env=env)
        assert bad.returncode == 2 and "错误" in bad.stderr, bad.stderr
    assert yiyun("client", "disable", "no-such-client", env=env).returncode == 2
