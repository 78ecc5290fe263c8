"""Shared helpers for benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem_gib = round(mem_kb / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    try:
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pg = None
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "postgresql_client": pg,
    }


def save_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, ensure_ascii=False, indent=2))
    return path


PG_ADMIN = os.environ.get("YIYUN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")


def new_database(backend: str, workdir: Path, name: str = "bench") -> str:
    """A fresh, empty database for one benchmark run: a SQLite file, or a new PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{workdir / (name + '.db')}"
    import uuid

    from sqlalchemy import text

    db = f"yiyun_{name}_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin()
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"


def drop_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    from sqlalchemy import text

    admin = _pg_admin()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


class Server:
    """One `yiyun serve` process for a benchmark, started with `env` on `port` (a free one
    when None), ready once /healthz answers; stopped on leaving the `with` block. With
    `upgrade`, the database is migrated first. Its output goes to BENCH_SERVER_LOG if set."""

    def __init__(self, env: dict, port: int | None = None, *, upgrade: bool = False) -> None:
        self.env, self.upgrade = env, upgrade
        self.port = port or _free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        import sys
        import time

        import httpx

        repo = Path(__file__).resolve().parents[1]
        if self.upgrade:
            subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], env=self.env, check=True,
                           capture_output=True, cwd=repo)
        self.log = open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "yiyun.cli", "serve", "--port", str(self.port)],
                                     env=self.env, cwd=repo, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("server did not start (set BENCH_SERVER_LOG=path to see why)")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
