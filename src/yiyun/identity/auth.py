"""Who is calling: bearer access tokens (or the web session cookie) on `/fhir/R4` and the JSON API.

SMART App Launch v2 (https://hl7.org/fhir/smart-app-launch/app-launch.html#access-fhir-api)
and RFC 6750: the client sends `Authorization: Bearer <access token>`; the tenant, subject,
roles, scopes and patient launch context all come from the signed token, never from a
header the caller chooses. A missing, forged or expired token answers 401 with
`WWW-Authenticate: Bearer` (RFC 6750 §3); what the token may do is decided later by the
access policy (`yiyun.identity.policy`).

Browsers signed in on the web pages are identified by the session cookie instead
(`yiyun.identity.sessions`): `require_subject` and the FHIR API accept either. A request
carrying `Authorization` is judged by its token alone; with the cookie, requests that change
something must also send the session's CSRF token (header `X-CSRF-Token` or form field
`csrf_token`), else 403.

Public routes are listed here, in one place (DESIGN.md "Authenticated by default").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Request

from yiyun.core.errors import Unauthorized
from yiyun.fhir.model import RequestContext
from yiyun.identity.keys import signing_key
from yiyun.identity.tokens import TokenClaims, verify_access_token

# Exact paths anyone may call, and path prefixes whose routes are all public.
PUBLIC_PATHS: frozenset[str] = frozenset({
    "/", "/healthz", "/readyz", "/fhir/R4/metadata",
    "/.well-known/smart-configuration", "/fhir/R4/.well-known/smart-configuration",
    "/.well-known/openid-configuration", "/oauth2/authorize", "/oauth2/token", "/oauth2/introspect",
    "/oauth2/revoke", "/oauth2/jwks",
})
PUBLIC_PREFIXES: tuple[str, ...] = ("/knowledge", "/static", "/api/knowledge/", "/api/hospital/directory/")

REALM = 'Bearer realm="yiyun"'
# Revoked OAuth access-token ids and grant ids → when they stop mattering (µs); kept
# current by `yiyun.identity.oauth.revocation` (RFC 7009).
REVOKED_TOKEN_IDS: dict[str, int] = {}
# The token's subject names who acts; in-process services act as "system" without a token,
# so no token may claim that name.
RESERVED_SUBJECTS = frozenset({"system", ""})


def is_public(path: str) -> bool:
    from yiyun.knowledge.api import PUBLIC_PATHS as KNOWLEDGE_PUBLIC

    if path in PUBLIC_PATHS:
        return True
    if any(path == p.rstrip("/") or path.startswith(p if p.endswith("/") else p + "/") for p in PUBLIC_PREFIXES):
        return True
    return any(path == p or ("{" in p and path.startswith(p.split("{", 1)[0])) for p in KNOWLEDGE_PUBLIC)


@dataclass
class AuthContext(RequestContext):
    """A `RequestContext` built from a verified access token or a signed-in web session."""

    patient: str | None = None  # SMART launch context: limits `patient/` scopes to this compartment
    token_id: str = ""
    fhir_user: str | None = None
    # Set for web sessions (`yiyun.identity.sessions`): the account behind the subject.
    account_id: str | None = None
    display_name: str | None = None
    via_session: bool = False


def _unauthorized(message: str, error: str | None = None) -> Unauthorized:
    challenge = REALM + (f', error="{error}"' if error else "")
    return Unauthorized(message, headers={"WWW-Authenticate": challenge})


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("需要登录：请提供访问令牌 (missing bearer access token)")
    return token.strip()


@lru_cache(maxsize=4096)
def _verified(token: str, key: bytes) -> TokenClaims:
    # Cached by (token, key): a signature is checked once per token, not on every request.
    # Expiry is checked again on every use below; only successes are cached.
    return verify_access_token(token)


def claims_for(token: str) -> TokenClaims:
    try:
        claims = _verified(token, signing_key())
    except Unauthorized as err:
        raise _unauthorized(err.message, "invalid_token") from err
    if claims.expires <= time.time() - 5:
        raise _unauthorized("访问令牌已过期 (access token expired)", "invalid_token")
    if claims.subject in RESERVED_SUBJECTS or not claims.tenant:
        raise _unauthorized("访问令牌内容不合法 (invalid access token)", "invalid_token")
    if claims.client_id and (claims.token_id in REVOKED_TOKEN_IDS or (claims.grant_id or "") in REVOKED_TOKEN_IDS):
        raise _unauthorized("访问令牌已被撤销 (access token revoked)", "invalid_token")
    return claims


def context_from_claims(claims: TokenClaims, *, base_url: str, client_address: str | None) -> AuthContext:
    return AuthContext(
        tenant=claims.tenant[:64],
        subject=claims.subject,
        roles=claims.roles,
        scopes=tuple(claims.scope.split()),
        client_address=client_address,
        base_url=base_url,
        patient=claims.patient,
        token_id=claims.token_id,
        fhir_user=claims.fhir_user,
    )


def _has_session_cookie(request: Request) -> bool:
    from yiyun.identity.sessions import COOKIE

    return "authorization" not in request.headers and bool(request.cookies.get(COOKIE))


def fhir_request_context(request: Request, base_url: str) -> AuthContext:
    """The context provider the composition root gives `yiyun.fhir.api`: the bearer token,
    else the session cookie (resolved beforehand by `sessions.SessionAuthMiddleware`)."""
    if _has_session_cookie(request):
        from yiyun.core.errors import Forbidden
        from yiyun.identity.sessions import CSRF_MESSAGE

        found = getattr(request.state, "yiyun_session_auth", None)
        if isinstance(found, AuthContext):
            return found
        if found == "csrf":
            raise Forbidden(CSRF_MESSAGE)
        raise _unauthorized("登录已失效，请重新登录 (session expired or unknown: sign in again)")
    claims = claims_for(bearer_token(request))
    client = request.client.host if request.client else None
    return context_from_claims(claims, base_url=base_url, client_address=client)


async def require_subject(request: Request) -> AuthContext:
    """FastAPI dependency for `/api` routers: `APIRouter(dependencies=[Depends(require_subject)])`,
    or a parameter `ctx: AuthContext = Depends(require_subject)` to know who calls.

    Accepts `Authorization: Bearer <token>` or the web session cookie; cookie requests with
    an unsafe method need the CSRF token (`X-CSRF-Token` header or `csrf_token` form field)."""
    ctx = getattr(request.state, "auth_context", None)
    if ctx is None:
        if _has_session_cookie(request):
            from yiyun.identity.sessions import cookie_context

            ctx = await cookie_context(request)  # 401 when expired, 403 without the CSRF token
        else:
            base = str(request.base_url).rstrip("/") + "/fhir/R4"
            ctx = fhir_request_context(request, base)
        request.state.auth_context = ctx
    return ctx
