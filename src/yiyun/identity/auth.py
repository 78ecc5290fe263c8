"""Who is calling: bearer access tokens on `/fhir/R4` and the JSON API.

SMART App Launch v2 (https://hl7.org/fhir/smart-app-launch/app-launch.html#access-fhir-api)
and RFC 6750: the client sends `Authorization: Bearer <access token>`; the tenant, subject,
roles, scopes and patient launch context all come from the signed token, never from a
header the caller chooses. A missing, forged or expired token answers 401 with
`WWW-Authenticate: Bearer` (RFC 6750 §3); what the token may do is decided later by the
access policy (`yiyun.identity.policy`).

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
})
PUBLIC_PREFIXES: tuple[str, ...] = ("/knowledge", "/static", "/api/knowledge/")

REALM = 'Bearer realm="yiyun"'
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
    """A `RequestContext` built from a verified access token."""

    patient: str | None = None  # SMART launch context: limits `patient/` scopes to this compartment
    token_id: str = ""
    fhir_user: str | None = None


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


def fhir_request_context(request: Request, base_url: str) -> AuthContext:
    """The context provider the composition root gives `yiyun.fhir.api`."""
    claims = claims_for(bearer_token(request))
    client = request.client.host if request.client else None
    return context_from_claims(claims, base_url=base_url, client_address=client)


async def require_subject(request: Request) -> AuthContext:
    """FastAPI dependency for `/api` routers: `APIRouter(dependencies=[Depends(require_subject)])`,
    or a parameter `ctx: AuthContext = Depends(require_subject)` to know who calls."""
    ctx = getattr(request.state, "auth_context", None)
    if ctx is None:
        base = str(request.base_url).rstrip("/") + "/fhir/R4"
        ctx = fhir_request_context(request, base)
        request.state.auth_context = ctx
    return ctx
