"""The token, introspection and revocation endpoints' logic (no HTTP here: see `api.py`).

- Token endpoint, RFC 6749 §3.2 with the grants `authorization_code` (+ PKCE S256,
  RFC 7636), `refresh_token` (§6, rotated) and `client_credentials` (§4.4, SMART Backend
  Services https://hl7.org/fhir/smart-app-launch/backend-services.html).
- Client authentication (RFC 6749 §2.3): `client_secret_basic` (also `client_secret_post`),
  `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9), or only `client_id` for
  public clients.
- Introspection (RFC 7662) and revocation (RFC 7009).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace
from urllib.parse import unquote

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import Unauthorized
from yiyun.core.settings import get_settings
from yiyun.identity.oauth import grants
from yiyun.identity.oauth.clients import ASSERTION_ALGS, Client, get_client
from yiyun.identity.oauth.errors import (
    OAuthError,
    invalid_client,
    invalid_grant,
    invalid_request,
    invalid_scope,
    unauthorized_client,
)
from yiyun.identity.oauth.scopeset import intersect_scopes, narrower_or_equal
from yiyun.identity.tokens import TokenClaims, issue_access_token, verify_access_token

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART Backend Services: "exp ... no more than five minutes in the future".
MAX_ASSERTION_LIFETIME_S = 300
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1


def token_url(request_base: str | None = None) -> set[str]:
    """The token endpoint URL a client assertion must name as `aud`: the configured public
    one only. (Not the Host the request names: an assertion made for another server, sent
    here with that server's Host, must not pass.)"""
    return {get_settings().base_url.rstrip("/") + "/oauth2/token"}


# ------------------------------------------------------ client authentication
@dataclass(frozen=True)
class Authenticated:
    client: Client
    method: str  # none | client_secret_basic | client_secret_post | private_key_jwt


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_client("客户端凭据格式错误 (malformed Basic credentials)", basic=True) from exc
    client_id, sep, secret = raw.partition(":")
    if not sep:
        raise invalid_client("客户端凭据格式错误 (malformed Basic credentials)", basic=True)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before being joined
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


async def authenticate_client(conn: AsyncConnection, form: dict[str, str], authorization: str,
                              audiences: set[str], seen: dict | None = None) -> Authenticated:
    """Who is calling the endpoint; refuses unknown, disabled or badly authenticated clients.

    `seen` receives the client as soon as it is known (`seen["client"]`), so that a refusal
    is recorded in the audit chain of the client's organisation."""
    token = _SEEN.set(seen if seen is not None else {})
    try:
        return await _authenticate(conn, form, authorization, audiences)
    finally:
        _SEEN.reset(token)


_SEEN: ContextVar[dict] = ContextVar("oauth_seen_client")


async def _authenticate(conn: AsyncConnection, form: dict[str, str], authorization: str,
                        audiences: set[str]) -> Authenticated:
    basic = _basic_credentials(authorization) if authorization else None
    assertion_type = form.get("client_assertion_type")
    methods = [m for m, present in (("basic", basic), ("post", "client_secret" in form),
                                    ("jwt", assertion_type or "client_assertion" in form)) if present]
    if len(methods) > 1:
        raise invalid_request("只能使用一种客户端认证方式 (use exactly one client authentication method)")
    if basic:
        client = await _active_client(conn, basic[0], basic=True)
        if not client.check_secret(basic[1]):
            raise invalid_client("客户端认证失败 (client authentication failed)", basic=True)
        _check_form_client_id(form, client)
        return Authenticated(client, "client_secret_basic")
    if methods == ["post"]:
        client = await _active_client(conn, form.get("client_id", ""))
        if not client.check_secret(form["client_secret"]):
            raise invalid_client("客户端认证失败 (client authentication failed)")
        return Authenticated(client, "client_secret_post")
    if methods == ["jwt"]:
        if assertion_type != JWT_BEARER:
            raise invalid_client(f"不支持的客户端断言类型 (client_assertion_type must be {JWT_BEARER})")
        client = await verify_client_assertion(conn, form.get("client_assertion", ""), audiences)
        _check_form_client_id(form, client)
        return Authenticated(client, "private_key_jwt")
    client = await _active_client(conn, form.get("client_id", ""))
    if client.kind != "public":
        raise invalid_client("此客户端须认证 (this client must authenticate)", basic=bool(client.secret_hash))
    return Authenticated(client, "none")


def _check_form_client_id(form: dict[str, str], client: Client) -> None:
    if form.get("client_id") and form["client_id"] != client.client_id:
        raise invalid_client("client_id 与认证的客户端不符 (client_id does not match the authenticated client)")


async def _active_client(conn: AsyncConnection, client_id: str, *, basic: bool = False) -> Client:
    if not client_id:
        raise invalid_client("缺少 client_id (client_id missing)", basic=basic)
    if len(client_id) > 64 or "\x00" in client_id:
        raise invalid_client("未知或已停用的客户端 (unknown or disabled client)", basic=basic)
    client = await get_client(conn, client_id)
    if client is not None:
        _SEEN.get()["client"] = client
    if client is None or not client.active:
        raise invalid_client("未知或已停用的客户端 (unknown or disabled client)", basic=basic)
    return client


def _unverified(assertion: str) -> tuple[dict, dict]:
    try:
        head, body, _sig = assertion.split(".")
        pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
        header = json.loads(base64.urlsafe_b64decode(pad(head)))
        claims = json.loads(base64.urlsafe_b64decode(pad(body)))
    except (ValueError, TypeError) as exc:
        raise invalid_client("客户端断言不是有效的 JWT (client assertion is not a JWT)") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise invalid_client("客户端断言不是有效的 JWT (client assertion is not a JWT)")
    return header, claims


async def verify_client_assertion(conn: AsyncConnection, assertion: str, audiences: set[str]) -> Client:
    """RFC 7523 §3 and SMART Backend Services: signed RS384/ES384 by a registered key,
    iss = sub = client_id, aud = the token endpoint, exp at most five minutes ahead, jti
    never seen before."""
    if not assertion or len(assertion) > 16_000:
        raise invalid_client("缺少客户端断言 (client_assertion missing)")
    header, unverified = _unverified(assertion)
    client = await _active_client(conn, str(unverified.get("iss") or ""))
    if header.get("alg") not in ASSERTION_ALGS:
        raise invalid_client(f"断言签名算法须为 {' 或 '.join(ASSERTION_ALGS)} (assertion must be signed {' or '.join(ASSERTION_ALGS)})")
    keys = await _client_keys(client, header.get("kid"))
    claims = _verify_signature(assertion, header, keys)
    now = int(time.time())
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise invalid_client("断言的 iss 与 sub 须为 client_id (assertion iss and sub must be the client_id)")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a in audiences for a in auds):
        raise invalid_client("断言的 aud 须为本服务的令牌地址 (assertion aud must be this token endpoint URL)")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise invalid_client("断言缺少 exp (assertion exp missing)")
    if exp <= now - 5:
        raise invalid_client("断言已过期 (assertion expired)")
    if exp > now + MAX_ASSERTION_LIFETIME_S + 5:
        raise invalid_client("断言有效期不得超过 5 分钟 (assertion exp more than five minutes ahead)")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and nbf > now + 5:
        raise invalid_client("断言尚未生效 (assertion not yet valid)")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255 or "\x00" in jti:
        raise invalid_client("断言缺少 jti (assertion jti missing)")
    if not await grants.remember_assertion(conn, client.client_id, jti, int(exp)):
        raise invalid_client("断言的 jti 已用过 (assertion jti already used)")
    return client


