"""Key rings: named 256-bit master keys, the first one current.

Field encryption and the audit chain each use a ring so that keys can be rotated: new data
is protected with the current key; data protected earlier names the key it used and stays
readable (or verifiable) as long as that key remains in the ring.

A ring is written `id:base64key,id:base64key` in an environment variable, or one
`id:base64key` per line in a key file (blank lines and `#` comments allowed). Key ids are
1-32 characters of `A-Z a-z 0-9 _ -`; keys are exactly 32 random bytes.

Purpose-specific subkeys are derived with HKDF-SHA256 (RFC 5869) so that one master key
never serves two algorithms directly (key separation, NIST SP 800-57 Part 1 §5.2).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from yiyun.core.logging import get_logger
from yiyun.identity.protection.settings import ProtectionSettings, get_protection_settings

log = get_logger("yiyun.identity.protection")

KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class KeyConfigurationError(RuntimeError):
    """The configured keys are missing or malformed: nothing may be protected with them."""


@dataclass(frozen=True, repr=False)
class KeyRing:
    keys: dict[str, bytes]
    current_id: str
    source: str = ""
    _derived: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.current_id not in self.keys:
            raise KeyConfigurationError("the current key is not in the ring")

    def __repr__(self) -> str:  # never print key material
        return f"KeyRing(ids={list(self.keys)}, current={self.current_id!r}, source={self.source!r})"

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    def derive(self, key_id: str, info: bytes) -> bytes:
        """A 32-byte subkey of master `key_id` for one purpose; KeyError if the id is unknown."""
        cache_key = (key_id, info)
        sub = self._derived.get(cache_key)
        if sub is None:
            master = self.keys[key_id]
            sub = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)
            self._derived[cache_key] = sub
        return sub


def _decode_key(b64: str) -> bytes:
    b64 = b64.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)


def parse_keyring(text: str, *, source: str = "") -> KeyRing:
    """Parse `id:base64,...` or one `id:base64` per line; the first key is current."""
    keys: dict[str, bytes] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            key_id, sep, b64 = item.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID.match(key_id):
                raise KeyConfigurationError(f"{source}: each key must be written id:base64 (id of 1-32 letters, digits, _ or -)")
            try:
                raw = _decode_key(b64)
            except (ValueError, binascii.Error) as exc:
                raise KeyConfigurationError(f"{source}: key {key_id!r} is not valid base64") from exc
            if len(raw) != KEY_BYTES:
                raise KeyConfigurationError(f"{source}: key {key_id!r} must be {KEY_BYTES} bytes, not {len(raw)}")
            if key_id in keys:
                raise KeyConfigurationError(f"{source}: key id {key_id!r} appears twice")
            keys[key_id] = raw
    if not keys:
        raise KeyConfigurationError(f"{source}: no key found")
    return KeyRing(keys=keys, current_id=next(iter(keys)), source=source)


def new_key_line(prefix: str = "k") -> str:
    """A fresh `id:base64` line; the id carries its creation date for the operator's benefit."""
    key_id = f"{prefix}{datetime.now(timezone.utc):%Y%m%d}{secrets.token_hex(2)}"
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def _read_key_file(path: Path) -> KeyRing:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyConfigurationError(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        log.warning("key_file_readable_by_others", path=str(path), mode=oct(mode & 0o777))
    return parse_keyring(text, source=str(path))


def _generate_dev_file(path: Path, prefix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process generated it first: use theirs
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Generated for development. Configure real keys in production; losing this file loses the data.\n")
        fh.write(new_key_line(prefix) + "\n")
    log.warning("development_key_generated", path=str(path), hint="configure keys in production")


def load_keyring(inline: str, file: Path | None, *, dev_name: str, prefix: str, settings: ProtectionSettings) -> KeyRing:
    """The ring from the inline setting, else the key file, else a generated development file."""
    if inline.strip():
        return parse_keyring(inline, source="environment")
    if file is not None:
        return _read_key_file(file)
    if not settings.generate_dev_keys:
        raise KeyConfigurationError(f"no key configured for {dev_name} and development keys are switched off")
    path = settings.data_dir.resolve() / "keys" / dev_name
    if not path.exists():
        _generate_dev_file(path, prefix)
    return _read_key_file(path)


@lru_cache
def field_keyring() -> KeyRing:
    """Keys of field encryption and blind indexes (YIYUN_ENCRYPTION_KEYS or _KEY_FILE)."""
    s = get_protection_settings()
    return load_keyring(
        s.encryption_keys.get_secret_value(), s.encryption_key_file, dev_name="encryption.keys", prefix="k", settings=s
    )


@lru_cache
def audit_keyring() -> KeyRing:
    """Keys of the audit chain's HMAC (YIYUN_AUDIT_KEYS or _KEY_FILE)."""
    s = get_protection_settings()
    return load_keyring(s.audit_keys.get_secret_value(), s.audit_key_file, dev_name="audit.keys", prefix="a", settings=s)


def reset_keyrings() -> None:
    """Forget cached settings and rings (after a configuration change, and in tests)."""
    get_protection_settings.cache_clear()
    field_keyring.cache_clear()
    audit_keyring.cache_clear()
