"""Field encryption (AES-256-GCM) and blind indexes for identifiers at rest.

Ciphertext format ``v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>``:

- AES-256-GCM (NIST SP 800-38D) with a random 96-bit nonce per value and a 128-bit tag;
- the associated data binds a ciphertext to its key id and its *purpose* (e.g.
  ``resident-id``, ``phone``), so a value cannot be moved to another field, or decrypted
  under another purpose, without failing authentication;
- the encryption key is derived from the ring's master key with HKDF (info
  ``yiyun/field-encryption/v1``), so master keys can be rotated (`rotate`).

Every failure (unknown key, wrong purpose, altered or truncated text) raises
`DecryptionError` and nothing else: callers fail closed.

A blind index is ``<key id>.<base64url(HMAC-SHA256(k_bi, purpose ‖ 0 ‖ normalised)[:16])>``
with ``k_bi`` derived separately from the same master (info ``yiyun/blind-index/v1``). It
allows exact-match lookup without decrypting; equal normalised values give equal indexes
under one key. 128 bits are kept: enough that two different identifiers never share an
index in practice, while the full HMAC is not stored. During a key rotation, look up with
`blind_indexes` (one candidate per key in the ring) until `rotate` has rewritten all rows.
Normalisation (GB 11643-1999 for resident IDs: upper-case check character ``X``; phones:
digits only, without the +86 country code) makes the index robust to how people type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from yiyun.identity.protection.keyring import KeyRing, field_keyring

VERSION = "v1"
NONCE_BYTES = 12
BLIND_INDEX_BYTES = 16
_ENC_INFO = b"yiyun/field-encryption/v1"
_BI_INFO = b"yiyun/blind-index/v1"
_PURPOSE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

# Common purposes; any lower-case name matching _PURPOSE may be used.
RESIDENT_ID = "resident-id"
PHONE = "phone"
EMAIL = "email"


class DecryptionError(Exception):
    """A protected value could not be opened: wrong key, wrong purpose, or altered text."""


# ------------------------------------------------------------------ normalisation
def _nfkc(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def normalize_resident_id(value: str) -> str:
    """GB 11643-1999 numbers as typed: full-width digits, blanks, dashes, lower-case x."""
    return re.sub(r"[\s-]", "", _nfkc(value)).upper()


def normalize_phone(value: str) -> str:
    """Digits only, without China's country code (+86 / 0086) before an 11-digit mobile."""
    digits = re.sub(r"\D", "", _nfkc(value))
    for cc in ("0086", "86"):
        if digits.startswith(cc) and len(digits) == len(cc) + 11 and digits[len(cc)] == "1":
            return digits[len(cc):]
    return digits


def normalize_email(value: str) -> str:
    return _nfkc(value).lower()


def normalize_text(value: str) -> str:
    return re.sub(r"\s+", " ", _nfkc(value))


_NORMALIZERS: dict[str, Callable[[str], str]] = {
    RESIDENT_ID: normalize_resident_id,
    PHONE: normalize_phone,
    EMAIL: normalize_email,
}


def register_normalizer(purpose: str, fn: Callable[[str], str]) -> None:
    """Normalisation applied before blind-indexing values of `purpose`."""
    _NORMALIZERS[_check_purpose(purpose)] = fn


def normalize(value: str, purpose: str) -> str:
    return _NORMALIZERS.get(purpose, normalize_text)(value)


def _check_purpose(purpose: str) -> str:
    if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
        raise ValueError("purpose must be a short lower-case name such as 'resident-id'")
    return purpose


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ------------------------------------------------------------------ the protector
class FieldProtector:
    """Encrypts, decrypts and blind-indexes values with one key ring."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def _aead(self, key_id: str) -> AESGCM:
        """The cipher of master `key_id`, kept with the ring's derived keys (KeyError if unknown)."""
        cache = self.ring._derived
        aead = cache.get((key_id, "aesgcm"))
        if aead is None:
            aead = cache[(key_id, "aesgcm")] = AESGCM(self.ring.derive(key_id, _ENC_INFO))
        return aead

    def _aad(self, key_id: str, purpose: str) -> bytes:
        return f"yiyun-field:{VERSION}:{key_id}:{purpose}".encode()

    def encrypt(self, value: str, purpose: str) -> str:
        if not isinstance(value, str):
            raise TypeError("only text values are encrypted")
        _check_purpose(purpose)
        key_id = self.ring.current_id
        aead = self._aead(key_id)
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, value.encode("utf-8"), self._aad(key_id, purpose))
        return f"{VERSION}.{key_id}.{_b64e(nonce + sealed)}"

    def decrypt(self, token: str, purpose: str) -> str:
        _check_purpose(purpose)
        key_id, blob = self._split(token)
        try:
            aead = self._aead(key_id)
        except KeyError:
            raise DecryptionError(f"key {key_id!r} is not in the ring") from None
        if len(blob) < NONCE_BYTES + 16:
            raise DecryptionError("ciphertext too short")
        try:
            plain = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(key_id, purpose))
            return plain.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise DecryptionError("ciphertext does not authenticate (wrong key or purpose, or altered)") from None

    @staticmethod
    def _split(token: Any) -> tuple[str, bytes]:
        if not isinstance(token, str):
            raise DecryptionError("not a protected value")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION or not parts[1]:
            raise DecryptionError("not a protected value of a known format")
        try:
            return parts[1], _b64d(parts[2])
        except (ValueError, binascii.Error):
            raise DecryptionError("ciphertext is not valid base64url") from None

    def key_id_of(self, token: str) -> str:
        return self._split(token)[0]

    def needs_rotation(self, token: str) -> bool:
        return self.key_id_of(token) != self.ring.current_id

    def rotate(self, token: str, purpose: str) -> str:
        """The same value under the current key (unchanged if already current)."""
        if not self.needs_rotation(token):
            return token
        return self.encrypt(self.decrypt(token, purpose), purpose)

    # -------------------------------------------------------------- blind index
    def blind_index(self, value: str, purpose: str, *, key_id: str | None = None, as_written: bool = False) -> str:
        """`as_written`: of the value without the purpose's normalisation (how an index was
        computed before that normalisation existed; for finding rows not yet reindexed)."""
        _check_purpose(purpose)
        key_id = key_id or self.ring.current_id
        key = self.ring.derive(key_id, _BI_INFO)
        text = value if as_written else normalize(value, purpose)
        msg = purpose.encode() + b"\x00" + text.encode("utf-8")
        return f"{key_id}.{_b64e(hmac.new(key, msg, hashlib.sha256).digest()[:BLIND_INDEX_BYTES])}"

    def blind_indexes(self, value: str, purpose: str, *, as_written: bool = False) -> list[str]:
        """One index per key in the ring (current first): look up with `IN (...)` while rotating."""
        return [self.blind_index(value, purpose, key_id=k, as_written=as_written) for k in self.ring.ids]

    def blind_index_is_current(self, index: str) -> bool:
        return index.split(".", 1)[0] == self.ring.current_id


