"""Settings from YIYUN_* environment variables and an optional .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YIYUN_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Folder for the SQLite file, files and exports.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under data_dir.")
    base_url: str = Field(default="http://127.0.0.1:8000", description="Public base URL used in links.")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, description="Largest request body accepted.")
    default_tenant: str = Field(default="default", description="Tenant used when a request names none.")
    page_size_default: int = 50
    page_size_max: int = 1000
    locale: str = "zh_CN"
    log_level: str = "INFO"
    log_json: bool = True
    validate_on_write: bool = True
    secret_key: str = Field(default="", description="Token-signing secret; generated into data_dir when empty.")
    access_token_minutes: int = Field(default=15, description="Lifetime of access tokens.")
    storage_url: str = Field(default="", description="fsspec URL of file storage; empty means data_dir/files.")
    redis_url: str = Field(default="", description="Redis for real-time fan-out across processes; empty: in process.")
    stun_urls: str = Field(default="", description="Comma-separated STUN server URLs for video calls.")
    turn_urls: str = Field(default="", description="Comma-separated TURN server URLs for video calls.")
    turn_username: str = ""
    turn_credential: str = ""
    session_idle_minutes: int = Field(default=30, description="Web session ends after this long unused.")
    session_absolute_hours: int = Field(default=12, description="Web session ends this long after sign-in.")
    session_secure_cookie: bool = Field(default=False, description="Always mark the session cookie Secure.")
    audit_flush_seconds: float = Field(
        default=1.0, ge=0.05, le=10.0,
        description="Reads, searches and refusals reach the audit chain in batches this often; a process killed "
                    "abruptly loses at most this long of them (writes are audited in their own transaction).")
    sms_provider: str = Field(default="outbox", description="SMS sender: outbox (development) | disabled.")
    cors_origins: str = Field(default="", description="Comma-separated origins of browser apps allowed to call the "
                              "FHIR API and token endpoints (besides registered OAuth clients' redirect URIs).")
    jobs_url: str = Field(default="", description="Job queue (Huey): empty means a SQLite file data_dir/jobs.db; "
                                                 "sqlite:///path or redis://host:port/db.")
    store_auto_analyze: bool = Field(default=True, description="PostgreSQL: refresh the FHIR store's planner "
                                     "statistics in the background while it grows fast (yiyun.fhir.search.statistics).")
    jobs_inline: bool | None = Field(default=None, description="Run a job consumer inside `yiyun serve`; default: "
                                                               "yes with a SQLite queue, no with Redis.")

    @property
    def resolved_database_url(self) -> str:
        return async_url(self.database_url or f"sqlite:///{self.data_dir.resolve() / 'yiyun.db'}")


def async_url(url: str) -> str:
    """Map a plain SQLAlchemy URL to its async driver (asyncpg, aiosqlite)."""
    for plain, driver in (
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite+pysqlite://", "sqlite+aiosqlite://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


def sync_url(url: str) -> str:
    """The same database through a synchronous driver, for migrations."""
    url = async_url(url)
    return url.replace("postgresql+asyncpg://", "postgresql+psycopg://").replace(
        "sqlite+aiosqlite://", "sqlite://"
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
