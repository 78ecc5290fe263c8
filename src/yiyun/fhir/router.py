"""FHIR REST semantics, independent of the web framework.

`FhirRouter.handle` maps (method, path, params, headers, body) to an interaction on a
`FhirRepository` and returns a `FhirResponse`. The HTTP layer (`yiyun.fhir.api`) is a thin
adapter over it, and batch/transaction Bundles (`yiyun.fhir.bundle`) re-enter it for
each entry. https://hl7.org/fhir/R4/http.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources as importlib_resources
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

import orjson

from yiyun.core.errors import BadRequest, MethodNotAllowed, NotFound, YiyunError, information_outcome
from yiyun.fhir.ids import TYPE_RE
from yiyun.fhir.model import StoredResource
from yiyun.fhir.repository import FhirRepository, check_resource_body, parse_if_match
from yiyun.fhir.types import is_resource_type

JSON_TYPES = ("application/fhir+json", "application/json", "json", "application/json+fhir")


@dataclass
class FhirRequest:
    method: str
    path: str  # relative to the FHIR base, without leading slash: "Patient/1/_history"
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON (or None)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def prefer(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in (self.header("prefer") or "").split(";"):
            for item in part.split(","):
                if "=" in item:
                    k, v = item.split("=", 1)
                    out[k.strip().lower()] = v.strip().strip('"')
                elif item.strip():
                    out[item.strip().lower()] = ""
        return out


@dataclass
class FhirResponse:
    status: int
    body: dict | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def json_bytes(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return orjson.dumps(self.body)

    def resource(self) -> dict | None:
        if self.body is None:
            return None
        return orjson.loads(self.body) if isinstance(self.body, bytes) else self.body


OperationHandler = Callable[["FhirRouter", FhirRequest, FhirRepository, str | None, str | None], Awaitable[FhirResponse]]


@dataclass
class Operation:
    name: str  # without "$"
    handler: OperationHandler
    levels: tuple[str, ...]  # "system" | "type" | "instance"
    types: tuple[str, ...] = ()  # empty = any type
    methods: tuple[str, ...] = ("POST",)
    definition: str | None = None
    affects_state: bool = True


class OperationRegistry:
    """Extended operations; domain modules register theirs (e.g. Appointment/$book)."""

    def __init__(self) -> None:
        self._ops: dict[str, list[Operation]] = {}

    def register(self, op: Operation) -> None:
        self._ops.setdefault(op.name, []).append(op)

    def find(self, name: str, level: str, res_type: str | None) -> Operation | None:
        for op in self._ops.get(name, []):
            if level in op.levels and (not op.types or res_type in op.types):
                return op
        return None

    def all(self) -> list[Operation]:
        return [op for ops in self._ops.values() for op in ops]


operations = OperationRegistry()


@lru_cache(maxsize=1)
def _summary_elements() -> dict[str, dict[str, list[str]]]:
    text = importlib_resources.files("yiyun.fhir").joinpath("data/summary-elements.json").read_text()
    return json.loads(text)


def _keep_element(key: str, names: set[str]) -> bool:
    if key in names:
        return True
    # choice elements: deceased[x] appears as deceasedBoolean, deceasedDateTime …
    for n in names:
        if key.startswith(n) and len(key) > len(n) and key[len(n)].isupper():
            return True
    return False


SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def subset_resource(resource: dict, summary: str | None, elements: list[str] | None) -> dict:
    """Apply `_summary` / `_elements` (https://hl7.org/fhir/R4/search.html#summary)."""
    res_type = resource.get("resourceType", "")
    info = _summary_elements().get(res_type, {"summary": [], "mandatory": []})
    base = {"resourceType", "id", "meta"}
    if elements:
        keep = base | set(info["mandatory"]) | set(elements)
    elif summary == "true":
        keep = base | set(info["summary"]) | set(info["mandatory"])
    elif summary == "text":
        keep = base | {"text"} | set(info["mandatory"])
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
        return _tag_subsetted(out)
    else:
        return resource
    out = {k: v for k, v in resource.items() if _keep_element(k, keep)}
    return _tag_subsetted(out)


def _tag_subsetted(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    return {**resource, "meta": meta}


def resource_headers(stored: StoredResource, base_url: str) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": stored.last_modified,
        "Location": f"{base_url}/{stored.res_type}/{stored.res_id}/_history/{stored.version_id}",
    }


def _split(path: str) -> list[str]:
    return [p for p in path.strip("/").split("/") if p != ""]


def _params_without(params: list[tuple[str, str]], *names: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k not in names]


# Parameters that shape the response rather than select resources.
RESULT_PARAMS = ("_format", "_pretty")


class FhirRouter:
    def __init__(self, registry: OperationRegistry | None = None) -> None:
        self.operations = registry or operations

    async def handle(self, req: FhirRequest, repo: FhirRepository) -> FhirResponse:
        parts = _split(req.path)
        method = req.method.upper()
        params = _params_without(req.params, *RESULT_PARAMS)
        req.params = params
        if not parts:
            return await self._system(req, repo, method)
        head = parts[0]
        if head == "metadata" and len(parts) == 1:
            if method != "GET":
                raise MethodNotAllowed("metadata 只支持 GET (metadata supports GET only)")
            from yiyun.fhir.capability import capability_statement

            return FhirResponse(200, capability_statement(repo.ctx.base_url, self.operations))
        if head == "_history" and len(parts) == 1:
            return await self._history(req, repo, None, None)
        if head == "_search" and len(parts) == 1:
            return await self._search(req, repo, None)
        if head.startswith("$"):
            return await self._operation(req, repo, head[1:], "system", None, None, parts[1:])
        if not TYPE_RE.match(head) or not is_resource_type(head):
            raise NotFound(f"不支持的资源类型或路径: {head!r} (unknown resource type)")
        if len(parts) == 1:
            return await self._type(req, repo, method, head)
        second = parts[1]
        if len(parts) == 2 and second == "_search":
            return await self._search(req, repo, head)
        if len(parts) == 2 and second == "_history":
            return await self._history(req, repo, head, None)
        if second.startswith("$"):
            return await self._operation(req, repo, second[1:], "type", head, None, parts[2:])
        res_id = second
        if len(parts) == 2:
            return await self._instance(req, repo, method, head, res_id)
        third = parts[2]
        if third == "_history" and len(parts) == 3:
            return await self._history(req, repo, head, res_id)
        if third == "_history" and len(parts) == 4:
            if method != "GET":
                raise MethodNotAllowed("版本读取只支持 GET (vread supports GET only)")
            stored = await repo.vread(head, res_id, parts[3])
            return self._resource_response(200, stored, repo, req)
        if third.startswith("$") and len(parts) == 3:
            return await self._operation(req, repo, third[1:], "instance", head, res_id, [])
        raise NotFound(f"未知路径 {req.path!r} (unknown path)")

    # --------------------------------------------------------------- levels
    async def _system(self, req: FhirRequest, repo: FhirRepository, method: str) -> FhirResponse:
        if method == "POST":
            from yiyun.fhir.bundle import process_bundle

            return await process_bundle(self, req, repo)
        if method == "GET":
            return await self._search(req, repo, None)
        raise MethodNotAllowed(f"根路径不支持 {method} (method not allowed at the base)")

    async def _type(self, req: FhirRequest, repo: FhirRepository, method: str, res_type: str) -> FhirResponse:
        if method == "GET":
            return await self._search(req, repo, res_type)
        if method == "POST":
            criteria = self._criteria(req.header("if-none-exist"))
            result = await repo.create(check_resource_body(req.body, res_type), if_none_exist=criteria or None)
            status = 201 if result.created else 200
            return self._write_response(status, result.stored, repo, req)
        if method == "PUT":
            self._require_criteria(req)
            result = await repo.conditional_update(
                res_type, req.params, req.body, if_match=parse_if_match(req.header("if-match"))
            )
            return self._write_response(201 if result.created else 200, result.stored, repo, req)
        if method == "DELETE":
            self._require_criteria(req)
            count = await repo.conditional_delete(res_type, req.params)
            return FhirResponse(
                200 if count else 204,
                information_outcome(f"已删除 {count} 个资源 (deleted {count})") if count else None,
            )
        if method == "PATCH":
            self._require_criteria(req)
            matches = await repo.find(res_type, req.params)
            if len(matches) != 1:
                from yiyun.core.errors import PreconditionFailed

                raise PreconditionFailed(f"条件补丁需要恰好匹配一个资源，实际 {len(matches)} 个 (conditional patch)")
            result = await repo.patch(res_type, matches[0].res_id, req.body, if_match=parse_if_match(req.header("if-match")))
            return self._write_response(200, result.stored, repo, req)
        raise MethodNotAllowed(f"{res_type} 不支持 {method} (method not allowed)")

    async def _instance(
        self, req: FhirRequest, repo: FhirRepository, method: str, res_type: str, res_id: str
    ) -> FhirResponse:
        if method in ("GET", "HEAD"):
            stored = await repo.read(res_type, res_id)
            if_none_match = req.header("if-none-match")
            if if_none_match and if_none_match.strip() in (stored.etag, f'"{stored.version_id}"'):
                return FhirResponse(304, None, {"ETag": stored.etag})
            return self._resource_response(200, stored, repo, req)
        if method == "PUT":
            result = await repo.update(res_type, res_id, req.body, if_match=parse_if_match(req.header("if-match")))
            return self._write_response(201 if result.created else 200, result.stored, repo, req)
        if method == "DELETE":
            result = await repo.delete(res_type, res_id, if_match=parse_if_match(req.header("if-match")))
            headers = {"ETag": result.stored.etag} if result else {}
            return FhirResponse(200, information_outcome(f"已删除 {res_type}/{res_id} (deleted)"), headers)
        if method == "PATCH":
            result = await repo.patch(res_type, res_id, req.body, if_match=parse_if_match(req.header("if-match")))
            return self._write_response(200, result.stored, repo, req)
        raise MethodNotAllowed(f"{res_type}/{res_id} 不支持 {method} (method not allowed)")

    # --------------------------------------------------------------- search
    async def _search(self, req: FhirRequest, repo: FhirRepository, res_type: str | None) -> FhirResponse:
        if req.method.upper() not in ("GET", "POST"):
            raise MethodNotAllowed("检索只支持 GET 或 POST _search (search uses GET or POST _search)")
        strict = req.prefer.get("handling") == "strict"
        result = await repo.search(res_type, req.params, strict=strict)
        return FhirResponse(200, self.searchset(result, repo.ctx.base_url, res_type))

    def searchset(self, result: Any, base_url: str, res_type: str | None) -> bytes:
        """Build the searchset Bundle from stored bytes without re-serialising resources."""
        path = f"{base_url}/{res_type}" if res_type else base_url
        links = [{"relation": "self", "url": _link(path, result.self_params)}]
        if result.next_params is not None:
            links.append({"relation": "next", "url": _link(path, result.next_params)})
        if getattr(result, "prev_params", None):
            links.append({"relation": "previous", "url": _link(path, result.prev_params)})
        head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if result.total is not None:
            head["total"] = result.total
        head["link"] = links
        entries = [self._entry(s, base_url, "match", result) for s in result.matches]
        entries += [self._entry(s, base_url, "include", result) for s in result.included]
        if result.issues:
            outcome = {"resourceType": "OperationOutcome", "issue": [i.as_fhir() for i in result.issues]}
            entries.append(
                b'{"resource":' + orjson.dumps(outcome) + b',"search":{"mode":"outcome"}}'
            )
        body = orjson.dumps(head)[:-1]
        if result.summary == "count":
            return body + b"}"
        return body + b',"entry":[' + b",".join(entries) + b"]}"

    def _entry(self, stored: StoredResource, base_url: str, mode: str, result: Any) -> bytes:
        content = stored.content
        if result.summary not in (None, "false", "count") or result.elements:
            content = orjson.dumps(subset_resource(stored.resource, result.summary, result.elements))
        full_url = f"{base_url}/{stored.res_type}/{stored.res_id}".encode()
        return b'{"fullUrl":"' + full_url + b'","resource":' + content + b',"search":{"mode":"' + mode.encode() + b'"}}'

    # -------------------------------------------------------------- history
    async def _history(
        self, req: FhirRequest, repo: FhirRepository, res_type: str | None, res_id: str | None
    ) -> FhirResponse:
        if req.method.upper() != "GET":
            raise MethodNotAllowed("历史只支持 GET (history supports GET only)")
        from yiyun.fhir.history import history_bundle

        return FhirResponse(200, await history_bundle(req, repo, res_type, res_id))

    # ----------------------------------------------------------- operations
    async def _operation(
        self,
        req: FhirRequest,
        repo: FhirRepository,
        name: str,
        level: str,
        res_type: str | None,
        res_id: str | None,
        rest: list[str],
    ) -> FhirResponse:
        op = self.operations.find(name, level, res_type)
        if op is None or rest:
            raise NotFound(f"不支持的操作 ${name} (operation not supported here)")
        if req.method.upper() not in op.methods:
            raise MethodNotAllowed(f"操作 ${name} 不支持 {req.method} (method not allowed for ${name})")
        return await op.handler(self, req, repo, res_type, res_id)

    # -------------------------------------------------------------- helpers
    def _criteria(self, header: str | None) -> list[tuple[str, str]]:
        if not header:
            return []
        from urllib.parse import parse_qsl

        query = header.split("?", 1)[1] if "?" in header else header
        return parse_qsl(query, keep_blank_values=True)

    def _require_criteria(self, req: FhirRequest) -> None:
        if not req.params:
            raise BadRequest("条件操作需要检索条件 (conditional interactions need search criteria)")

    def _resource_response(self, status: int, stored: StoredResource, repo: FhirRepository, req: FhirRequest):
        headers = resource_headers(stored, repo.ctx.base_url)
        headers.pop("Location", None)
        summary = _single(req.params, "_summary")
        elements = _single(req.params, "_elements")
        if summary or elements:
            body = subset_resource(stored.resource, summary, elements.split(",") if elements else None)
            return FhirResponse(status, body, headers)
        return FhirResponse(status, stored.content, headers)

    def _write_response(self, status: int, stored: StoredResource, repo: FhirRepository, req: FhirRequest):
        headers = resource_headers(stored, repo.ctx.base_url)
        prefer = req.prefer.get("return", "representation").lower()
        if prefer == "minimal":
            return FhirResponse(status, None, headers)
        if prefer == "operationoutcome":
            return FhirResponse(status, information_outcome(f"{stored.res_type}/{stored.res_id} 已保存 (saved)"), headers)
        return FhirResponse(status, stored.content, headers)


def _single(params: list[tuple[str, str]], name: str) -> str | None:
    for k, v in params:
        if k == name:
            return v
    return None


def _link(path: str, params: list[tuple[str, str]]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


__all__ = [
    "FhirRequest",
    "FhirResponse",
    "FhirRouter",
    "Operation",
    "OperationRegistry",
    "YiyunError",
    "operations",
    "subset_resource",
]
