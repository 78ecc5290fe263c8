"""Batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

A transaction is all or nothing: it runs inside the caller's unit of work and any failure
raises, so the whole unit rolls back. Entries are processed in the order the spec
prescribes (DELETE, POST, PUT/PATCH, GET), `urn:uuid:` and other fullUrls are replaced by
the ids the server assigns, and conditional references (`Patient?identifier=…`) are
resolved by search. A batch runs each entry in its own savepoint, so one failing entry
changes nothing and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from yiyun.core.errors import BadRequest, NotFound, PreconditionFailed, Unprocessable, YiyunError
from yiyun.fhir.ids import is_valid_id, new_id
from yiyun.fhir.model import StoredResource
from yiyun.fhir.patch import apply_patch
from yiyun.fhir.repository import FhirRepository, PlannedWrite, check_resource_body, parse_if_match, validation_issues
from yiyun.fhir.types import is_resource_type

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    index: int
    method: str
    url: str
    res_type: str | None
    res_id: str | None
    query: list[tuple[str, str]]
    resource: dict | None
    full_url: str | None
    request: dict
    response: dict = field(default_factory=dict)
    plan: PlannedWrite | None = None
    stored: StoredResource | None = None


def _relative_url(url: str, base_url: str) -> str:
    if url.startswith(base_url):
        url = url[len(base_url):]
    elif "://" in url:
        url = urlsplit(url).path + (("?" + urlsplit(url).query) if urlsplit(url).query else "")
        marker = "/fhir/R4/"
        url = url.split(marker, 1)[1] if marker in url else url
    return url.lstrip("/")


def parse_entries(bundle: Any, base_url: str) -> tuple[str, list[Entry]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("请求体必须是 Bundle 资源 (the body must be a Bundle)", expression=["Bundle"])
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(
            f"Bundle.type 必须是 batch 或 transaction，实际为 {kind!r} (only batch and transaction can be posted)",
            expression=["Bundle.type"],
        )
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        raise BadRequest("Bundle.entry 必须是数组 (Bundle.entry must be an array)", expression=["Bundle.entry"])
    entries = []
    for i, e in enumerate(raw):
        where = f"Bundle.entry[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("request"), dict):
            raise BadRequest(f"{where} 缺少 request (each entry needs a request)", expression=[f"{where}.request"])
        req = e["request"]
        method = str(req.get("method", "")).upper()
        url = req.get("url")
        if method not in ORDER or not isinstance(url, str) or not url:
            raise BadRequest(f"{where}.request 需要合法的 method 和 url", expression=[f"{where}.request"])
        rel = _relative_url(url, base_url)
        path, _, qs = rel.partition("?")
        segs = [s for s in path.split("/") if s]
        res_type = segs[0] if segs and is_resource_type(segs[0]) else None
        res_id = segs[1] if len(segs) >= 2 and not segs[1].startswith(("$", "_")) else None
        resource = e.get("resource")
        if method in ("POST", "PUT") and kind == "transaction":
            check_resource_body(resource, res_type)
        entries.append(
            Entry(i, method, rel, res_type, res_id, parse_qsl(qs, keep_blank_values=True), resource,
                  e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else None, req)
        )
    return kind, entries


async def process_bundle(router, req, repo: FhirRepository):
    from yiyun.fhir.router import FhirResponse

    kind, entries = parse_entries(req.body, repo.ctx.base_url)
    prefer_return = req.prefer.get("return", "representation").lower()
    if kind == "batch":
        out = await _batch(router, req, repo, entries, prefer_return)
    else:
        out = await run_transaction(router, req, repo, entries, prefer_return)
    return FhirResponse(200, {"resourceType": "Bundle", "type": f"{kind}-response", "entry": out})


# ------------------------------------------------------------------ batch
async def _batch(router, req, repo, entries: list[Entry], prefer_return: str) -> list[dict]:
    from yiyun.fhir.router import FhirRequest

    results: list[dict] = [{} for _ in entries]
    for e in sorted(entries, key=lambda x: ORDER[x.method]):
        sub = FhirRequest(e.method, e.url.split("?")[0], e.query, _entry_headers(e, req), e.resource)
        try:
            async with repo.conn.begin_nested():
                resp = await router.handle(sub, repo)
            results[e.index] = _response_entry(resp, prefer_return)
        except YiyunError as err:
            results[e.index] = {"response": {"status": str(err.status), "outcome": err.outcome()}}
    return results


def _entry_headers(e: Entry, req) -> dict[str, str]:
    headers = {"prefer": req.header("prefer") or ""}
    for src, dst in (("ifMatch", "if-match"), ("ifNoneExist", "if-none-exist"), ("ifNoneMatch", "if-none-match")):
        if isinstance(e.request.get(src), str):
            headers[dst] = e.request[src]
    return headers


def _response_entry(resp, prefer_return: str) -> dict:
    out: dict[str, Any] = {"response": {"status": str(resp.status)}}
    for h, k in (("Location", "location"), ("ETag", "etag"), ("Last-Modified", "lastModified")):
        if h in resp.headers:
            out["response"][k] = resp.headers[h]
    body = resp.resource()
    if body is not None:
        if body.get("resourceType") == "OperationOutcome" and resp.status >= 400:
            out["response"]["outcome"] = body
        elif prefer_return != "minimal":
            out["resource"] = body
    return out


# ------------------------------------------------------------ transaction
async def run_transaction(router, req, repo: FhirRepository, entries: list[Entry], prefer_return: str) -> list[dict]:
    """Plan every write, rewrite references, persist in bulk, then run the reads."""
    ids: dict[str, str] = {}  # fullUrl -> "Type/id"
    seen: set[tuple[str, str]] = set()
    ordered = sorted(entries, key=lambda x: ORDER[x.method])
    await _resolve_identities(repo, ordered, ids)
    await _rewrite_references(repo, entries, ids)
    plans = await _plan_writes(repo, ordered, seen)
    await repo.persist_planned(plans)
    for e in ordered:
        if e.plan is not None:
            e.stored = e.plan.stored
    return await _responses(router, req, repo, entries, prefer_return)


async def _resolve_identities(repo: FhirRepository, ordered: list[Entry], ids: dict[str, str]) -> None:
    for e in ordered:
        where = f"Bundle.entry[{e.index}]"
        if e.method in ("GET", "HEAD"):
            continue
        if e.res_type is None:
            raise BadRequest(f"{where}.request.url 不是资源地址: {e.url!r}", expression=[f"{where}.request.url"])
        if e.method == "POST":
            if_none_exist = e.request.get("ifNoneExist")
            if isinstance(if_none_exist, str) and if_none_exist:
                criteria = parse_qsl(if_none_exist.split("?", 1)[-1], keep_blank_values=True)
                matches = await repo.find(e.res_type, criteria)
                if len(matches) > 1:
                    raise PreconditionFailed(f"{where} 的条件创建匹配到多个资源 (ifNoneExist matched several)")
                if matches:
                    e.res_id = matches[0].res_id
                    e.stored = matches[0]
                    e.response = {"status": "200 OK"}
            if e.res_id is None:
                e.res_id = new_id()
        elif e.method in ("PUT", "PATCH", "DELETE") and e.res_id is None:
            if not e.query:
                raise BadRequest(f"{where}.request.url 缺少资源 id 或条件 (needs an id or criteria)")
            matches = await repo.find(e.res_type, e.query)
            if len(matches) > 1:
                raise PreconditionFailed(f"{where} 的条件操作匹配到多个资源 (conditional {e.method} matched several)")
            if matches:
                e.res_id = matches[0].res_id
            elif e.method == "PUT":
                body_id = (e.resource or {}).get("id")
                e.res_id = body_id if is_valid_id(body_id) else new_id()
            elif e.method == "PATCH":
                raise NotFound(f"{where} 的条件补丁没有匹配的资源 (conditional patch matched nothing)")
        if e.res_id is not None and not is_valid_id(e.res_id):
            raise BadRequest(f"{where} 的资源 id 不合法: {e.res_id!r}", expression=[f"{where}.request.url"])
        if e.full_url and e.res_id is not None:
            ids[e.full_url] = f"{e.res_type}/{e.res_id}"


async def _rewrite_references(repo: FhirRepository, entries: list[Entry], ids: dict[str, str]) -> None:
    """One walk over every written resource: fullUrls become the assigned `Type/id`, and
    conditional references (`Patient?identifier=…`) become the one resource they match."""
    cache: dict[str, str] = {}
    for e in entries:
        if e.resource is None or e.method not in ("POST", "PUT"):
            continue
        where = f"Bundle.entry[{e.index}].resource"
        for node in _reference_nodes(e.resource):
            ref = node["reference"]
            if ref in ids:
                node["reference"] = ids[ref]
            elif ref.startswith(("urn:uuid:", "urn:oid:")):
                raise BadRequest(
                    f"{where} 引用了事务中不存在的条目 {ref!r} (unresolvable reference in the transaction)",
                    expression=[where],
                )
            elif "?" in ref and "/" not in ref.split("?", 1)[0]:
                if ref not in cache:
                    cache[ref] = await _resolve_conditional(repo, ref, where)
                node["reference"] = cache[ref]


async def _resolve_conditional(repo: FhirRepository, ref: str, where: str) -> str:
    res_type, qs = ref.split("?", 1)
    if not is_resource_type(res_type):
        raise BadRequest(f"{where} 的条件引用类型未知: {ref!r}", expression=[where])
    matches = await repo.find(res_type, parse_qsl(qs, keep_blank_values=True))
    if len(matches) != 1:
        raise PreconditionFailed(
            f"{where} 的条件引用 {ref!r} 匹配到 {len(matches)} 个资源，需要恰好 1 个"
            " (a conditional reference must match exactly one resource)",
            expression=[where],
        )
    return f"{res_type}/{matches[0].res_id}"


def _reference_nodes(node: Any):
    """Every object with a string `reference` (Reference datatypes), depth first."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            if isinstance(cur.get("reference"), str):
                yield cur
            stack.extend(v for v in cur.values() if isinstance(v, (dict, list)))
        elif isinstance(cur, list):
            stack.extend(v for v in cur if isinstance(v, (dict, list)))


