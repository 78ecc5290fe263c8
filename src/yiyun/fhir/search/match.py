"""A search query used as a rule: whether one resource matches it, and the same query as
an SQL condition on the store's rows.

SMART granular scopes (`patient/Observation.rs?category=…|vital-signs`,
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#finer-grained-resource-constraints-using-search-parameters)
limit a scope to the resources a search would find. The SQL side is the search engine's
own `condition`; the single-resource side tests the index rows `extract` would write for
the resource, with the same value semantics (https://hl7.org/fhir/R4/search.html), for the
parameter types and modifiers in `SUPPORTED`. Both sides accept the same queries, so a
resource hidden from a search is hidden from a read.

Not supported in such a query (`QueryNotSupported`): chains, `_has`, `_id`,
`_lastUpdated`, `:missing`, token `:not`/`:text`/`:of-type`, reference `:identifier`, and
number, quantity and composite parameters.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from sqlalchemy import and_
from sqlalchemy.sql.elements import ColumnElement

from yiyun.fhir.protection import index_view, search_codes
from yiyun.fhir.search.query import QueryContext, SearchError, UnknownParam, condition, split_prefix, uri_parents
from yiyun.fhir.search.registry import COLUMN_PARAMS, Registry, builtin_registry, resource_types
from yiyun.fhir.search.tables import ID_LEN, STRING_LEN, URI_LEN, TABLE_BY_TYPE
from yiyun.fhir.search.values import date_range, normalize, parse_reference, split_escaped, unescape
from yiyun.fhir.tables import resource as resource_table

# parameter type → the modifiers accepted ("" = none; "Type" = a resource type, for references)
SUPPORTED = {
    "token": frozenset({""}),
    "reference": frozenset({"", "Type"}),
    "string": frozenset({"", "exact", "contains"}),
    "date": frozenset({""}),
    "uri": frozenset({"", "below", "above"}),
}
_VALIDATION_BASE = "http://validation.invalid/fhir"


class QueryNotSupported(ValueError):
    """A query this module cannot apply to single resources (unknown parameter, type or value)."""


class Criterion:
    """One parameter of the query: its values are alternatives (ORed)."""

    __slots__ = ("key", "code", "modifier", "type", "values")

    def __init__(self, key: str, code: str, modifier: str, ptype: str, values: tuple[str, ...]):
        self.key, self.code, self.modifier, self.type, self.values = key, code, modifier, ptype, values


class ResourceQuery:
    """A parsed query on one resource type; every criterion must match (ANDed)."""

    def __init__(self, res_type: str, text: str, criteria: tuple[Criterion, ...], registry: Registry):
        self.res_type, self.text, self.criteria = res_type, text, criteria
        codes = {c.code for c in criteria}
        self._extractors = [cp for cp in registry.compiled(res_type) if cp.code in codes]
        self._registry = registry
        self._protected = any(c.type == "token" for c in criteria)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResourceQuery) and (self.res_type, self.text) == (other.res_type, other.text)

    def __hash__(self) -> int:
        return hash((self.res_type, self.text))

    def __repr__(self) -> str:
        return f"ResourceQuery({self.res_type}?{self.text})"

    def condition(self, alias, tenant: str, base_url: str) -> ColumnElement:
        """SQL: the row of `alias` (a resource or version table) matches, by its current index rows."""
        qc = QueryContext(tenant, self._registry, base_url)
        return and_(*(condition(qc, alias, self.res_type, c.key, list(c.values)) for c in self.criteria))

    def matches(self, resource: dict | None, base_url: str, now: float | None = None) -> bool:
        """Whether `resource` (its content) would be found by this query."""
        if not resource or resource.get("resourceType") != self.res_type:
            return False
        if self._protected:
            resource = index_view(resource)  # protected identifiers are indexed by blind index
        sink: dict[str, list] = {k: [] for k in TABLE_BY_TYPE}
        for cp in self._extractors:
            cp.extract(resource, sink)
        if now is None:
            now = time.time()  # for `ap`, as the SQL side takes it
        for c in self.criteria:
            rows = [r for r in sink[c.type] if r[0] == c.code]
            if not any(_value_matches(c, v, rows, base_url, now) for v in c.values):
                return False
        return True


def parse_query(res_type: str, text: str, registry: Registry | None = None) -> ResourceQuery:
    """Parse `param=value&param=value` for `res_type`; raises `QueryNotSupported`."""
    registry = registry or builtin_registry()
    pairs = parse_qsl(text, keep_blank_values=True)
    if not pairs:
        raise QueryNotSupported("the query names no parameter")
    criteria = []
    for key, value in pairs:
        criteria.append(_criterion(res_type, key, value, registry))
    query = ResourceQuery(res_type, text, tuple(criteria), registry)
    try:  # the search engine's own checks of the values (prefixes, dates, tokens)
        query.condition(resource_table, "-", _VALIDATION_BASE)
        for c in query.criteria:
            for v in c.values:
                _value_matches(c, v, [], _VALIDATION_BASE, 0.0)
    except (SearchError, UnknownParam) as e:
        raise QueryNotSupported(str(e)) from None
    return query


def _criterion(res_type: str, key: str, value: str, registry: Registry) -> Criterion:
    if "." in key or key.startswith("_has"):
        raise QueryNotSupported(f"{key}: chains and _has are not supported in a scope")
    code, _, modifier = key.partition(":")
    defn = registry.params(res_type).get(code)
    if defn is None or not defn.expression or defn.type not in SUPPORTED or code in COLUMN_PARAMS:
        raise QueryNotSupported(f"{key}: not a supported search parameter of {res_type}")
    kind = "Type" if defn.type == "reference" and modifier in resource_types() else modifier
    if kind not in SUPPORTED[defn.type]:
        raise QueryNotSupported(f"{key}: modifier ':{modifier}' is not supported in a scope")
    values = tuple(v for v in split_escaped(value, ",") if v != "")
    if not values:
        raise QueryNotSupported(f"{key}: no value")
    return Criterion(key, code, modifier, defn.type, values)


# ------------------------------------------------------------------ value tests
# Each mirrors its SQL counterpart in `yiyun.fhir.search.query` on the extracted rows
# (param, *columns of the index table).


def _value_matches(c: Criterion, v: str, rows: list[tuple], base_url: str, now: float) -> bool:
    if c.type == "token":
        return _token(c.code, v, rows)
    if c.type == "string":
        return _string(v, c.modifier, rows)
    if c.type == "reference":
        return _reference(c.key, v, c.modifier or None, rows, base_url)
    if c.type == "date":
        return _date(c.key, v, rows, now)
    return _uri(v, c.modifier, rows)


def _token(code_param: str, v: str, rows) -> bool:
    """Rows: (param, system, code, text). As `protected_token_test`."""
    parts = split_escaped(v, "|")
    if len(parts) > 2:
        raise SearchError(f"Search parameter '{code_param}': '{v}' is not a token (expected [system|]code)")
    system = unescape(parts[0]) if len(parts) == 2 else None
    code = unescape(parts[-1])
    if system == "" and code == "":
        raise SearchError(f"Search parameter '{code_param}': '|' alone names neither a system nor a code")
    # `|code` (no system) is never protected, as in `protected_token_test`
    codes = search_codes(code_param, system, code) if code and system != "" else None
    wanted = {x[:STRING_LEN] for x in codes} if codes else {code[:STRING_LEN]}
    for _, sys_, cd, _text in rows:
        if system is not None and (sys_ is not None if system == "" else sys_ != system[:URI_LEN]):
            continue
        if code == "" or cd in wanted:
            return True
    return False


def _string(v: str, modifier: str, rows) -> bool:
    """Rows: (param, value normalised, exact). As `string_test`."""
    raw = unescape(v)
    if modifier == "exact":
        return any(exact == raw[:STRING_LEN] for _, _, exact in rows)
    n = normalize(raw)
    if modifier == "contains":
        return any(n in value for _, value, _ in rows)
    return any(value.startswith(n) for _, value, _ in rows)


def _reference(key: str, v: str, type_mod: str | None, rows, base_url: str) -> bool:
    """Rows: (param, target_type, target_id, url). As `reference_test`."""
    raw = unescape(v)
    base = base_url.rstrip("/") + "/"
    if raw.startswith(base) and raw != base:
        absolute = raw[:URI_LEN]
        return _reference(key, raw[len(base):], type_mod, rows, base_url) or any(r[3] == absolute for r in rows)
    if "://" in raw or raw.startswith("urn:"):
        url = raw.split("|", 1)[0][:URI_LEN]
        return any(r[3] == url for r in rows)
    rt, rid, _ = parse_reference(raw) if "/" in raw else (None, raw, None)
    if not rid:
        raise SearchError(f"Search parameter '{key}': '{v}' is not a reference")
    if type_mod and rt and rt != type_mod:
        return False
    want_type = rt or type_mod
    rid = rid[:ID_LEN]
    return any(r[2] == rid and r[3] is None and (want_type is None or r[1] == want_type) for r in rows)


def _date(key: str, v: str, rows, now: float) -> bool:
    """Rows: (param, low, high). As `date_test` / `interval_test`."""
    prefix, rest = split_prefix(key, v)
    rng = date_range(rest)
    if rng is None:
        raise SearchError(f"Search parameter '{key}': '{v}' is not a valid date")
    s_lo, s_hi = rng
    return any(_interval(prefix, low, high, s_lo, s_hi, now) for _, low, high in rows)


def _interval(prefix: str, low: float, high: float, s_lo: float, s_hi: float, now: float) -> bool:
    eq = low >= s_lo and high <= s_hi
    if prefix == "eq":
        return eq
    if prefix == "ne":
        return low < s_lo or high > s_hi
    if prefix == "gt":
        return high > s_hi
    if prefix == "lt":
        return low < s_lo
    if prefix == "ge":
        return high > s_hi or eq
    if prefix == "le":
        return low < s_lo or eq
    if prefix == "sa":
        return low >= s_hi
    if prefix == "eb":
        return high <= s_lo
    gap = max(0.1 * abs(now - (s_lo + s_hi) / 2), 86400.0)  # ap, as `interval_test`
    return low < s_hi + gap and high > s_lo - gap


def _uri(v: str, modifier: str, rows) -> bool:
    """Rows: (param, value). As `uri_test`."""
    raw = unescape(v)[:URI_LEN]
    if modifier == "below":
        return any(value.startswith(raw) for _, value in rows)
    if modifier == "above":
        parents = set(uri_parents(raw))
        return any(value in parents for _, value in rows)
    return any(value == raw for _, value in rows)
