"""Search execution (https://hl7.org/fhir/R4/search.html): parameter handling, paging,
sorting, _include/_revinclude and totals.

Paging is stateless: without `_sort` results come in `rid` order and the next page is asked
for with `_cursor=<last rid>` (keyset), so nothing is cached on the server, a resource
created between two page fetches appears at most once and never shifts the pages already
read. With `_sort` pages use `_offset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from yiyun.core.errors import Issue
from yiyun.fhir.model import RequestContext, StoredResource
from yiyun.fhir.search import custom
from yiyun.fhir.search.query import (
    QueryContext,
    SearchError,
    UnknownParam,
    condition,
    err,
    lookup,
)
from yiyun.fhir.search.registry import UNSUPPORTED_PARAMS, resource_types
from yiyun.fhir.search.tables import TABLE_BY_TYPE, idx_reference
from yiyun.fhir.search.values import split_escaped
from yiyun.fhir.tables import resource as resource_table

MAX_ITERATE = 3  # levels of _include:iterate / _revinclude:iterate followed
MAX_INCLUDED = 5000  # resources returned by _include/_revinclude for one page
MAX_VALUE_LEN = 4096
MAX_PARAMS = 100
MAX_OR_VALUES = 200
SUMMARY_VALUES = ("true", "text", "data", "count", "false")
TOTAL_VALUES = ("none", "estimate", "accurate")
IGNORED = ("_format", "_pretty")  # handled by the HTTP layer


@dataclass
class SearchResult:
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int | None
    next_params: list[tuple[str, str]] | None
    prev_params: list[tuple[str, str]] | None
    self_params: list[tuple[str, str]]
    summary: str | None
    elements: list[str] | None
    issues: list[Issue] = field(default_factory=list)


@dataclass
class _Include:
    source: str  # resource type holding the reference, or "*"
    param: str  # reference parameter, or "*"
    target: str | None
    iterate: bool
    reverse: bool


_COLUMNS = ("rid", "tenant", "res_type", "res_id", "version_id", "ts", "deleted", "content")


def _check_text(key, value) -> None:
    if not isinstance(key, str) or not isinstance(value, str):
        raise SearchError("Search parameters must be text")
    for s in (key, value):
        if len(s) > MAX_VALUE_LEN:
            raise err(key[:100], f"longer than {MAX_VALUE_LEN} characters")
        if "\x00" in s:
            raise err(key.replace("\x00", "")[:100], "contains a NUL character")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise err(key.encode("utf-8", "replace").decode()[:100], "is not valid UTF-8 text") from None


def _int(key: str, value: str, lo: int = 0, hi: int = 2**62) -> int:
    try:
        n = int(value)
    except ValueError:
        raise err(key, f"'{value}' is not an integer") from None
    if not lo <= n <= hi:
        raise err(key, f"'{value}' is out of range")
    return n


def _parse_include(key: str, value: str, reverse: bool, qc: QueryContext) -> _Include:
    base, _, mod = key.partition(":")
    if mod not in ("", "iterate", "recurse"):
        raise err(key, f"modifier ':{mod}' is not valid (use :iterate)")
    iterate = bool(mod)
    if value == "*":
        return _Include("*", "*", None, iterate, reverse)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise err(key, f"'{value}' must be Type:parameter[:targetType]")
    src, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if src not in resource_types():
        raise err(key, f"'{src}' is not a resource type")
    if target is not None and target not in resource_types():
        raise err(key, f"'{target}' is not a resource type")
    if param != "*":
        try:
            d = lookup(qc, src, param)
        except UnknownParam:
            raise err(key, f"'{param}' is not a search parameter of {src}") from None
        if d.type != "reference":
            raise err(key, f"'{param}' is not a reference parameter of {src}")
    return _Include(src, param, target, iterate, reverse)


def _sort_key(qc: QueryContext, r, res_type: str | None, name: str, desc: bool):
    if name == "_id":
        return r.c.res_id
    if name == "_lastUpdated":
        return r.c.ts
    try:
        d = lookup(qc, res_type, name)
    except UnknownParam as u:
        raise err("_sort", f"'{name}' {u.reason}") from None
    if d.type not in ("string", "token", "date", "number", "quantity", "uri", "reference"):
        raise err("_sort", f"cannot sort by the {d.type} parameter '{name}'")
    t = TABLE_BY_TYPE[d.type]
    col = {
        "string": lambda: t.c.value,
        "token": lambda: t.c.code,
        "uri": lambda: t.c.value,
        "reference": lambda: t.c.target_id,
    }.get(d.type, lambda: t.c.high if desc else t.c.low)()
    agg = func.max if desc else func.min
    return select(agg(col)).where(t.c.rid == r.c.rid, t.c.param == name).scalar_subquery()


async def search(
    conn: AsyncConnection,
    ctx: RequestContext,
    res_type: str | None,
    params: list[tuple[str, str]],
    *,
    strict: bool = False,
    where_hook=None,
    page_size_default: int = 50,
    page_size_max: int = 1000,
) -> SearchResult:
    if res_type is not None and res_type not in resource_types():
        raise SearchError(f"Unknown resource type '{res_type}'")
    if len(params) > MAX_PARAMS:
        raise SearchError(f"Too many search parameters (at most {MAX_PARAMS})")
    registry = await custom.registry_for(conn, ctx.tenant)
    qc = QueryContext(ctx.tenant, registry, ctx.base_url, where_hook)
    r = aliased(resource_table, name="r")

    issues: list[Issue] = []
    self_params: list[tuple[str, str]] = []
    conds = []
    includes: list[_Include] = []
    sort: list[tuple[str, bool]] = []
    count = page_size_default
    cursor = offset = None
    summary = elements = total_mode = None
    types: list[str] | None = None

    def unknown(key: str, reason: str) -> None:
        msg = f"Search parameter '{key}' {reason}"
        if strict:
            raise SearchError(msg, code="not-supported", expression=[key])
        issues.append(Issue("warning", "not-supported", msg + "; it was ignored", [key]))

    for key, value in params:
        _check_text(key, value)
        if key in IGNORED:
            continue
        if key == "_count":
            count = min(_int(key, value), page_size_max)
        elif key == "_sort":
            sort = []
            for item in value.split(","):
                desc = item.startswith("-")
                name = item[1:] if desc else item
                if not name:
                    raise err(key, "empty sort key")
                sort.append((name, desc))
        elif key.split(":")[0] in ("_include", "_revinclude"):
            includes.append(_parse_include(key, value, key.startswith("_revinclude"), qc))
        elif key == "_summary":
            if value not in SUMMARY_VALUES:
                raise err(key, f"'{value}' must be one of {', '.join(SUMMARY_VALUES)}")
            summary = value
        elif key == "_elements":
            elements = [e.strip() for e in value.split(",") if e.strip()]
        elif key == "_total":
            if value not in TOTAL_VALUES:
                raise err(key, f"'{value}' must be one of {', '.join(TOTAL_VALUES)}")
            total_mode = value
        elif key == "_type":
            if res_type is not None:
                unknown(key, "applies only to a search across all resource types")
                continue
            types = [t for t in value.split(",") if t]
            bad = [t for t in types if t not in resource_types()]
            if bad:
                raise err(key, f"'{bad[0]}' is not a resource type")
            conds.append(r.c.res_type.in_(types))
        elif key == "_cursor":
            cursor = _int(key, value)
        elif key == "_offset":
            offset = _int(key, value)
        else:
            values = [v for v in split_escaped(value, ",") if v != ""]
            if len(values) > MAX_OR_VALUES:
                raise err(key, f"at most {MAX_OR_VALUES} values")
            name = key.split(":")[0].split(".")[0]
            if name in UNSUPPORTED_PARAMS:
                unknown(key, "is not supported by this server")
                continue
            if not values:
                continue  # an empty value places no constraint
            try:
                conds.append(condition(qc, r, res_type, key, values))
            except UnknownParam as u:
                unknown(key, f"(‘{u.name}’) {u.reason}" if u.name != name else u.reason)
                continue
        self_params.append((key, value))

    if sort and cursor is not None:
        raise err("_cursor", "cannot be combined with _sort (pages of a sorted search use _offset)")
    if not sort and offset is not None:
        raise err("_offset", "is only valid with _sort (unsorted searches page with _cursor)")

    where = [r.c.tenant == ctx.tenant, r.c.deleted.is_(False)]
    if res_type is not None:
        where.append(r.c.res_type == res_type)
    hook = qc.hook(r, res_type)
    if hook is not None:
        where.append(hook)
    where.extend(conds)

    async def count_all() -> int:
        return (await conn.execute(select(func.count(r.c.rid)).where(*where))).scalar_one()

    if summary == "count" or count == 0:
        total = await count_all() if total_mode != "none" else None
        return SearchResult([], [], total, None, None, self_params, summary, elements, issues)

    q = select(*[r.c[c] for c in _COLUMNS]).where(*where)
    if sort:
        order = []
        for name, desc in sort:
            expr = _sort_key(qc, r, res_type, name, desc)
            order.append(expr.desc().nulls_last() if desc else expr.asc().nulls_last())
        q = q.order_by(*order, r.c.rid).offset(offset or 0)
    else:
        if cursor is not None:
            q = q.where(r.c.rid > cursor)
        q = q.order_by(r.c.rid)
    rows = (await conn.execute(q.limit(count + 1))).all()
    more = len(rows) > count
    matches = [StoredResource.from_row(row) for row in rows[:count]]

    base = [(k, v) for k, v in self_params if k not in ("_cursor", "_offset")]
    next_params = prev_params = None
    if more:
        if sort:
            next_params = base + [("_offset", str((offset or 0) + count))]
        else:
            next_params = base + [("_cursor", str(matches[-1].rid))]
    if sort and offset:
        prev_params = base + ([("_offset", str(max(0, offset - count)))] if offset - count > 0 else [])

    if total_mode == "accurate":
        total = await count_all()
    elif total_mode == "none":
        total = None
    elif not more and cursor is None:
        total = (offset or 0) + len(matches)  # the whole result is known: cheap
    elif total_mode == "estimate":
        total = await count_all()
    else:
        total = None

    included = await _run_includes(conn, qc, matches, includes) if includes and matches else []
    return SearchResult(matches, included, total, next_params, prev_params, self_params, summary, elements, issues)


# ------------------------------------------------------------------ _include / _revinclude


def _chunks(seq: list, n: int = 500):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


async def _load(conn, qc: QueryContext, by_type: dict[str, set[str]] | None = None, rids: list[int] | None = None):
    """Live resources of the tenant by (type, ids) or by rid, filtered by the access hook."""
    out: list[StoredResource] = []
    r = aliased(resource_table, name="inc")
    base = [r.c.tenant == qc.tenant, r.c.deleted.is_(False)]
    if by_type:
        for t, ids in by_type.items():
            cond = [r.c.res_type == t]
            h = qc.hook(r, t)
            if h is not None:
                cond.append(h)
            for chunk in _chunks(sorted(ids)):
                q = select(*[r.c[c] for c in _COLUMNS]).where(*base, *cond, r.c.res_id.in_(chunk))
                out.extend(StoredResource.from_row(x) for x in (await conn.execute(q)).all())
    if rids:
        typed = (
            await conn.execute(select(r.c.rid, r.c.res_type).where(*base, r.c.rid.in_(rids)))
        ).all()
        groups: dict[str, list[int]] = {}
        for rid, t in typed:
            groups.setdefault(t, []).append(rid)
        for t, ids in groups.items():
            cond = [r.c.res_type == t]
            h = qc.hook(r, t)
            if h is not None:
                cond.append(h)
            for chunk in _chunks(ids):
                q = select(*[r.c[c] for c in _COLUMNS]).where(*base, *cond, r.c.rid.in_(chunk))
                out.extend(StoredResource.from_row(x) for x in (await conn.execute(q)).all())
    return out


async def _forward(conn, qc, frontier: list[StoredResource], inc: _Include) -> list[StoredResource]:
    ref = idx_reference
    sources = [f.rid for f in frontier if inc.source in ("*", f.res_type)]
    if not sources:
        return []
    targets: dict[str, set[str]] = {}
    for chunk in _chunks(sources):
        q = select(ref.c.target_type, ref.c.target_id).where(
            ref.c.rid.in_(chunk), ref.c.tenant == qc.tenant, ref.c.url.is_(None), ref.c.target_id.is_not(None)
        )
        if inc.param != "*":
            q = q.where(ref.c.param == inc.param)
        if inc.source != "*":
            q = q.where(ref.c.res_type == inc.source)
        if inc.target:
            q = q.where(ref.c.target_type == inc.target)
        for t, i in (await conn.execute(q)).all():
            if t:
                targets.setdefault(t, set()).add(i)
    return await _load(conn, qc, by_type=targets) if targets else []


async def _reverse(conn, qc, frontier: list[StoredResource], inc: _Include) -> list[StoredResource]:
    ref = idx_reference
    by_type: dict[str, list[str]] = {}
    for f in frontier:
        if inc.target is None or inc.target == f.res_type:
            by_type.setdefault(f.res_type, []).append(f.res_id)
    rids: list[int] = []
    for t, ids in by_type.items():
        for chunk in _chunks(ids):
            q = select(ref.c.rid).where(
                ref.c.tenant == qc.tenant, ref.c.url.is_(None), ref.c.target_type == t, ref.c.target_id.in_(chunk)
            )
            if inc.source != "*":
                q = q.where(ref.c.res_type == inc.source)
            if inc.param != "*":
                q = q.where(ref.c.param == inc.param)
            rids.extend(x for (x,) in (await conn.execute(q.distinct().limit(MAX_INCLUDED))).all())
    return await _load(conn, qc, rids=sorted(set(rids))) if rids else []


async def _run_includes(conn, qc, matches: list[StoredResource], includes: list[_Include]) -> list[StoredResource]:
    """https://hl7.org/fhir/R4/search.html#include; `:iterate` is followed MAX_ITERATE levels."""
    seen = {m.rid for m in matches}
    out: list[StoredResource] = []
    frontier = matches
    for level in range(MAX_ITERATE + 1):
        specs = [i for i in includes if level == 0 or i.iterate]
        if not specs or not frontier:
            break
        found: list[StoredResource] = []
        for inc in specs:
            found.extend(await (_reverse if inc.reverse else _forward)(conn, qc, frontier, inc))
        new = []
        for f in found:
            if f.rid not in seen:
                seen.add(f.rid)
                new.append(f)
        out.extend(new)
        if len(out) >= MAX_INCLUDED:
            return out[:MAX_INCLUDED]
        frontier = new
    return out
