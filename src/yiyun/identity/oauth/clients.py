"""The client registry: apps and backend services allowed to ask for tokens.

Three kinds (SMART App Launch v2, https://hl7.org/fhir/smart-app-launch/client-authentication.html):

- `public`: an app that cannot keep a secret (a browser or phone app); it identifies
  itself with `client_id` only and must use PKCE (`client-public`);
- `confidential`: an app with a server side; it authenticates with a secret
  (`client_secret_basic`, `client-confidential-symmetric`) or, when it registered a key
  set, with a signed assertion (`private_key_jwt`, `client-confidential-asymmetric`);
- `backend`: a service acting for its organisation without a user (SMART Backend
  Services, https://hl7.org/fhir/smart-app-launch/backend-services.html), with the
  `client_credentials` grant and `system/` scopes; a key set, or a secret for simple
  integrations.

The secret is shown once at registration and stored only as its SHA-256 digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest, NotFound
from yiyun.fhir.model import now_us
from yiyun.identity import audit
from yiyun.identity.accounts import get_tenant
from yiyun.identity.oauth import cors
from yiyun.identity.oauth_tables import oauth_client
from yiyun.identity.scopes import ResourceScope, normalise, parse_scopes

KINDS = ("public", "confidential", "backend")
# Signature algorithms accepted for client assertions: SMART Backend Services requires
# servers to support RS384 and ES384 (https://hl7.org/fhir/smart-app-launch/backend-services.html#signature-verification).
ASSERTION_ALGS = ("RS384", "ES384")


@dataclass(frozen=True)
class Client:
    client_id: str
    tenant: str
    name: str
    kind: str
    redirect_uris: tuple[str, ...]
    scopes: str
    jwks: dict | None
    jwks_url: str | None
    status: str
    secret_hash: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def grant_types(self) -> tuple[str, ...]:
        return ("client_credentials",) if self.kind == "backend" else ("authorization_code", "refresh_token")

    def check_secret(self, secret: str) -> bool:
        return bool(self.secret_hash) and hmac.compare_digest(self.secret_hash, secret_digest(secret))


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _from_row(row) -> Client:
    return Client(
        client_id=row.client_id, tenant=row.tenant, name=row.name, kind=row.kind,
        redirect_uris=tuple(json.loads(row.redirect_uris or "[]")), scopes=row.scopes,
        jwks=json.loads(row.jwks) if row.jwks else None, jwks_url=row.jwks_url, status=row.status,
        secret_hash=row.secret_hash,
    )


def check_redirect_uri(uri: str) -> str:
    """https, or http only to this machine (RFC 8252 §7.3 loopback redirects); no fragment
    (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.fragment or not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        raise BadRequest(f"回调地址 {uri!r} 不合法：须为 https（本机可用 http），且不含 # 片段 (invalid redirect URI)")
    if len(uri) > 2000:
        raise BadRequest("回调地址过长 (redirect URI too long)")
    return uri


def check_jwks(jwks: dict) -> dict:
    """A JSON Web Key Set of public RSA or EC keys (RFC 7517 §5)."""
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise BadRequest("密钥集须为含 keys 数组的 JWKS (a JWKS with a non-empty keys array is required)")
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC"):
            raise BadRequest("密钥集只接受 RSA 或 EC 公钥 (only RSA and EC public keys are accepted)")
        if "d" in key:
            raise BadRequest("密钥集含有私钥，请只登记公钥 (the key set contains a private key: register public keys only)")
    try:
        KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError) as exc:
        raise BadRequest(f"密钥集无法读取 (unreadable JWKS: {exc})") from exc
    return {"keys": keys}


def check_jwks_url(url: str) -> str:
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        raise BadRequest(f"密钥集地址 {url!r} 须为 https (the JWKS URL must use https)")
    return url


def check_registered_scopes(kind: str, scope: str) -> str:
    scope = normalise(scope)
    parsed = parse_scopes(scope)
    contexts = {s.context for s in parsed if isinstance(s, ResourceScope)}
    if not contexts:
        raise BadRequest("至少登记一个资源范围，如 patient/*.rs (register at least one resource scope)")
    if kind == "backend" and contexts != {"system"}:
        raise BadRequest("后台服务只能登记 system/ 范围 (backend services take system/ scopes only)")
    if kind != "backend" and "system" in contexts:
        raise BadRequest("面向用户的应用不能登记 system/ 范围 (user-facing apps cannot take system/ scopes)")
    return scope