async def _plan_writes(repo: FhirRepository, ordered: list[Entry], seen: set[tuple[str, str]]) -> list[PlannedWrite]:
    writes = [e for e in ordered if e.method in ("POST", "PUT", "PATCH", "DELETE") and not e.response]
    current = await repo.current_many((e.res_type, e.res_id) for e in writes)
    plans: list[PlannedWrite] = []
    for e in writes:
        where = f"Bundle.entry[{e.index}]"
        key = (e.res_type, e.res_id)
        if key in seen:
            raise BadRequest(f"{where}: 同一事务中多次修改 {e.res_type}/{e.res_id} (a resource may appear once)")
        seen.add(key)
        existing = current.get(key)
        if existing is not None and not repo.policy.can_see(repo.ctx, existing):
            existing = None if e.method in ("DELETE",) else existing
        if_match = parse_if_match(e.request.get("ifMatch")) if isinstance(e.request.get("ifMatch"), str) else None
        if if_match is not None and (existing is None or existing.deleted or existing.version_id != if_match):
            raise PreconditionFailed(f"{where}: 版本冲突 (ifMatch does not match the current version)")
        if e.method == "DELETE":
            if existing is None or existing.deleted:
                e.response = {"status": "204 No Content"}
                continue
            e.plan = PlannedWrite(e.res_type, e.res_id, "DELETE", None, existing)
        elif e.method == "PATCH":
            if existing is None or existing.deleted:
                raise NotFound(f"{where}: 要修改的资源不存在 (resource to patch not found)")
            patched = apply_patch(existing.resource, _patch_body(e))
            e.plan = PlannedWrite(e.res_type, e.res_id, "PATCH", patched, existing)
        else:
            resource = dict(e.resource)
            if e.method == "PUT" and resource.get("id") not in (None, e.res_id):
                raise BadRequest(f"{where}: resource.id 与 request.url 不一致", expression=[f"{where}.resource.id"])
            if e.method == "POST" and existing is not None and not existing.deleted:
                raise BadRequest(f"{where}: 资源 {e.res_type}/{e.res_id} 已存在")
            resource["id"] = e.res_id
            e.plan = PlannedWrite(e.res_type, e.res_id, e.method, resource, existing)
        if e.plan.resource is not None:
            errors = validation_issues(e.plan.resource)
            if errors:
                prefix = f"{where}.resource"
                for issue in errors:
                    issue.expression = [prefix + x[len(e.res_type):] if x.startswith(e.res_type) else x for x in issue.expression] or [prefix]
                raise Unprocessable(f"{where} 的资源校验未通过 (entry failed validation)", issues=errors)
        plans.append(e.plan)
    return plans


