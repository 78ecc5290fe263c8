"""History Bundles (https://hl7.org/fhir/R4/http.html#history), paged by a stateless cursor."""

from __future__ import annotations

import orjson
from dateutil import parser as dateparser

from yiyun.core.errors import BadRequest
from yiyun.fhir.model import StoredResource
from yiyun.fhir.repository import FhirRepository

MAX_COUNT = 1000


def parse_instant_us(value: str, name: str) -> int:
    try:
        dt = dateparser.isoparse(value)
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"参数 {name} 不是合法的时间: {value!r} (expected an instant)") from exc
    if dt.tzinfo is None:
        raise BadRequest(f"参数 {name} 必须带时区: {value!r} (an instant needs a time zone)")
    return int(dt.timestamp() * 1_000_000)


def _count(value: str | None, default: int = 50) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise BadRequest(f"_count 必须是非负整数: {value!r}")
    return min(int(value), MAX_COUNT)


async def history_bundle(req, repo: FhirRepository, res_type: str | None, res_id: str | None) -> bytes:
    params = dict(req.params)
    known = {"_since", "_count", "_at", "_page_before", "_format"}
    unknown = [k for k in params if k not in known]
    if unknown:
        raise BadRequest(f"历史接口不支持参数 {', '.join(unknown)} (unsupported history parameters)")
    since = parse_instant_us(params["_since"], "_since") if "_since" in params else None
    before = _cursor(params.get("_page_before"))
    count = _count(params.get("_count"))
    rows = await repo.history(res_type, res_id, since_us=since, at_most=count + 1, before=before)
    page, more = rows[:count], len(rows) > count
    base = repo.ctx.base_url
    path = "/".join(p for p in (base, res_type, res_id, "_history") if p)
    self_q = "&".join(f"{k}={v}" for k, v in req.params)
    links = [{"relation": "self", "url": f"{path}?{self_q}" if self_q else path}]
    if more and page:
        last = page[-1]
        q = [(k, v) for k, v in req.params if k != "_page_before"]
        q.append(("_page_before", f"{last.ts}.{last.rid}.{last.version_id}"))
        links.append({"relation": "next", "url": f"{path}?" + "&".join(f"{k}={v}" for k, v in q)})
    head = orjson.dumps({"resourceType": "Bundle", "type": "history", "link": links})[:-1]
    entries = [_entry(s, base) for s in page]
    return head + b',"entry":[' + b",".join(entries) + b"]}"


def _cursor(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise BadRequest(f"_page_before 格式错误: {value!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _entry(s: StoredResource, base: str) -> bytes:
    url = f"{s.res_type}/{s.res_id}"
    full = f"{base}/{url}"
    if s.deleted:
        request = {"method": "DELETE", "url": url}
        status = "204"
    else:
        request = {"method": "POST" if s.version_id == 1 and s.method != "PUT" else "PUT",
                   "url": s.res_type if (s.version_id == 1 and s.method != "PUT") else url}
        status = "201" if s.version_id == 1 else "200"
    response = {"status": status, "etag": s.etag, "lastModified": s.last_modified}
    tail = orjson.dumps({"request": request, "response": response})[1:]
    if s.deleted:
        return b'{"fullUrl":"' + full.encode() + b'",' + tail
    return b'{"fullUrl":"' + full.encode() + b'","resource":' + s.content + b"," + tail
