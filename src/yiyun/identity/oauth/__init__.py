"""OAuth 2.0 / OpenID Connect provider for SMART App Launch v2 apps and backend services.

Routes: `/oauth2/authorize` (GET: consent page, POST: the decision), `/oauth2/token`,
`/oauth2/introspect`, `/oauth2/revoke`, `/oauth2/jwks`; discovery documents are in
`yiyun.identity.smart`; CORS for browser apps in `yiyun.identity.oauth.cors`. See docs/oauth.md.
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    from yiyun.fhir import capability
    from yiyun.identity.oauth.api import router
    from yiyun.identity.oauth.authorize import router as authorize_router
    from yiyun.identity.oauth.cors import BrowserAppCors
    from yiyun.identity.oauth.revocation import RevocationRefresh
    from yiyun.identity.smart import capability_security

    app.include_router(router)
    app.include_router(authorize_router)
    app.add_middleware(RevocationRefresh)
    app.add_middleware(BrowserAppCors)  # outside the session middleware: see its docstring
    if capability_security not in capability.SECURITY_CONTRIBUTORS:
        capability.SECURITY_CONTRIBUTORS.append(capability_security)