def _patch_body(e: Entry) -> Any:
    # In a Bundle the JSON Patch travels as a Binary resource (https://hl7.org/fhir/R4/http.html#patch).
    body = e.resource
    if isinstance(body, dict) and body.get("resourceType") == "Binary" and isinstance(body.get("data"), str):
        import base64
        import orjson

        try:
            return orjson.loads(base64.b64decode(body["data"]))
        except ValueError as exc:
            raise BadRequest(f"Bundle.entry[{e.index}] 的补丁内容不是合法 JSON") from exc
    return body


async def _responses(router, req, repo, entries: list[Entry], prefer_return: str) -> list[dict]:
    from yiyun.fhir.router import FhirRequest

    out: list[dict] = []
    base = repo.ctx.base_url
    for e in entries:
        if e.method in ("GET", "HEAD"):
            sub = FhirRequest("GET", e.url.split("?")[0], e.query, _entry_headers(e, req), None)
            try:
                out.append(_response_entry(await router.handle(sub, repo), prefer_return))
            except YiyunError as err:  # a read that finds nothing does not undo the writes
                out.append({"response": {"status": str(err.status), "outcome": err.outcome()}})
            continue
        if e.stored is None:
            out.append({"response": e.response or {"status": "204 No Content"}})
            continue
        s = e.stored
        if s.deleted:
            status = "200 OK"
        elif e.response:
            status = e.response["status"]
        else:
            status = "201 Created" if s.version_id == 1 or (e.plan and (e.plan.existing is None or e.plan.existing.deleted)) else "200 OK"
        resp: dict[str, Any] = {
            "status": status,
            "location": f"{s.res_type}/{s.res_id}/_history/{s.version_id}",
            "etag": s.etag,
            "lastModified": s.last_modified,
        }
        item: dict[str, Any] = {"fullUrl": f"{base}/{s.res_type}/{s.res_id}", "response": resp}
        if prefer_return == "representation" and not s.deleted:
            item["resource"] = s.resource
        out.append(item)
    return out


__all__ = ["process_bundle", "run_transaction", "parse_entries"]
