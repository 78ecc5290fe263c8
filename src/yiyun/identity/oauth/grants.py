"""Grants, authorisation codes, refresh tokens and revocation: the stored side of OAuth.

- An authorisation code is single use and lives 60 seconds (RFC 6749 §4.1.2 recommends
  at most 10 minutes; SMART apps exchange it at once). A code presented twice revokes the
  grant and every token issued from it (RFC 6749 §4.1.2: "the authorization server ...
  SHOULD revoke (when possible) all tokens previously issued based on that authorization code").
- Refresh tokens are opaque 256-bit values, rotated on every use; presenting a rotated one
  again means it leaked, so the whole grant is revoked (OAuth 2.0 Security BCP, RFC 9700 §4.14.2).
- Revoking a grant or an access token records its id in `oauth_revoked` until every access
  token it covers has expired; the bearer check refuses those ids (`yiyun.identity.auth`).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.settings import get_settings
from yiyun.fhir.model import now_us
from yiyun.identity.oauth_tables import oauth_assertion, oauth_code, oauth_grant, oauth_refresh_token, oauth_revoked

SECOND = 1_000_000
CODE_LIFETIME_S = 60
# Refresh-token lifetimes by the scope that asked for them (SMART App Launch v2
# https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-a-refresh-token):
# online_access lasts while the user could still be at the app, offline_access for months.
REFRESH_LIFETIME_S = {"online_access": 12 * 3600, "offline_access": 90 * 24 * 3600}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Grant:
    grant_id: str
    client_id: str
    tenant: str
    subject: str
    roles: tuple[str, ...]
    scope: str
    patient: str | None
    fhir_user: str | None
    expires_ts: int
    revoked: bool
    account_id: str | None = None

    @property
    def refresh_kind(self) -> str | None:
        words = self.scope.split()
        return "offline_access" if "offline_access" in words else ("online_access" if "online_access" in words else None)


def _grant(row) -> Grant:
    return Grant(row.grant_id, row.client_id, row.tenant, row.subject, tuple(r for r in row.roles.split(",") if r),
                 row.scope, row.patient, row.fhir_user, int(row.expires_ts), row.revoked_ts is not None, row.account_id)


def access_lifetime_us() -> int:
    return get_settings().access_token_minutes * 60 * SECOND


async def create_grant(
    conn: AsyncConnection, *, client_id: str, tenant: str, subject: str, roles: tuple[str, ...], scope: str,
    patient: str | None = None, fhir_user: str | None = None, account_id: str | None = None,
) -> Grant:
    now = now_us()
    words = scope.split()
    kind = "offline_access" if "offline_access" in words else ("online_access" if "online_access" in words else None)
    lifetime = REFRESH_LIFETIME_S[kind] * SECOND if kind else access_lifetime_us()
    grant_id = str(uuid.uuid4())
    await _drop_expired_grants(conn, client_id, now)
    await conn.execute(insert(oauth_grant).values(
        grant_id=grant_id, client_id=client_id, tenant=tenant, subject=subject, account_id=account_id,
        roles=",".join(roles), scope=scope, patient=patient, fhir_user=fhir_user, created_ts=now,
        expires_ts=now + lifetime, revoked_ts=None,
    ))
    return Grant(grant_id, client_id, tenant, subject, tuple(roles), scope, patient, fhir_user, now + lifetime, False,
                 account_id)


async def user_still_member(conn: AsyncConnection, grant: Grant) -> tuple[str, ...] | None:
    """The user's current roles in the grant's tenant, or None when the account is no longer
    active there: a refresh must not outlive the user's own access (a disabled account, a
    doctor who left the hospital)."""
    from yiyun.identity.tables import account, membership

    if grant.account_id is None:
        return grant.roles
    row = (await conn.execute(
        select(account.c.status, membership.c.roles).select_from(account.join(
            membership, (membership.c.account_id == account.c.id) & (membership.c.tenant == grant.tenant)))
        .where(account.c.id == grant.account_id))).first()
    if row is None or row.status != "active":
        return None
    return tuple(r for r in row.roles.split(",") if r)


async def _drop_expired_grants(conn: AsyncConnection, client_id: str, now: int) -> None:
    """A client's grants that ended a day ago or more, with their refresh tokens: nothing
    can use them any more (a backend service makes one grant per token request)."""
    cutoff = now - 24 * 3600 * SECOND
    ended = select(oauth_grant.c.grant_id).where(oauth_grant.c.client_id == client_id, oauth_grant.c.expires_ts < cutoff)
    await conn.execute(delete(oauth_refresh_token).where(oauth_refresh_token.c.grant_id.in_(ended)))
    await conn.execute(delete(oauth_grant).where(oauth_grant.c.client_id == client_id,
                                                 oauth_grant.c.expires_ts < cutoff))


async def get_grant(conn: AsyncConnection, grant_id: str) -> Grant | None:
    row = (await conn.execute(select(oauth_grant).where(oauth_grant.c.grant_id == grant_id))).first()
    return _grant(row) if row else None


# ------------------------------------------------------------------- codes
async def create_code(conn: AsyncConnection, *, grant_id: str, client_id: str, redirect_uri: str,
                      code_challenge: str, nonce: str | None) -> str:
    code = new_secret()
    # spent and expired codes are kept a day (to recognise a late replay), then dropped
    await conn.execute(delete(oauth_code).where(oauth_code.c.expires_ts < now_us() - 24 * 3600 * SECOND))
    await conn.execute(insert(oauth_code).values(
        code_hash=digest(code), grant_id=grant_id, client_id=client_id, redirect_uri=redirect_uri,
        code_challenge=code_challenge, nonce=nonce, expires_ts=now_us() + CODE_LIFETIME_S * SECOND, used_ts=None,
    ))
    return code


@dataclass(frozen=True)
class CodeUse:
    status: str  # ok | unknown | replayed | expired
    grant_id: str | None = None
    client_id: str | None = None
    redirect_uri: str | None = None
    code_challenge: str | None = None
    nonce: str | None = None


async def use_code(conn: AsyncConnection, code: str) -> CodeUse:
    """Mark the code used, once: the conditional update is the single-use guarantee, also
    between two requests racing with the same code."""
    h = digest(code)
    row = (await conn.execute(select(oauth_code).where(oauth_code.c.code_hash == h))).first()
    if row is None:
        return CodeUse("unknown")
    now = now_us()
    claimed = await conn.execute(
        update(oauth_code).where(oauth_code.c.code_hash == h, oauth_code.c.used_ts.is_(None)).values(used_ts=now)
    )
    status = "replayed" if claimed.rowcount != 1 else ("expired" if row.expires_ts <= now else "ok")
    return CodeUse(status, row.grant_id, row.client_id, row.redirect_uri, row.code_challenge, row.nonce)


# ---------------------------------------------------------- refresh tokens
async def create_refresh_token(conn: AsyncConnection, grant: Grant) -> str:
    token = new_secret()
    await conn.execute(insert(oauth_refresh_token).values(
        token_hash=digest(token), grant_id=grant.grant_id, created_ts=now_us(), expires_ts=grant.expires_ts,
        used_ts=None,
    ))
    return token


@dataclass(frozen=True)
class RefreshUse:
    status: str  # ok | unknown | reused | expired
    grant_id: str | None = None


async def use_refresh_token(conn: AsyncConnection, token: str) -> RefreshUse:
    h = digest(token)
    row = (await conn.execute(select(oauth_refresh_token).where(oauth_refresh_token.c.token_hash == h))).first()
    if row is None:
        return RefreshUse("unknown")
    now = now_us()
    claimed = await conn.execute(update(oauth_refresh_token).where(
        oauth_refresh_token.c.token_hash == h, oauth_refresh_token.c.used_ts.is_(None)).values(used_ts=now))
    if claimed.rowcount != 1:
        return RefreshUse("reused", row.grant_id)
    return RefreshUse("expired" if row.expires_ts <= now else "ok", row.grant_id)


async def find_refresh_token(conn: AsyncConnection, token: str) -> tuple[RefreshUse, Grant | None]:
    """For introspection and revocation: the token's state without using it."""
    row = (await conn.execute(select(oauth_refresh_token).where(oauth_refresh_token.c.token_hash == digest(token)))).first()
    if row is None:
        return RefreshUse("unknown"), None
    status = "reused" if row.used_ts is not None else ("expired" if row.expires_ts <= now_us() else "ok")
    return RefreshUse(status, row.grant_id), await get_grant(conn, row.grant_id)


