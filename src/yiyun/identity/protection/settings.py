"""Settings of data protection: keys of field encryption and of the audit chain, the free-text guard.

Read from YIYUN_* environment variables (and `.env`), like `yiyun.core.settings`.
Keys are secrets: they are never logged and never shown by `repr`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProtectionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YIYUN_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Where development key files are generated.")
    encryption_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Field-encryption key ring: comma-separated `id:base64(32 bytes)`, the first is current.",
    )
    encryption_key_file: Path | None = Field(
        default=None, description="File holding the field-encryption key ring, one `id:base64` per line."
    )
    audit_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Audit-chain HMAC key ring: comma-separated `id:base64(32 bytes)`, the first is current.",
    )
    audit_key_file: Path | None = Field(
        default=None, description="File holding the audit-chain key ring, one `id:base64` per line."
    )
    mask_free_text: bool = Field(
        default=True,
        description="Mask resident ID and mobile numbers written into narratives, notes and messages on every "
        "FHIR write (YIYUN_MASK_FREE_TEXT; see docs/protection.md).",
    )
    generate_dev_keys: bool = Field(
        default=True,
        description="When no key is configured, generate a key file under data_dir (switch off in production).",
    )


@lru_cache
def get_protection_settings() -> ProtectionSettings:
    return ProtectionSettings()
