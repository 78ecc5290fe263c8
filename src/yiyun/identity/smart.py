"""SMART App Launch v2 and OpenID Connect discovery.

- `/.well-known/smart-configuration` (https://hl7.org/fhir/smart-app-launch/conformance.html),
  served at the FHIR base (`/fhir/R4/.well-known/smart-configuration`) and, for clients that
  look there, at the server root;
- `/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3).

Endpoints are named with the configured public base URL (`YIYUN_BASE_URL`), which is also
the `aud` of every access token and the OpenID issuer. The capabilities list only what
`yiyun.identity.oauth` implements: standalone launch of patient and user apps, public and
confidential (secret or key-pair) clients, backend services, SMART v1 and v2 scopes,
refresh tokens and ID tokens.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from yiyun.core.settings import get_settings

router = APIRouter()

SCOPES_SUPPORTED = [
    "openid", "fhirUser", "launch/patient", "offline_access", "online_access",
    "system/*.cruds", "system/*.rs", "user/*.cruds", "user/*.rs", "patient/*.cruds", "patient/*.rs",
    "system/*.read", "system/*.write", "user/*.read", "user/*.write", "patient/*.read", "patient/*.write",
]
CAPABILITIES = [
    "launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "context-standalone-patient", "sso-openid-connect", "permission-offline", "permission-online",
    "permission-patient", "permission-user", "permission-v1", "permission-v2",
]
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
ASSERTION_ALGS = ["RS384", "ES384"]  # SMART Backend Services: servers SHALL support both


def _base() -> str:
    return get_settings().base_url.rstrip("/")


def endpoints() -> dict[str, str]:
    base = _base()
    return {
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "token_endpoint": f"{base}/oauth2/token",
        "introspection_endpoint": f"{base}/oauth2/introspect",
        "revocation_endpoint": f"{base}/oauth2/revoke",
        "jwks_uri": f"{base}/oauth2/jwks",
    }


def smart_configuration() -> dict:
    return {
        "issuer": _base(),
        **endpoints(),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
        "fhir_base": _base() + "/fhir/R4",
    }


def openid_configuration() -> dict:
    return {
        "issuer": _base(),
        **endpoints(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "offline_access", "online_access"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "ui_locales_supported": ["zh-CN", "en"],
    }


@router.get("/.well-known/smart-configuration", include_in_schema=False)
@router.get("/fhir/R4/.well-known/smart-configuration", include_in_schema=False)
async def well_known() -> JSONResponse:
    return JSONResponse(smart_configuration(), headers={"Cache-Control": "public, max-age=3600"})


@router.get("/.well-known/openid-configuration", include_in_schema=False)
async def openid_well_known() -> JSONResponse:
    return JSONResponse(openid_configuration(), headers={"Cache-Control": "public, max-age=3600"})


def capability_security() -> dict:
    """`CapabilityStatement.rest.security` for SMART (https://hl7.org/fhir/smart-app-launch/conformance.html#declaring-support-for-oauth2-endpoints)."""
    urls = endpoints()
    return {
        # the FHIR API and the token endpoints answer CORS for allowed origins (yiyun.identity.oauth.cors)
        "cors": True,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
                     "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": urls["authorization_endpoint"]},
                {"url": "token", "valueUri": urls["token_endpoint"]},
                {"url": "introspect", "valueUri": urls["introspection_endpoint"]},
                {"url": "revoke", "valueUri": urls["revocation_endpoint"]},
            ],
        }],
    }
