"""FastAPI adapter over the FHIR router: `/fhir/R4/...`.

It only translates HTTP to `FhirRequest` and `FhirResponse` back; all FHIR semantics live
in `yiyun.fhir.router`. Each request is one unit of work: committed when the handler
returns, rolled back on any error.
"""

from __future__ import annotations

from typing import Callable
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, TooLarge, Unauthorized, YiyunError, operation_outcome, Issue
from yiyun.core.settings import get_settings
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.fhir.router import JSON_TYPES, FhirRequest, FhirResponse, FhirRouter

FHIR_JSON = "application/fhir+json; charset=utf-8"
BASE_PATH = "/fhir/R4"

router = APIRouter()
fhir_router = FhirRouter()


def refuse_anonymous(request: Request, base_url: str) -> RequestContext:
    """The context provider until the composition root installs one: nobody gets in."""
    raise Unauthorized("需要登录 (authentication required)", headers={"WWW-Authenticate": 'Bearer realm="yiyun"'})


# Who is asking: set by the composition root (`yiyun.app`) to the identity module's
# bearer-token check. The FHIR layer itself knows nothing of tokens.
context_provider: Callable[[Request, str], RequestContext] = refuse_anonymous

# Interactions anyone may call (https://hl7.org/fhir/smart-app-launch/conformance.html:
# the CapabilityStatement is readable without a token).
PUBLIC = {("GET", "metadata"), ("HEAD", "metadata")}


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + BASE_PATH


def request_context(request: Request, path: str = "") -> RequestContext:
    """Who is asking: the installed provider, or nobody for the public interactions."""
    ctx = getattr(request.state, "fhir_context", None)
    if ctx is not None:
        return ctx
    if (request.method, path.strip("/")) in PUBLIC:
        client = request.client.host if request.client else None
        return RequestContext(tenant=get_settings().default_tenant, subject="anonymous", base_url=base_url(request),
                              client_address=client)
    return context_provider(request, base_url(request))


def fhir_error_response(err: YiyunError) -> Response:
    headers = dict(err.headers)
    return Response(orjson.dumps(err.outcome()), status_code=err.status, media_type=FHIR_JSON, headers=headers)


def _check_format(request: Request) -> None:
    fmt = request.query_params.get("_format")
    if fmt and fmt not in JSON_TYPES:
        raise YiyunError(f"只支持 JSON 格式，不支持 _format={fmt} (only JSON is supported)", status=406, code="not-supported")
    accept = request.headers.get("accept", "")
    if accept and "xml" in accept and "json" not in accept and "*/*" not in accept:
        raise YiyunError("只支持 JSON 格式 (only application/fhir+json is supported)", status=406, code="not-supported")


async def _read_body(request: Request) -> tuple[object, list[tuple[str, str]]]:
    """Parse the body: JSON (FHIR or JSON Patch), or form fields for POST _search."""
    limit = get_settings().max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"请求体超过上限 {limit} 字节 (body too large)")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > limit:
            raise TooLarge(f"请求体超过上限 {limit} 字节 (body too large)")
    if not raw:
        return None, []
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return None, parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    if ctype and not ctype.endswith("json"):
        raise YiyunError(f"不支持的内容类型 {ctype} (unsupported media type)", status=415, code="not-supported")
    try:
        return orjson.loads(bytes(raw)), []
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"请求体不是合法的 JSON: {exc} (malformed JSON)", code="structure") from exc


def to_http(resp: FhirResponse, pretty: bool = False) -> Response:
    body = resp.json_bytes()
    if pretty and body:
        body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
    if resp.status == 304 or (resp.status == 204 and not body):
        return Response(status_code=resp.status, headers=resp.headers)
    headers = dict(resp.headers)
    media_type = headers.pop("Content-Type", FHIR_JSON)
    return Response(body, status_code=resp.status, media_type=media_type, headers=headers)


@router.api_route(
    BASE_PATH + "/{path:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"],
    include_in_schema=False,
)
async def fhir_endpoint(path: str, request: Request) -> Response:
    try:
        ctx = request_context(request, path)
        _check_format(request)
        body, form = await _read_body(request)
        params = parse_qsl(request.url.query, keep_blank_values=True) + form
        headers = {k.lower(): v for k, v in request.headers.items()}
        freq = FhirRequest(request.method, path, params, headers, body)
        write = request.method not in ("GET", "HEAD")
        async with unit_of_work(get_engine(), write=write) as conn:
            repo = FhirRepository(conn, ctx, validate=get_settings().validate_on_write)
            resp = await fhir_router.handle(freq, repo)
            flush = getattr(repo.policy, "flush", None)
            if flush is not None:
                await flush()  # audit entries of the writes commit with them
        for start in repo.after_commit:
            start()
        return to_http(resp, pretty=request.query_params.get("_pretty") == "true")
    except YiyunError as err:
        return fhir_error_response(err)


@router.get(BASE_PATH, include_in_schema=False)
async def fhir_base_get(request: Request) -> Response:
    return await fhir_endpoint("", request)


@router.post(BASE_PATH, include_in_schema=False)
async def fhir_base_post(request: Request) -> Response:
    return await fhir_endpoint("", request)


def internal_error_outcome(message: str) -> bytes:
    return orjson.dumps(operation_outcome([Issue("fatal", "exception", message)]))
