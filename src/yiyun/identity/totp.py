"""Second factor of staff accounts: time-based one-time passwords and recovery codes.

- TOTP per RFC 6238 (HMAC-SHA1, 6 digits, 30 s steps, the usual authenticator apps). A code
  of the previous, current or next step is accepted (±1 step of clock drift, RFC 6238 §5.2),
  and every accepted step is remembered: a code, once used, is refused afterwards, and so is
  any code of an earlier step (NIST SP 800-63B §5.1.4.2 "verifiers SHALL accept a given time-
  based OTP only once during the validity period").
- The secret (160 bits, RFC 4226 §4 R6) is stored encrypted (AES-GCM, purpose `totp-secret`).
- The enrolment QR code is drawn on the server as inline SVG (no image service, no network).
- 10 recovery codes (50 bits each) are shown once at enrolment and stored as keyed hashes
  (HMAC-SHA256 with the server key); each may be used once in place of a TOTP code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

import pyotp
import qrcode
import qrcode.image.svg
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.fhir.model import now_us
from yiyun.identity.keys import signing_key
from yiyun.identity.protection.fields import decrypt, encrypt
from yiyun.identity.signin_tables import recovery_code, totp

PURPOSE = "totp-secret"
ISSUER = "医云 yiyun"
STEP_SECONDS = 30
DRIFT_STEPS = 1
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud and typed from paper


def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters = 160 bits


def provisioning_uri(secret: str, account_name: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account_name, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The otpauth:// URI as an inline SVG QR code (drawn here; nothing is fetched)."""
    img = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    svg = img.to_string().decode("utf-8")
    return re.sub(r"^<\?xml[^>]*>\s*", "", svg)


def current_step(at: float | None = None) -> int:
    return int((time.time() if at is None else at) // STEP_SECONDS)


def matching_step(secret: str, code: str, *, after_step: int | None, at: float | None = None) -> int | None:
    """The time step whose code `code` is (within ±1 step of now and later than `after_step`),
    or None."""
    code = re.sub(r"\s", "", code or "")
    if not re.fullmatch(r"\d{6}", code):
        return None
    generator = pyotp.TOTP(secret)
    now_step = current_step(at)
    for step in range(now_step - DRIFT_STEPS, now_step + DRIFT_STEPS + 1):
        if after_step is not None and step <= after_step:
            continue
        if hmac.compare_digest(generator.at(step * STEP_SECONDS), code):
            return step
    return None


async def pending_secret(conn: AsyncConnection, account_id: str) -> str:
    """The secret being enrolled (made now when none is pending); a confirmed factor is kept."""
    row = (await conn.execute(select(totp).where(totp.c.account_id == account_id))).first()
    if row is not None and row.confirmed_ts is None:
        return decrypt(row.secret, PURPOSE)
    secret = new_secret()
    if row is None:
        await conn.execute(totp.insert().values(account_id=account_id, secret=encrypt(secret, PURPOSE),
                                                confirmed_ts=None, last_step=None, created_ts=now_us()))
    else:
        raise ValueError("the account already has a confirmed second factor")
    return secret


async def has_second_factor(conn: AsyncConnection, account_id: str) -> bool:
    row = (await conn.execute(select(totp.c.confirmed_ts).where(totp.c.account_id == account_id))).first()
    return row is not None and row.confirmed_ts is not None


async def confirm_enrolment(conn: AsyncConnection, account_id: str, code: str) -> list[str] | None:
    """Confirm the pending secret with a code from the app; returns the new recovery codes
    (to show once), or None when the code is wrong."""
    row = (await conn.execute(select(totp).where(totp.c.account_id == account_id))).first()
    if row is None or row.confirmed_ts is not None:
        return None
    step = matching_step(decrypt(row.secret, PURPOSE), code, after_step=row.last_step)
    if step is None:
        return None
    await conn.execute(update(totp).where(totp.c.account_id == account_id).values(confirmed_ts=now_us(),
                                                                                  last_step=step))
    return await new_recovery_codes(conn, account_id)


async def remove_second_factor(conn: AsyncConnection, account_id: str) -> None:
    """Reset (an administrator's action after identity checks, `yiyun.identity.second_factor_reset`,
    which also signs the account out everywhere and audits it): enrol again at next sign-in."""
    await conn.execute(delete(totp).where(totp.c.account_id == account_id))
    await conn.execute(delete(recovery_code).where(recovery_code.c.account_id == account_id))


def _hash_recovery(account_id: str, code: str) -> str:
    normal = re.sub(r"[\s-]", "", code or "").lower()
    return hmac.new(signing_key(), f"recovery:{account_id}:{normal}".encode(), hashlib.sha256).hexdigest()


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


async def new_recovery_codes(conn: AsyncConnection, account_id: str) -> list[str]:
    """Replace the account's recovery codes with 10 new ones; returns them (shown once)."""
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    await conn.execute(delete(recovery_code).where(recovery_code.c.account_id == account_id))
    now = now_us()
    await conn.execute(recovery_code.insert(), [
        {"account_id": account_id, "code_hash": _hash_recovery(account_id, c), "used_ts": None, "created_ts": now}
        for c in codes
    ])
    return codes


async def recovery_codes_left(conn: AsyncConnection, account_id: str) -> int:
    rows = await conn.execute(select(recovery_code.c.code_hash).where(
        recovery_code.c.account_id == account_id, recovery_code.c.used_ts.is_(None)))
    return len(rows.all())


async def check_second_factor(conn: AsyncConnection, account_id: str, code: str) -> str | None:
    """Check a TOTP code or a recovery code; returns "totp" or "recovery" when accepted
    (and consumes it), else None. Six digits are read as a TOTP code, anything else as a
    recovery code."""
    row = (await conn.execute(select(totp).where(totp.c.account_id == account_id))).first()
    if row is None or row.confirmed_ts is None:
        return None
    compact = re.sub(r"\s", "", code or "")
    if re.fullmatch(r"\d{6}", compact):
        step = matching_step(decrypt(row.secret, PURPOSE), compact, after_step=row.last_step)
        if step is None:
            return None
        # only if no concurrent request has used this (or a later) step meanwhile
        cond = totp.c.last_step.is_(None) if row.last_step is None else totp.c.last_step == row.last_step
        result = await conn.execute(update(totp).where(totp.c.account_id == account_id, cond).values(last_step=step))
        return "totp" if result.rowcount == 1 else None
    if not compact or len(compact) > 20:
        return None
    result = await conn.execute(update(recovery_code).where(
        recovery_code.c.account_id == account_id, recovery_code.c.code_hash == _hash_recovery(account_id, compact),
        recovery_code.c.used_ts.is_(None),
    ).values(used_ts=now_us()))
    return "recovery" if result.rowcount == 1 else None