async def create_client(
    conn: AsyncConnection, *, tenant: str, name: str, kind: str, redirect_uris: list[str], scope: str,
    jwks: dict | None = None, jwks_url: str | None = None, created_by: str = "operator",
) -> tuple[Client, str | None]:
    """Register a client; returns it and its secret (None for public and key-set clients),
    which is shown once and never stored."""
    await get_tenant(conn, tenant)
    if kind not in KINDS:
        raise BadRequest(f"客户端类型须为 {' | '.join(KINDS)} (client type must be one of {', '.join(KINDS)})")
    name = name.strip()
    if not name or len(name) > 200:
        raise BadRequest("客户端名称不能为空，最多 200 字 (client name required, at most 200 characters)")
    uris = [check_redirect_uri(u) for u in redirect_uris]
    if kind == "backend" and uris:
        raise BadRequest("后台服务不使用回调地址 (backend services have no redirect URI)")
    if kind != "backend" and not uris:
        raise BadRequest("应用至少需要一个回调地址 (apps need at least one redirect URI)")
    scope = check_registered_scopes(kind, scope)
    if kind == "public" and (jwks or jwks_url):
        raise BadRequest("公开客户端不能登记密钥 (public clients have no keys)")
    if jwks and jwks_url:
        raise BadRequest("密钥集与密钥集地址只能选一个 (give a JWKS or a JWKS URL, not both)")
    jwks = check_jwks(jwks) if jwks else None
    jwks_url = check_jwks_url(jwks_url) if jwks_url else None
    secret = None if kind == "public" or jwks or jwks_url else secrets.token_urlsafe(32)
    client_id = secrets.token_urlsafe(16)
    await conn.execute(insert(oauth_client).values(
        client_id=client_id, tenant=tenant, name=name, kind=kind,
        secret_hash=secret_digest(secret) if secret else None, redirect_uris=json.dumps(uris),
        scopes=scope, jwks=json.dumps(jwks) if jwks else None, jwks_url=jwks_url, status="active",
        created_ts=now_us(),
    ))
    await audit.append(conn, [audit.AuditEntry(
        tenant=tenant, actor=created_by, action="client-registered", resource_type="OAuthClient",
        resource_id=client_id[:64], purpose="SYSADMIN",
        detail={"name": name, "kind": kind, "scope": scope, "redirect_uris": uris,
                "auth": "private_key_jwt" if (jwks or jwks_url) else ("client_secret_basic" if secret else "none")},
    )])
    client = Client(client_id, tenant, name, kind, tuple(uris), scope, jwks, jwks_url, "active",
                    secret_digest(secret) if secret else None)
    cors.origins_changed()
    return client, secret


async def get_client(conn: AsyncConnection, client_id: str) -> Client | None:
    if not client_id or len(client_id) > 64:
        return None
    row = (await conn.execute(select(oauth_client).where(oauth_client.c.client_id == client_id))).first()
    return _from_row(row) if row else None


async def list_clients(conn: AsyncConnection, tenant: str | None = None) -> list[Client]:
    query = select(oauth_client).order_by(oauth_client.c.tenant, oauth_client.c.created_ts)
    if tenant:
        query = query.where(oauth_client.c.tenant == tenant)
    return [_from_row(r) for r in await conn.execute(query)]


async def disable_client(conn: AsyncConnection, client_id: str, *, by: str = "operator") -> Client:
    """Stop a client: it gets no new tokens, and its grants are revoked."""
    from yiyun.identity.oauth.grants import revoke_client_grants

    client = await get_client(conn, client_id)
    if client is None:
        raise NotFound(f"客户端 {client_id} 不存在 (no such client)")
    await conn.execute(update(oauth_client).where(oauth_client.c.client_id == client_id).values(status="disabled"))
    revoked = await revoke_client_grants(conn, client_id)
    cors.origins_changed()
    await audit.append(conn, [audit.AuditEntry(
        tenant=client.tenant, actor=by, action="client-disabled", resource_type="OAuthClient",
        resource_id=client_id[:64], purpose="SYSADMIN", detail={"grants_revoked": revoked},
    )])
    return client
