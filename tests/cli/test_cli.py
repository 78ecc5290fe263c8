"""The operator commands, run as operators run them: as a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO, shared


def yiyun(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "yiyun.cli", *args], cwd=REPO, env={**os.environ, **env},
        capture_output=True, text=True, timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_help_lists_the_stable_commands():
    out = subprocess.run([sys.executable, "-m", "yiyun.cli", "--help"], capture_output=True, text=True, cwd=REPO).stdout
    for name in ("serve", "demo", "db", "fhir"):
        assert name in out


def test_db_import_export_round_trip(db_url, tmp_path, tenant):
    env = {"YIYUN_DATABASE_URL": db_url, "YIYUN_DATA_DIR": str(tmp_path / "var"), "YIYUN_DEFAULT_TENANT": tenant}
    yiyun("db", "upgrade", env=env)
    current = yiyun("db", "current", env=env)
    assert "current: 0" in current.stdout
    folder = shared("fhir", "synthea-r4")
    files = [str(folder / "hospitalInformation1559319163815.json"), str(min(folder.glob("A*.json")))]
    result = yiyun("fhir", "import", *files, env=env)
    assert "imported" in result.stderr and "resources/s" in result.stderr
    again = yiyun("fhir", "import", *files, env=env)  # loading twice duplicates nothing
    assert "imported" in again.stderr
    out_dir = tmp_path / "export"
    yiyun("fhir", "export", str(out_dir), env=env)
    expected = {}
    for f in files:
        for e in json.loads(open(f, encoding="utf-8").read())["entry"]:
            expected.setdefault(e["resource"]["resourceType"], set()).add(e["resource"]["id"])
    for res_type, ids in expected.items():
        lines = (out_dir / f"{res_type}.ndjson").read_text().splitlines()
        assert {json.loads(x)["id"] for x in lines} == ids, res_type


def test_import_reports_bad_files(db_url, tmp_path, tenant):
    env = {"YIYUN_DATABASE_URL": db_url, "YIYUN_DATA_DIR": str(tmp_path / "var"), "YIYUN_DEFAULT_TENANT": tenant}
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Patient", "gender": "robot"}')
    proc = yiyun("fhir", "import", str(bad), env=env, check=False)
    assert proc.returncode == 1
    assert "resource.gender" in proc.stderr and "administrative-gender" in proc.stderr
    missing = yiyun("fhir", "import", str(tmp_path / "nope.json"), env=env, check=False)
    assert missing.returncode == 2