# -------------------------------------------------------------- revocation
def _insert_ignore(conn: AsyncConnection, table, values: dict, keys: list[str]):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)


async def revoke_grant(conn: AsyncConnection, grant_id: str) -> int:
    """Revoke the grant, its refresh tokens and every access token issued under it.

    Access tokens under the grant are refused for as long as any of them can live."""
    now = now_us()
    await conn.execute(update(oauth_grant).where(oauth_grant.c.grant_id == grant_id,
                                                 oauth_grant.c.revoked_ts.is_(None)).values(revoked_ts=now))
    await conn.execute(update(oauth_refresh_token).where(oauth_refresh_token.c.grant_id == grant_id,
                                                         oauth_refresh_token.c.used_ts.is_(None)).values(used_ts=now))
    await conn.execute(_insert_ignore(conn, oauth_revoked, {
        "token_id": grant_id, "kind": "grant", "revoked_ts": now, "expires_ts": now + access_lifetime_us() + 300 * SECOND,
    }, ["token_id"]))
    return now


async def revoke_access_token(conn: AsyncConnection, token_id: str, expires_s: int) -> int:
    now = now_us()
    await conn.execute(_insert_ignore(conn, oauth_revoked, {
        "token_id": token_id[:64], "kind": "access", "revoked_ts": now, "expires_ts": expires_s * SECOND,
    }, ["token_id"]))
    return now


