"""Alembic, driven from code: `yiyun db upgrade|downgrade|current` and readiness checks."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from yiyun.core.settings import Settings, get_settings, sync_url


def migrations_dir() -> Path:
    override = os.environ.get("YIYUN_MIGRATIONS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(database_url: str | None = None, settings: Settings | None = None) -> Config:
    settings = settings or get_settings()
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    url = database_url or settings.resolved_database_url
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def upgrade(revision: str = "head", database_url: str | None = None) -> None:
    _ensure_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(revision: str, database_url: str | None = None) -> None:
    command.downgrade(alembic_config(database_url), revision)


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(sync_conn) -> str | None:
    return MigrationContext.configure(sync_conn).get_current_revision()


def _ensure_sqlite_dir(database_url: str | None) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(sync_url(database_url or get_settings().resolved_database_url))
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
