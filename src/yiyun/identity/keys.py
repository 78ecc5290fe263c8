"""The server's token-signing key: from configuration, else generated once into the data folder."""

from __future__ import annotations

import base64
import os
import secrets
from functools import lru_cache
from pathlib import Path

from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings

log = get_logger("yiyun.identity")


@lru_cache(maxsize=4)
def _signing_key(configured: str, data_dir: str) -> bytes:
    if configured:
        return configured.encode()
    path = Path(data_dir).resolve() / "signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        log.warning("signing_key_generated", path=str(path), hint="set YIYUN_SECRET_KEY in production")
    return path.read_text().strip().encode()


def signing_key() -> bytes:
    settings = get_settings()
    return _signing_key(settings.secret_key, str(settings.data_dir))