def _verify_signature(assertion: str, header: dict, keys: list[dict]) -> dict:
    alg = header["alg"]
    kty = "RSA" if alg.startswith("RS") else "EC"
    candidates = [k for k in keys if k.get("kty") == kty and (not header.get("kid") or k.get("kid") == header["kid"])
                  and k.get("alg", alg) == alg]
    for data in candidates:
        try:
            key = (RSAKey if kty == "RSA" else ECKey).import_key(data)
            return dict(jwt.decode(assertion, key, algorithms=[alg]).claims)
        except (JoseError, ValueError, TypeError):
            continue
    raise invalid_client("断言签名无法用登记的密钥验证 (assertion signature does not verify with a registered key)")


_remote_jwks: dict[str, tuple[float, list[dict]]] = {}
JWKS_CACHE_S = 300
# A key id not in the cached set is looked up again (the client rotated its keys), but at
# most this often, so unknown kids cannot make the server fetch on every request.
JWKS_REFETCH_S = 30


async def _client_keys(client: Client, kid: object = None) -> list[dict]:
    if client.jwks:
        return list(client.jwks.get("keys") or [])
    if not client.jwks_url:
        raise invalid_client("此客户端未登记密钥 (this client has no registered keys)")
    cached = _remote_jwks.get(client.jwks_url)
    if cached:
        age = time.monotonic() - cached[0]
        known = not kid or any(k.get("kid") == kid for k in cached[1])
        if age < JWKS_CACHE_S and (known or age < JWKS_REFETCH_S):
            return cached[1]
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5, follow_redirects=False) as http:
            resp = await http.get(client.jwks_url)
        keys = resp.json().get("keys") if resp.status_code == 200 else None
        KeySet.import_key_set({"keys": keys})
    except (httpx.HTTPError, ValueError, TypeError, AttributeError, JoseError) as exc:
        raise invalid_client("无法取得客户端的密钥集 (could not fetch the client's JWKS)") from exc
    keys = [k for k in keys if isinstance(k, dict)]
    _remote_jwks[client.jwks_url] = (time.monotonic(), keys)
    return keys


