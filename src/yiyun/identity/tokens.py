"""Access tokens: short-lived signed JWTs (RFC 7519, HS256) carrying tenant, roles and SMART scopes.

Verifying one costs an HMAC, not a database query, which keeps authorisation cheap on
every FHIR read. `aud` is the FHIR base URL (SMART App Launch v2: the token is meant for
this FHIR server, https://hl7.org/fhir/smart-app-launch/app-launch.html#request-authorization-code)
and is checked. Tokens issued through OAuth carry `client_id` and the `grant` they belong to,
so that revoking one token, or the whole grant, takes effect at the bearer check
(`yiyun.identity.auth`, revoked ids kept current by `yiyun.identity.oauth`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from yiyun.core.errors import Unauthorized
from yiyun.core.settings import get_settings
from yiyun.identity.keys import signing_key
from yiyun.identity.scopes import normalise

ISSUER = "yiyun"


def fhir_audience() -> str:
    """The `aud` of every access token: the configured base URL's FHIR endpoint."""
    return get_settings().base_url.rstrip("/") + "/fhir/R4"


def _claims_registry() -> jwt.JWTClaimsRegistry:
    return jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER}, exp={"essential": True},
                                 aud={"essential": True, "value": fhir_audience()}, leeway=5)


def _key() -> OctKey:
    return OctKey.import_key(signing_key())


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    tenant: str
    roles: tuple[str, ...]
    scope: str
    expires: int
    token_id: str
    fhir_user: str | None = None
    # SMART launch context: the patient whose compartment `patient/` scopes are limited to
    # (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#launch-context-arriving-with-your-access_token)
    patient: str | None = None
    client_id: str | None = None  # the OAuth client the token was issued to
    grant_id: str | None = None  # the authorisation (refresh-token family) it was issued under


def issue_access_token(
    *, subject: str, tenant: str, scope: str, roles: tuple[str, ...] = (), minutes: int | None = None,
    fhir_user: str | None = None, audience: str | None = None, patient: str | None = None,
    client_id: str | None = None, grant_id: str | None = None,
) -> tuple[str, TokenClaims]:
    settings = get_settings()
    now = int(time.time())
    lifetime = 60 * (minutes if minutes is not None else settings.access_token_minutes)
    claims = TokenClaims(subject, tenant, tuple(roles), normalise(scope), now + lifetime, uuid.uuid4().hex, fhir_user,
                         patient, client_id, grant_id)
    payload = {
        "iss": ISSUER,
        "sub": subject,
        "aud": audience or fhir_audience(),
        "iat": now,
        "exp": claims.expires,
        "jti": claims.token_id,
        "tenant": tenant,
        "roles": list(roles),
        "scope": claims.scope,
    }
    if fhir_user:
        payload["fhirUser"] = fhir_user
    if patient:
        payload["patient"] = patient
    if client_id:
        payload["client_id"] = client_id
    if grant_id:
        payload["grant"] = grant_id
    token = jwt.encode({"alg": "HS256", "typ": "JWT"}, payload, _key())
    return token, claims


def verify_access_token(token: str) -> TokenClaims:
    """Refuse forged, expired or malformed tokens with 401 and nothing else said."""
    try:
        claims = jwt.decode(token, _key(), algorithms=["HS256"]).claims
        _claims_registry().validate(claims)
    except (JoseError, ValueError, TypeError) as exc:
        raise Unauthorized("访问令牌无效或已过期 (invalid or expired access token)",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc
    try:
        return TokenClaims(
            subject=str(claims["sub"]), tenant=str(claims["tenant"]), roles=tuple(claims.get("roles") or ()),
            scope=str(claims.get("scope", "")), expires=int(claims["exp"]), token_id=str(claims.get("jti", "")),
            fhir_user=claims.get("fhirUser"), patient=str(claims["patient"]) if claims.get("patient") else None,
            client_id=str(claims["client_id"]) if claims.get("client_id") else None,
            grant_id=str(claims["grant"]) if claims.get("grant") else None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise Unauthorized("访问令牌内容不完整 (incomplete access token)") from exc
