"""One-time SMS codes for patient sign-in, and the providers that send them.

Rules (NIST SP 800-63B §5.1.3 out-of-band authenticators and §5.2.2 rate limiting;
《电信条例》/ MIIT rules on commercial SMS volume are why sends are capped):

- a code has 6 random digits and is valid for 5 minutes (`CODE_TTL_S`);
- a code may be tried at most 5 times (`MAX_TRIES`); after that a new code is needed;
- a new code for the same phone only after 60 s (`RESEND_COOLDOWN_S`);
- at most 5 codes per phone and 20 per client address in any hour (`PER_PHONE_HOUR`,
  `PER_ADDRESS_HOUR`), against SMS flooding of someone's phone and toll fraud;
- only a keyed hash of the code is stored; a new code replaces the unused ones.

Providers implement `SmsProvider`; `YIYUN_SMS_PROVIDER` chooses: `outbox` (development: the
message is written to `identity_sms_outbox` and the log, readable at /dev/sms-outbox) or
`disabled`. A real gateway is a class with the same `send` method.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings
from yiyun.fhir.model import now_us
from yiyun.identity.keys import signing_key
from yiyun.identity.protection.fields import PHONE, DecryptionError, blind_index, decrypt, encrypt
from yiyun.identity.signin_tables import sms_code, sms_outbox

log = get_logger("yiyun.sms")

CODE_TTL_S = 5 * 60
MAX_TRIES = 5
RESEND_COOLDOWN_S = 60
PER_PHONE_HOUR = 5
PER_ADDRESS_HOUR = 20
_S = 1_000_000  # µs


class SmsProvider(Protocol):
    """Sends one text message; raises on failure (the caller's transaction is rolled back)."""

    name: str

    async def send(self, conn: AsyncConnection, phone: str, body: str) -> None: ...


class OutboxSmsProvider:
    """Development provider: nothing leaves the server. The message goes to the
    `identity_sms_outbox` table (page /dev/sms-outbox) and to the log."""

    name = "outbox"

    async def send(self, conn: AsyncConnection, phone: str, body: str) -> None:
        await conn.execute(sms_outbox.insert().values(phone=encrypt(phone, PHONE), body=body[:500],
                                                      created_ts=now_us()))
        log.info("sms_outbox", phone=mask_phone(phone), body=body)


class DisabledSmsProvider:
    name = "disabled"

    async def send(self, conn: AsyncConnection, phone: str, body: str) -> None:
        from yiyun.core.errors import BadRequest

        raise BadRequest("短信服务未开通，请使用密码登录 (SMS is not configured: sign in with a password)")


PROVIDERS: dict[str, type] = {"outbox": OutboxSmsProvider, "disabled": DisabledSmsProvider}


def provider() -> SmsProvider:
    name = (get_settings().sms_provider or "outbox").strip().lower()
    if name not in PROVIDERS:
        raise ValueError(f"YIYUN_SMS_PROVIDER={name!r}: choose one of {', '.join(PROVIDERS)}")
    return PROVIDERS[name]()


def outbox_enabled() -> bool:
    return (get_settings().sms_provider or "outbox").strip().lower() == "outbox"


def mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"


def _code_hash(phone_index: str, code: str) -> str:
    return hmac.new(signing_key(), f"sms:{phone_index}:{code}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Issued:
    ok: bool
    reason: str = ""  # cooldown | phone-limit | address-limit
    wait_s: int = 0
    code: str = ""  # for the provider only; never shown on a page


async def issue_code(conn: AsyncConnection, phone: str, *, client_address: str | None,
                     sms: SmsProvider | None = None) -> Issued:
    """Make and send a code to `phone` (normalised digits) unless a limit forbids it."""
    now = now_us()
    index = blind_index(phone, PHONE)
    last = (await conn.execute(select(func.max(sms_code.c.created_ts)).where(sms_code.c.phone_index == index))).scalar()
    if last is not None and now - last < RESEND_COOLDOWN_S * _S:
        return Issued(False, "cooldown", int((last + RESEND_COOLDOWN_S * _S - now) // _S) + 1)
    hour_ago = now - 3600 * _S
    per_phone = (await conn.execute(select(func.count()).select_from(sms_code).where(
        sms_code.c.phone_index == index, sms_code.c.created_ts > hour_ago))).scalar()
    if per_phone >= PER_PHONE_HOUR:
        return Issued(False, "phone-limit", 3600)
    if client_address:
        per_address = (await conn.execute(select(func.count()).select_from(sms_code).where(
            sms_code.c.client_address == client_address[:64], sms_code.c.created_ts > hour_ago))).scalar()
        if per_address >= PER_ADDRESS_HOUR:
            return Issued(False, "address-limit", 3600)
    code = f"{secrets.randbelow(1_000_000):06d}"
    # a new code replaces the unused ones: only the latest can be used
    await conn.execute(update(sms_code).where(sms_code.c.phone_index == index, sms_code.c.used_ts.is_(None))
                       .values(used_ts=now))
    await conn.execute(sms_code.insert().values(
        id=str(uuid.uuid4()), phone_index=index, code_hash=_code_hash(index, code), created_ts=now,
        expires_ts=now + CODE_TTL_S * _S, tries=0, used_ts=None,
        client_address=client_address[:64] if client_address else None,
    ))
    body = f"【医云】您的登录验证码是 {code}，{CODE_TTL_S // 60} 分钟内有效。请勿告诉他人。"
    await (sms or provider()).send(conn, phone, body)
    return Issued(True, code=code)


async def check_code(conn: AsyncConnection, phone: str, code: str) -> str:
    """Check a code for `phone`: "ok" (the code is used up), "wrong", "expired" (or none
    issued) or "tries" (too many wrong tries: ask for a new code). Wrong tries are counted
    in the caller's transaction, which must be committed even when the answer is not ok."""
    now = now_us()
    index = blind_index(phone, PHONE)
    row = (await conn.execute(select(sms_code).where(sms_code.c.phone_index == index, sms_code.c.used_ts.is_(None))
                              .order_by(sms_code.c.created_ts.desc()).limit(1))).first()
    if row is None or row.expires_ts <= now:
        return "expired"
    if row.tries >= MAX_TRIES:
        return "tries"
    digits = "".join(ch for ch in (code or "") if ch.isdigit())
    if len(digits) == 6 and hmac.compare_digest(row.code_hash, _code_hash(index, digits)):
        done = await conn.execute(update(sms_code).where(sms_code.c.id == row.id, sms_code.c.used_ts.is_(None))
                                  .values(used_ts=now, tries=row.tries + 1))
        return "ok" if done.rowcount == 1 else "expired"
    await conn.execute(update(sms_code).where(sms_code.c.id == row.id).values(tries=sms_code.c.tries + 1))
    return "tries" if row.tries + 1 >= MAX_TRIES else "wrong"


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    phone: str
    body: str
    created_ts: int


async def outbox_messages(conn: AsyncConnection, limit: int = 50) -> list[OutboxMessage]:
    rows = await conn.execute(select(sms_outbox).order_by(sms_outbox.c.id.desc()).limit(limit))
    out = []
    for r in rows:
        try:
            number = decrypt(r.phone, PHONE)
        except DecryptionError:  # a key since removed from the ring: show the row without its number
            number = "?"
        out.append(OutboxMessage(r.id, number, r.body, r.created_ts))
    return out