async def revoke_client_grants(conn: AsyncConnection, client_id: str) -> int:
    rows = await conn.execute(select(oauth_grant.c.grant_id).where(
        oauth_grant.c.client_id == client_id, oauth_grant.c.revoked_ts.is_(None)))
    ids = [r.grant_id for r in rows]
    for grant_id in ids:
        await revoke_grant(conn, grant_id)
    return len(ids)


async def revoked_since(conn: AsyncConnection, since_us: int) -> list[tuple[str, int]]:
    now = now_us()
    rows = await conn.execute(select(oauth_revoked.c.token_id, oauth_revoked.c.expires_ts).where(
        oauth_revoked.c.revoked_ts >= since_us, oauth_revoked.c.expires_ts > now))
    return [(r.token_id, int(r.expires_ts)) for r in rows]


async def is_revoked(conn: AsyncConnection, *ids: str | None) -> bool:
    wanted = [i for i in ids if i]
    if not wanted:
        return False
    row = (await conn.execute(select(oauth_revoked.c.token_id).where(oauth_revoked.c.token_id.in_(wanted)))).first()
    return row is not None


# -------------------------------------------------------- client assertions
async def remember_assertion(conn: AsyncConnection, client_id: str, jti: str, expires_s: int) -> bool:
    """False when this client already used `jti` (RFC 7523 §3: the server may keep a list
    of used ids until they expire to refuse replays)."""
    now = now_us()
    await conn.execute(delete(oauth_assertion).where(oauth_assertion.c.client_id == client_id,
                                                     oauth_assertion.c.expires_ts < now))
    try:
        async with conn.begin_nested():
            await conn.execute(insert(oauth_assertion).values(client_id=client_id, jti=jti,
                                                              expires_ts=expires_s * SECOND))
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class ActiveGrant:
    grant_id: str
    client_name: str
    scope: str
    created_ts: int
    expires_ts: int


async def active_grants_of(conn: AsyncConnection, account_id: str, tenant: str) -> list[ActiveGrant]:
    """What a user has allowed apps to do and has not withdrawn (for the "authorised apps" page)."""
    from yiyun.identity.oauth_tables import oauth_client

    rows = await conn.execute(
        select(oauth_grant.c.grant_id, oauth_client.c.name, oauth_grant.c.scope, oauth_grant.c.created_ts,
               oauth_grant.c.expires_ts)
        .select_from(oauth_grant.join(oauth_client, oauth_client.c.client_id == oauth_grant.c.client_id))
        .where(oauth_grant.c.account_id == account_id, oauth_grant.c.tenant == tenant,
               oauth_grant.c.revoked_ts.is_(None), oauth_grant.c.expires_ts > now_us())
        .order_by(oauth_grant.c.created_ts.desc()))
    return [ActiveGrant(r.grant_id, r.name, r.scope, int(r.created_ts), int(r.expires_ts)) for r in rows]