# --------------------------------------------------------------------- grants
@dataclass
class Issued:
    """A token response and what the audit log records of it."""

    body: dict
    claims: TokenClaims
    grant_type: str
    client: Client


def _require(form: dict[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not form.get(n)]
    if missing:
        raise invalid_request(f"缺少参数 {', '.join(missing)} (missing parameter {', '.join(missing)})")
    return [form[n] for n in names]


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


async def _issue(conn: AsyncConnection, grant: grants.Grant, client: Client, grant_type: str, *,
                 scope: str | None = None, nonce: str | None = None, with_refresh: bool = True) -> Issued:
    scope = scope or grant.scope
    token, claims = issue_access_token(
        subject=grant.subject, tenant=grant.tenant, scope=scope, roles=grant.roles, fhir_user=grant.fhir_user,
        patient=grant.patient,
        client_id=client.client_id, grant_id=grant.grant_id,
    )
    body: dict = {"access_token": token, "token_type": "Bearer", "expires_in": max(0, claims.expires - int(time.time())),
                  "scope": claims.scope}
    if claims.patient:
        body["patient"] = claims.patient
        # standalone launch: the app itself shows whose record it is showing
        # (https://hl7.org/fhir/smart-app-launch/app-launch.html#response-5)
        body["need_patient_banner"] = True
    if with_refresh and grant.refresh_kind:
        body["refresh_token"] = await grants.create_refresh_token(conn, grant)
    if "openid" in scope.split() and client.kind != "backend":
        from yiyun.identity.oauth.jwks import issue_id_token

        body["id_token"] = issue_id_token(grant, client, nonce=nonce, access_token=token)
    return Issued(body, claims, grant_type, client)


async def authorization_code_grant(conn: AsyncConnection, auth: Authenticated, form: dict[str, str]) -> Issued:
    client = auth.client
    if "authorization_code" not in client.grant_types:
        raise unauthorized_client("此客户端不能使用授权码 (this client may not use the authorization code grant)")
    code, redirect_uri = _require(form, "code", "redirect_uri")
    verifier = form.get("code_verifier", "")
    use = await grants.use_code(conn, code)
    if use.status == "unknown" or use.client_id != client.client_id:
        raise invalid_grant("授权码无效 (invalid authorization code)")
    if use.status == "replayed":
        err = invalid_grant("授权码已被使用，由它签发的令牌已全部撤销 (authorization code reused: tokens issued from it are revoked)")
        err.revoke_grant = use.grant_id
        raise err
    if use.status == "expired":
        raise invalid_grant("授权码已过期 (authorization code expired)")
    if redirect_uri != use.redirect_uri:
        raise invalid_grant("redirect_uri 与授权请求不一致 (redirect_uri does not match the authorization request)")
    if not _VERIFIER.match(verifier):
        raise invalid_grant("缺少或不合法的 code_verifier (code_verifier missing or malformed)")
    if not hmac.compare_digest(s256(verifier), use.code_challenge or ""):
        raise invalid_grant("code_verifier 与 code_challenge 不符 (PKCE verification failed)")
    grant = await grants.get_grant(conn, use.grant_id)
    if grant is None or grant.revoked:
        raise invalid_grant("授权已被撤销 (authorization revoked)")
    return await _issue(conn, grant, client, "authorization_code", nonce=use.nonce)


async def refresh_token_grant(conn: AsyncConnection, auth: Authenticated, form: dict[str, str]) -> Issued:
    client = auth.client
    if "refresh_token" not in client.grant_types:
        raise unauthorized_client("此客户端不能使用刷新令牌 (this client may not use refresh tokens)")
    (token,) = _require(form, "refresh_token")
    use = await grants.use_refresh_token(conn, token)
    grant = await grants.get_grant(conn, use.grant_id) if use.grant_id else None
    if grant is None or grant.client_id != client.client_id:
        raise invalid_grant("刷新令牌无效 (invalid refresh token)")
    if use.status == "reused":
        err = invalid_grant("刷新令牌已被使用过，整个授权已撤销 (refresh token reused: the whole grant is revoked)")
        err.revoke_grant = grant.grant_id
        raise err
    if use.status == "expired" or grant.expires_ts <= grants.now_us():
        raise invalid_grant("刷新令牌已过期 (refresh token expired)")
    if grant.revoked:
        raise invalid_grant("授权已被撤销 (authorization revoked)")
    roles = await grants.user_still_member(conn, grant)
    if roles is None or ("patient" in grant.roles and "patient" not in roles):
        err = invalid_grant("用户账号已停用或已不在该机构 (the user's account is no longer active there)")
        err.revoke_grant, err.revoke_reason = grant.grant_id, "account no longer active in the tenant"
        raise err
    if roles != grant.roles:
        grant = replace(grant, roles=roles)
    scope = None
    if form.get("scope"):
        # RFC 6749 §6: a refresh may narrow the scope, never widen it
        if not narrower_or_equal(form["scope"], grant.scope):
            raise invalid_scope("刷新时不能扩大授权范围 (a refresh cannot widen the scope)")
        scope = form["scope"]
    return await _issue(conn, grant, client, "refresh_token", scope=scope)


async def client_credentials_grant(conn: AsyncConnection, auth: Authenticated, form: dict[str, str]) -> Issued:
    client = auth.client
    if "client_credentials" not in client.grant_types:
        raise unauthorized_client("只有后台服务可以使用 client_credentials (only backend services may use client_credentials)")
    if auth.method == "none":
        raise invalid_client("后台服务须认证 (backend services must authenticate)")
    (requested,) = _require(form, "scope")
    scope = intersect_scopes(requested, client.scopes, contexts=("system",))
    if not scope:
        raise invalid_scope("请求的范围不在此客户端登记的 system/ 范围内 (requested scopes are outside the client's registered system/ scopes)")
    grant = await grants.create_grant(conn, client_id=client.client_id, tenant=client.tenant,
                                      subject=f"service:{client.client_id}", roles=(), scope=scope)
    return await _issue(conn, grant, client, "client_credentials", with_refresh=False)


GRANTS = {
    "authorization_code": authorization_code_grant,
    "refresh_token": refresh_token_grant,
    "client_credentials": client_credentials_grant,
}


async def revoke_replayed(conn: AsyncConnection, grant_id: str, *, client_address: str | None = None,
                          reason: str = "replayed code or refresh token") -> int | None:
    """Revoke the grant of a replayed code or refresh token (or of a user no longer allowed);
    returns until when its id must be refused (µs), None when there is no such grant."""
    from yiyun.identity import audit

    grant = await grants.get_grant(conn, grant_id)
    if grant is None:
        return None
    await grants.revoke_grant(conn, grant_id)
    await audit.append(conn, [audit.AuditEntry(
        tenant=grant.tenant, actor=f"client:{grant.client_id}", action="token-revoked", outcome="ok",
        resource_type="OAuthClient", resource_id=grant.client_id[:64], client_address=client_address,
        detail={"kind": "grant", "id": grant_id, "reason": reason},
    )])
    return grants.now_us() + grants.access_lifetime_us() + 300 * grants.SECOND


# ----------------------------------------------- introspection, revocation
def access_token_claims(token: str) -> TokenClaims | None:
    if token.count(".") != 2:
        return None
    try:
        return verify_access_token(token)
    except Unauthorized:
        return None


async def introspect(conn: AsyncConnection, caller: Client, token: str) -> dict:
    """RFC 7662 §2.2; a token of another tenant is reported inactive, as a resource server
    of one organisation learns nothing about another's tokens."""
    claims = access_token_claims(token)
    if claims is not None:
        if claims.tenant != caller.tenant or claims.expires <= time.time():
            return {"active": False}
        if claims.client_id and await grants.is_revoked(conn, claims.token_id, claims.grant_id):
            return {"active": False}
        out = {"active": True, "token_type": "Bearer", "scope": claims.scope, "client_id": claims.client_id,
               "sub": claims.subject, "exp": claims.expires, "tenant": claims.tenant, "jti": claims.token_id,
               "iss": "yiyun", "aud": get_settings().base_url.rstrip("/") + "/fhir/R4"}
        if claims.patient:
            out["patient"] = claims.patient
        if claims.fhir_user:
            out["fhirUser"] = claims.fhir_user
        return {k: v for k, v in out.items() if v is not None}
    use, grant = await grants.find_refresh_token(conn, token)
    if use.status != "ok" or grant is None or grant.revoked or grant.tenant != caller.tenant:
        return {"active": False}
    out = {"active": True, "token_type": "refresh_token", "scope": grant.scope, "client_id": grant.client_id,
           "sub": grant.subject, "exp": grant.expires_ts // grants.SECOND, "tenant": grant.tenant}
    if grant.patient:
        out["patient"] = grant.patient
    return out


async def revoke(conn: AsyncConnection, caller: Client, token: str, hint: str | None) -> tuple[str, str, int] | None:
    """RFC 7009 §2.1: revoke `token` if it was issued to `caller`. Returns (kind, id, expires µs)
    of what was revoked, None when there was nothing to revoke (unknown tokens are not an error)."""
    if hint not in (None, "", "access_token", "refresh_token"):
        raise OAuthError("unsupported_token_type", "不支持的令牌类型 (unsupported token type hint)")
    claims = access_token_claims(token)
    if claims is not None:
        if claims.client_id != caller.client_id:
            raise unauthorized_client("此令牌不是签发给该客户端的 (the token was not issued to this client)")
        expires = claims.expires * grants.SECOND
        await grants.revoke_access_token(conn, claims.token_id, claims.expires)
        return "access", claims.token_id, expires
    use, grant = await grants.find_refresh_token(conn, token)
    if grant is None:
        return None
    if grant.client_id != caller.client_id:
        raise unauthorized_client("此令牌不是签发给该客户端的 (the token was not issued to this client)")
    # RFC 7009 §2.1: revoking a refresh token also invalidates the access tokens of its grant
    await grants.revoke_grant(conn, grant.grant_id)
    return "grant", grant.grant_id, grants.now_us() + grants.access_lifetime_us() + 300 * grants.SECOND
