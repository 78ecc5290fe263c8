"""Composition root: builds the FastAPI application and mounts every module."""

from __future__ import annotations

from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from yiyun import __version__
from yiyun.core.db import dispose_engines
from yiyun.core.errors import YiyunError
from yiyun.core.logging import configure_logging, get_logger
from yiyun.core.settings import get_settings
from yiyun.fhir import operations as _fhir_operations  # noqa: F401  (registers $validate, $export)
from yiyun.fhir.api import BASE_PATH, FHIR_JSON, fhir_error_response, internal_error_outcome
from yiyun.fhir.api import router as fhir_api_router
from yiyun.web.health import router as health_router
from yiyun.web.middleware import RequestLogMiddleware
from yiyun.web.pages import router as web_router

log = get_logger("yiyun.http")


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    await dispose_engines()


def _module_routers() -> tuple[list, set[str]]:
    """Routers of the domain modules, and the portal pages they serve."""
    from yiyun.knowledge.api import router as knowledge_api
    from yiyun.knowledge.pages import router as knowledge_pages

    return [knowledge_api, knowledge_pages], {"/knowledge"}


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

    app.include_router(health_router)
    app.include_router(fhir_api_router)
    routers, portal_links = _module_routers()
    for r in routers:
        app.include_router(r)
    app.state.portal_links = portal_links
    app.include_router(web_router)
    return app
