"""Composition root: builds the FastAPI application and mounts every module."""

from __future__ import annotations

import importlib
from contextlib import asynccontextmanager
from importlib import resources

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from yiyun import __version__
from yiyun.core.db import dispose_engines
from yiyun.core.errors import Forbidden, YiyunError
from yiyun.core.logging import configure_logging, get_logger
from yiyun.core.settings import get_settings
from yiyun.fhir import api as fhir_api
from yiyun.fhir import operations as _fhir_operations  # noqa: F401  (registers $validate, $export)
from yiyun.fhir.access import install_policy
from yiyun.fhir.api import BASE_PATH, FHIR_JSON, fhir_error_response, internal_error_outcome
from yiyun.fhir.api import router as fhir_api_router
from yiyun.identity.auth import fhir_request_context
from yiyun.identity.policy import AuthorizationPolicy
from yiyun.identity.smart import router as smart_router
from yiyun.web.health import router as health_router
from yiyun.web.middleware import RequestLogMiddleware
from yiyun.web.pages import router as web_router

log = get_logger("yiyun.http")


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    await app.state.policy.recorder.close()  # buffered audit entries of reads, before the engines go
    await dispose_engines()


def install_access_control(app: FastAPI) -> AuthorizationPolicy:
    """Every FHIR request is authenticated by its bearer token and decided by one policy."""
    policy = AuthorizationPolicy()
    install_policy(policy)
    fhir_api.context_provider = fhir_request_context
    app.state.policy = policy
    return policy


# Roles that may edit and review medical knowledge (clinical and administrative staff).
KNOWLEDGE_EDITOR_ROLES = frozenset({"doctor", "nurse", "pharmacist", "admin"})


async def knowledge_staff(request: Request):
    """The knowledge editor's staff check, backed by signed-in identity (never headers)."""
    from yiyun.identity.auth import require_subject
    from yiyun.knowledge.deps import Staff

    ctx = await require_subject(request)
    if not KNOWLEDGE_EDITOR_ROLES.intersection(ctx.roles):
        raise Forbidden("仅限医务人员使用 (clinical staff only)")
    return Staff(name=ctx.subject)


def _module_routers() -> tuple[list, set[str]]:
    """Routers of the domain modules, and the portal pages they serve."""
    from yiyun.knowledge.api import router as knowledge_api
    from yiyun.knowledge.pages import router as knowledge_pages

    return [knowledge_api, knowledge_pages], {"/knowledge"}


def install_staff_check(app: FastAPI) -> None:
    """The knowledge editor's own staff check reads development headers; in the platform it
    is replaced, for this app only, by one backed by signed-in identity."""
    from yiyun.knowledge.deps import require_staff

    app.dependency_overrides[require_staff] = knowledge_staff


# Modules that mount their own routes (and register FHIR operations and write hooks) on the
# application: each exposes `install(app)`. Order matters only for overlapping paths; all
# are mounted before the FHIR catch-all route.
MODULE_INSTALLERS = (
    "yiyun.identity.web",
    "yiyun.identity.oauth",
    "yiyun.identity.sharing",
    "yiyun.identity.verification",
    "yiyun.identity.auditing",
    "yiyun.hospital.api",
    "yiyun.hospital.consultations",
    "yiyun.hospital.pages",
)


def install_modules(app: FastAPI) -> None:
    for name in MODULE_INSTALLERS:
        importlib.import_module(name).install(app)


def mount_static(app: FastAPI) -> None:
    """The project's own scripts and styles: `web/static/<module>/...` at `/static/...`."""
    folder = resources.files("yiyun.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(folder)), name="static")


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    app = FastAPI(
        title="yiyun 医云",
        version=__version__,
        description="Internet + Healthcare cloud on HL7 FHIR R4",
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
    )

    app.add_middleware(RequestLogMiddleware)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        # the last line of defence: log it and answer in the caller's format, never a bare page
        log.exception("unhandled_error", path=request.url.path)
        if request.url.path.startswith(BASE_PATH):
            return Response(internal_error_outcome("服务器内部错误 (internal error)"), 500, media_type=FHIR_JSON)
        return JSONResponse({"detail": "服务器内部错误"}, status_code=500)

    @app.exception_handler(YiyunError)
    async def yiyun_error(request: Request, exc: YiyunError):
        if request.url.path.startswith(BASE_PATH):
            return fhir_error_response(exc)
        return Response(
            orjson.dumps({"detail": exc.message, "code": exc.code}),
            status_code=exc.status,
            media_type="application/json",
            headers=exc.headers,
        )

    install_access_control(app)
    app.include_router(health_router)
    app.include_router(smart_router)  # before the FHIR catch-all route
    routers, portal_links = _module_routers()
    app.state.portal_links = portal_links  # installers add the portals they serve
    install_modules(app)
    mount_static(app)
    app.include_router(fhir_api_router)
    for r in routers:
        app.include_router(r)
    install_staff_check(app)
    app.include_router(web_router)
    return app