def protector() -> FieldProtector:
    """The protector over the configured ring (see `keyring.field_keyring`)."""
    return FieldProtector(field_keyring())


def encrypt(value: str, purpose: str) -> str:
    return protector().encrypt(value, purpose)


def decrypt(token: str, purpose: str) -> str:
    return protector().decrypt(token, purpose)


def blind_index(value: str, purpose: str) -> str:
    return protector().blind_index(value, purpose)


def blind_indexes(value: str, purpose: str) -> list[str]:
    return protector().blind_indexes(value, purpose)


def rotate(token: str, purpose: str) -> str:
    return protector().rotate(token, purpose)


# ------------------------------------------------------------------ rotation of stored columns
@dataclass(frozen=True)
class EncryptedColumn:
    """A table column holding protected values, optionally with its blind-index column."""

    table: Any  # sqlalchemy.Table
    pk: str
    column: str
    purpose: str
    blind_index_column: str | None = None

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"


_registry: dict[str, EncryptedColumn] = {}


def register_encrypted_column(col: EncryptedColumn) -> EncryptedColumn:
    """Tables declare their protected columns so that `yiyun keys rotate` finds them."""
    _check_purpose(col.purpose)
    _registry[col.name] = col
    return col


def encrypted_columns() -> list[EncryptedColumn]:
    return list(_registry.values())


async def rotate_batch(conn, col: EncryptedColumn, *, after: Any = None, batch: int = 500,
                       fp: FieldProtector | None = None, unreadable: list | None = None) -> tuple[int, Any]:
    """Re-encrypt (and re-index) up to `batch` rows after primary key `after`.

    Returns (rows rewritten, last primary key seen or None when the table is done). Rows no
    key of the ring opens are left as they are and their primary keys added to `unreadable`.
    Runs inside the caller's transaction; one batch per transaction keeps locks short.
    """
    from sqlalchemy import bindparam, select, update

    fp = fp or protector()
    t = col.table
    pk, value_col = t.c[col.pk], t.c[col.column]
    cols = [pk, value_col] + ([t.c[col.blind_index_column]] if col.blind_index_column else [])
    q = select(*cols).order_by(pk).limit(batch)
    if after is not None:
        q = q.where(pk > after)
    rows = (await conn.execute(q)).all()
    changes = []
    for row in rows:
        token = row[1]
        if token is None:
            continue
        stale_index = col.blind_index_column and row[2] is not None and not fp.blind_index_is_current(row[2])
        if not fp.needs_rotation(token) and not stale_index:
            continue
        try:
            plain = fp.decrypt(token, col.purpose)
        except DecryptionError:
            if unreadable is not None:
                unreadable.append(row[0])
            continue
        change = {"_pk": row[0], col.column: fp.encrypt(plain, col.purpose)}
        if col.blind_index_column:
            change[col.blind_index_column] = fp.blind_index(plain, col.purpose)
        changes.append(change)
    if changes:
        values = {c: bindparam(c) for c in changes[0] if c != "_pk"}
        await conn.execute(update(t).where(pk == bindparam("_pk")).values(values), changes)
    return len(changes), (rows[-1][0] if len(rows) == batch else None)


async def rotate_column(conn, col: EncryptedColumn, *, batch: int = 500, fp: FieldProtector | None = None) -> int:
    """Re-encrypt every value of `col` not under the current key, in one transaction."""
    total, after = 0, None
    while True:
        changed, after = await rotate_batch(conn, col, after=after, batch=batch, fp=fp)
        total += changed
        if after is None:
            return total
