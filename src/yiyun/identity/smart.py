"""SMART App Launch v2 discovery: `/.well-known/smart-configuration`.

https://hl7.org/fhir/smart-app-launch/conformance.html — served at the FHIR base
(`/fhir/R4/.well-known/smart-configuration`) and, for clients that look there, at the
server root. The document lists only what this server does today: it verifies bearer
tokens that operators issue (`yiyun token issue`) and enforces SMART v2 scopes
(`permission-v2`, `permission-patient`, `permission-user`, `context-standalone-patient` is
NOT claimed: there is no launch flow yet). The authorization and token endpoints do not
exist yet, so they are not advertised; the spec requires `token_endpoint` for a complete
document, which this server will add with its sign-in flow.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()

SCOPES_SUPPORTED = [
    "system/*.cruds", "system/*.rs", "user/*.cruds", "user/*.rs", "patient/*.cruds", "patient/*.rs",
    "system/*.read", "system/*.write", "user/*.read", "user/*.write", "patient/*.read", "patient/*.write",
]


def smart_configuration(base_url: str) -> dict:
    return {
        "issuer": "yiyun",
        "capabilities": ["permission-v2", "permission-v1", "permission-patient", "permission-user"],
        "scopes_supported": SCOPES_SUPPORTED,
        "code_challenge_methods_supported": ["S256"],
        # Tokens are issued to operators and backend services out of band for now
        # (`yiyun token issue`); no OAuth grant is served over HTTP yet.
        "grant_types_supported": [],
        "token_endpoint_auth_methods_supported": [],
        "response_types_supported": [],
        "fhir_base": base_url,
        "token_endpoint_available": False,
        "authorization_endpoint_available": False,
    }


@router.get("/.well-known/smart-configuration", include_in_schema=False)
@router.get("/fhir/R4/.well-known/smart-configuration", include_in_schema=False)
async def well_known(request: Request) -> JSONResponse:
    base = str(request.base_url).rstrip("/") + "/fhir/R4"
    return JSONResponse(smart_configuration(base), headers={"Cache-Control": "public, max-age=3600"})
