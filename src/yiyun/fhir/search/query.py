"""Translate search parameters into SQL conditions over the index tables.

Semantics follow https://hl7.org/fhir/R4/search.html: each parameter becomes
`resource.rid IN (SELECT rid FROM <index table> WHERE tenant, res_type, param, <value test>)`,
values separated by commas are ORed inside one subquery, repeated parameters are ANDed.
Chains (`subject:Patient.name=x`) and reverse chains (`_has:Observation:patient:code=x`)
nest the same builder on an aliased `fhir_resource`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import and_, false, not_, or_, select, true
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from yiyun.core.errors import BadRequest
from yiyun.fhir.protection import search_codes
from yiyun.fhir.search.registry import (
    COLUMN_PARAMS,
    UNSUPPORTED_PARAMS,
    Registry,
    SearchParamDef,
    resource_types,
)
from yiyun.fhir.search.tables import ID_LEN, STRING_LEN, URI_LEN, TABLE_BY_TYPE, idx_reference, idx_token
from yiyun.fhir.search.values import (
    PREFIX_END,
    date_range,
    normalize,
    number_range,
    parse_reference,
    split_escaped,
    unescape,
)
from yiyun.fhir.tables import resource as resource_table


class SearchError(BadRequest):
    """A search request the server cannot accept: 400 with a message naming the parameter."""


class UnknownParam(Exception):
    """A parameter (or chained parameter) not defined for the type, or not supported here."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.*)$", re.S)
MAX_CHAIN_DEPTH = 4


@dataclass
class QueryContext:
    tenant: str
    registry: Registry
    base_url: str
    where_hook: Callable | None = None
    now: float = field(default_factory=time.time)
    depth: int = 0

    def hook(self, alias, res_type: str | None):
        if self.where_hook is None:
            return None
        return self.where_hook(alias, res_type)


@dataclass
class Cols:
    """The columns a value test reads: a real index table's or one composite component's."""

    system: object = None
    code: object = None
    unit: object = None
    low: object = None
    high: object = None
    value: object = None
    exact: object = None
    text: object = None
    target_type: object = None
    target_id: object = None
    url: object = None


def table_cols(ptype: str) -> Cols:
    t = TABLE_BY_TYPE[ptype].c
    if ptype == "string":
        return Cols(value=t.value, exact=t.exact)
    if ptype == "token":
        return Cols(system=t.system, code=t.code, text=t.text)
    if ptype == "reference":
        return Cols(target_type=t.target_type, target_id=t.target_id, url=t.url)
    if ptype in ("date", "number"):
        return Cols(low=t.low, high=t.high)
    if ptype == "quantity":
        return Cols(system=t.system, code=t.code, unit=t.unit, low=t.low, high=t.high)
    if ptype == "uri":
        return Cols(value=t.value)
    raise AssertionError(ptype)  # pragma: no cover


def composite_cols(i: int, ptype: str) -> Cols:
    t = TABLE_BY_TYPE["composite"].c
    p = "abc"[i]
    s, v, lo, hi = t[f"{p}_sys"], t[f"{p}_val"], t[f"{p}_lo"], t[f"{p}_hi"]
    if ptype == "reference":
        return Cols(target_type=s, target_id=v)
    return Cols(system=s, code=v, value=v, low=lo, high=hi)


def err(name: str, message: str) -> SearchError:
    return SearchError(f"Search parameter '{name}': {message}", expression=[name])


# ------------------------------------------------------------------ value tests


def split_prefix(name: str, v: str) -> tuple[str, str]:
    m = _PREFIX_RE.match(v)
    prefix, rest = m.group(1) or "eq", m.group(2)
    if rest[:1].isalpha() and m.group(1) is None:
        raise err(name, f"unknown comparison prefix in '{v}' (use one of {', '.join(PREFIXES)})")
    return prefix, rest


def interval_test(prefix: str, low, high, s_lo: float, s_hi: float, now: float, approx_base: float | None = None):
    """Interval semantics of https://hl7.org/fhir/R4/search.html#prefix: the target [low, high)
    compared with the search range [s_lo, s_hi) given by the precision of the search value."""
    eq = and_(low >= s_lo, high <= s_hi)
    if prefix == "eq":
        return eq
    if prefix == "ne":
        return or_(low < s_lo, high > s_hi)
    if prefix == "gt":
        return high > s_hi
    if prefix == "lt":
        return low < s_lo
    if prefix == "ge":
        return or_(high > s_hi, eq)
    if prefix == "le":
        return or_(low < s_lo, eq)
    if prefix == "sa":
        return low >= s_hi
    if prefix == "eb":
        return high <= s_lo
    # ap: the spec recommends 10% of the gap between the value and now
    gap = 0.1 * abs((approx_base if approx_base is not None else now) - (s_lo + s_hi) / 2)
    gap = max(gap, 86400.0)  # never narrower than a day
    return and_(low < s_hi + gap, high > s_lo - gap)


def number_test(name: str, prefix: str, num: str, c: Cols):
    """https://hl7.org/fhir/R4/search.html#number: eq uses the precision of the value."""
    parsed = number_range(num)
    if parsed is None:
        raise err(name, f"'{num}' is not a number")
    x, lo, hi = parsed
    if prefix == "eq":
        return and_(c.low >= lo, c.high < hi)
    if prefix == "ne":
        return or_(c.low < lo, c.high >= hi)
    if prefix == "gt":
        return c.high > x
    if prefix == "lt":
        return c.low < x
    if prefix == "ge":
        return c.high >= x
    if prefix == "le":
        return c.low <= x
    if prefix == "sa":
        return c.low > x
    if prefix == "eb":
        return c.high < x
    d = max(abs(x) * 0.1, hi - x)  # ap: within 10% of the value
    return and_(c.low <= x + d, c.high >= x - d)


def date_test(name: str, v: str, c: Cols, now: float):
    prefix, rest = split_prefix(name, v)
    r = date_range(rest)
    if r is None:
        raise err(name, f"'{v}' is not a valid date (expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss[.sss]][Z|±hh:mm]]]])")
    return interval_test(prefix, c.low, c.high, r[0], r[1], now)


def prefix_range(col, s: str):
    return and_(col >= s, col < s + PREFIX_END)


def string_test(name: str, v: str, modifier: str, c: Cols):
    raw = unescape(v)
    if modifier == "exact":
        return c.exact == raw[:STRING_LEN]
    n = normalize(raw)
    if modifier == "contains":
        pat = "%" + n.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return c.value.like(pat, escape="\\")
    if modifier:
        raise err(name, f"modifier ':{modifier}' is not supported for string parameters (use :exact or :contains)")
    return prefix_range(c.value, n)


def token_test(name: str, v: str, c: Cols):
    parts = split_escaped(v, "|")
    if len(parts) == 1:
        return c.code == unescape(parts[0])[:STRING_LEN]
    if len(parts) != 2:
        raise err(name, f"'{v}' is not a token (expected [system|]code)")
    sys_, code = unescape(parts[0]), unescape(parts[1])
    conds = [c.system.is_(None) if sys_ == "" else c.system == sys_[:URI_LEN]]
    if code != "":
        conds.append(c.code == code[:STRING_LEN])
    elif sys_ == "":
        raise err(name, "'|' alone names neither a system nor a code")
    return and_(*conds)


def protected_token_test(name: str, param: str, v: str, c: Cols):
    """A token test where the value may be stored as a blind index (resident IDs, phones:
    `yiyun.fhir.protection`); otherwise exactly `token_test`."""
    parts = split_escaped(v, "|")
    if len(parts) == 1:
        system, code = None, unescape(parts[0])
    elif len(parts) == 2 and parts[0] != "":
        system, code = unescape(parts[0]), unescape(parts[1])
    else:
        return token_test(name, v, c)
    codes = search_codes(param, system, code)
    if codes is None:
        return token_test(name, v, c)
    test = c.code.in_(list(dict.fromkeys(x[:STRING_LEN] for x in codes)))
    return test if system is None else and_(c.system == system[:URI_LEN], test)


def quantity_test(name: str, v: str, c: Cols):
    parts = split_escaped(v, "|")
    if len(parts) not in (1, 3):
        raise err(name, f"'{v}' is not a quantity (expected [prefix]number[|system|code])")
    prefix, num = split_prefix(name, unescape(parts[0]))
    conds = [number_test(name, prefix, num, c)]
    if len(parts) == 3:
        sys_, code = unescape(parts[1]), unescape(parts[2])
        if sys_:
            conds.append(c.system == sys_[:URI_LEN])
        if code:
            code = code[:STRING_LEN]
            # without a system the code may match either the coded unit or the display unit
            conds.append(c.code == code if sys_ or c.unit is None else or_(c.code == code, c.unit == code))
    return and_(*conds)


def uri_test(name: str, v: str, modifier: str, c: Cols):
    raw = unescape(v)[:URI_LEN]
    if modifier == "below":
        return prefix_range(c.value, raw)
    if modifier == "above":
        return c.value.in_(uri_parents(raw))
    if modifier:
        raise err(name, f"modifier ':{modifier}' is not supported for uri parameters")
    return c.value == raw


def uri_parents(raw: str) -> list[str]:
    """https://hl7.org/fhir/R4/search.html#uri (`:above`): the value and each of its parents."""
    parents, cur = [raw], raw
    while "/" in cur.rstrip("/"):
        cur = cur.rstrip("/").rsplit("/", 1)[0]
        if cur.endswith(":/") or cur.endswith(":"):
            break
        parents.append(cur)
    return parents


def reference_test(name: str, v: str, type_mod: str | None, c: Cols, base_url: str):
    raw = unescape(v)
    base = base_url.rstrip("/") + "/"
    if raw.startswith(base) and raw != base:
        # our own absolute URL: the local reference, or a resource that stored it absolute
        local = reference_test(name, raw[len(base) :], type_mod, c, base_url)
        return or_(local, c.url == raw[:URI_LEN]) if c.url is not None else local
    if "://" in raw or raw.startswith("urn:"):
        return c.url == raw.split("|", 1)[0][:URI_LEN]
    rt, rid, _ = parse_reference(raw) if "/" in raw else (None, raw, None)
    if not rid:
        raise err(name, f"'{v}' is not a reference (expected [Type/]id or an absolute URL)")
    conds = [c.target_id == rid[:ID_LEN]]
    if c.url is not None:
        conds.append(c.url.is_(None))
    if rt:
        if type_mod and rt != type_mod:
            return false()
        conds.append(c.target_type == rt)
    elif type_mod:
        conds.append(c.target_type == type_mod)
    return and_(*conds)


# ------------------------------------------------------------------ parameters


def _index_sub(table, qc: QueryContext, res_type: str | None, param: str, cond=None):
    q = select(table.c.rid).where(table.c.tenant == qc.tenant, table.c.param == param)
    if res_type:
        q = q.where(table.c.res_type == res_type)
    if cond is not None:
        q = q.where(cond)
    return q


def _missing(name: str, values: list[str], alias, table, qc, res_type, param) -> ColumnElement:
    if len(values) != 1 or values[0] not in ("true", "false"):
        raise err(name, ":missing takes true or false")
    sub = _index_sub(table, qc, res_type, param)
    return alias.c.rid.not_in(sub) if values[0] == "true" else alias.c.rid.in_(sub)


def condition(qc: QueryContext, alias, res_type: str | None, key: str, values: list[str]) -> ColumnElement:
    """SQL condition for one parameter key (with modifiers, chains, _has) and its OR values."""
    if qc.depth > MAX_CHAIN_DEPTH:
        raise err(key, f"chains and _has nest at most {MAX_CHAIN_DEPTH} levels")
    if key.startswith("_has:"):
        return _has(qc, alias, res_type, key, values)
    head, _, chain = key.partition(".")
    name, _, modifier = head.partition(":")
    if chain:
        return _chain(qc, alias, res_type, name, modifier, chain, values, key)
    if name == "_id":
        return _id_condition(key, modifier, values, alias)
    if name == "_lastUpdated":
        if modifier == "missing":
            return _missing_column(key, values)
        if modifier:
            raise err(key, f"modifier ':{modifier}' is not supported for dates")
        conds = []
        for v in values:
            prefix, rest = split_prefix(key, v)
            r = date_range(rest)
            if r is None:
                raise err(key, f"'{v}' is not a valid date")
            # ts is an instant in microseconds: the interval [ts, ts + 1 µs)
            conds.append(
                interval_test(prefix, alias.c.ts, alias.c.ts + 1, r[0] * 1e6, r[1] * 1e6, qc.now * 1e6)
            )
        return or_(*conds)
    defn = lookup(qc, res_type, name)
    ptype = defn.type
    if modifier == "missing":
        if ptype == "reference":
            sub = _index_sub(idx_reference, qc, res_type, name)
            ident = _index_sub(idx_token, qc, res_type, name + ":identifier")
            if len(values) != 1 or values[0] not in ("true", "false"):
                raise err(key, ":missing takes true or false")
            present = or_(alias.c.rid.in_(sub), alias.c.rid.in_(ident))
            return not_(present) if values[0] == "true" else present
        return _missing(key, values, alias, TABLE_BY_TYPE[ptype], qc, res_type, name)
    if ptype == "composite":
        return _composite(qc, alias, res_type, defn, key, modifier, values)
    table = TABLE_BY_TYPE[ptype]
    param = name
    cols = table_cols(ptype)
    negate = False
    if ptype == "token":
        if modifier == "not":
            negate = True
        elif modifier == "of-type":
            param = name + ":of-type"
        elif modifier not in ("", "text"):
            raise err(key, _unsupported_modifier(modifier, "token"))
        tests = []
        for v in values:
            if modifier == "text":
                tests.append(prefix_range(cols.text, normalize(unescape(v))))
            elif modifier == "of-type":
                parts = split_escaped(v, "|")
                if len(parts) != 3 or not parts[1] or not parts[2]:
                    raise err(key, ":of-type takes type-system|type-code|value")
                value = unescape(parts[2])
                codes = search_codes(name, None, value) or [value]
                tests.append(
                    and_(
                        cols.system == f"{unescape(parts[0])}|{unescape(parts[1])}"[:URI_LEN],
                        cols.code.in_(list(dict.fromkeys(x[:STRING_LEN] for x in codes))),
                    )
                )
            else:
                tests.append(protected_token_test(key, name, v, cols))
    elif ptype == "string":
        tests = [string_test(key, v, modifier, cols) for v in values]
    elif ptype == "reference":
        if modifier == "identifier":
            table, param = idx_token, name + ":identifier"
            tcols = table_cols("token")
            tests = [protected_token_test(key, param, v, tcols) for v in values]
        else:
            type_mod = None
            if modifier:
                if modifier not in resource_types():
                    raise err(key, _unsupported_modifier(modifier, "reference"))
                type_mod = modifier
            tests = [reference_test(key, v, type_mod, cols, qc.base_url) for v in values]
    elif ptype == "date":
        if modifier:
            raise err(key, _unsupported_modifier(modifier, "date"))
        tests = [date_test(key, v, cols, qc.now) for v in values]
    elif ptype == "number":
        if modifier:
            raise err(key, _unsupported_modifier(modifier, "number"))
        tests = [number_test(key, *split_prefix(key, v), cols) for v in values]
    elif ptype == "quantity":
        if modifier:
            raise err(key, _unsupported_modifier(modifier, "quantity"))
        tests = [quantity_test(key, v, cols) for v in values]
    elif ptype == "uri":
        tests = [uri_test(key, v, modifier, cols) for v in values]
    else:  # pragma: no cover - special parameters are rejected by lookup()
        raise UnknownParam(name, "not supported")
    sub = _index_sub(table, qc, res_type, param, or_(*tests))
    return alias.c.rid.not_in(sub) if negate else alias.c.rid.in_(sub)


def _unsupported_modifier(modifier: str, ptype: str) -> str:
    if modifier in ("in", "not-in", "above", "below") and ptype == "token":
        return f"modifier ':{modifier}' needs terminology services and is not supported"
    return f"modifier ':{modifier}' is not valid for {ptype} parameters"


def _missing_column(key, values):
    if len(values) != 1 or values[0] not in ("true", "false"):
        raise err(key, ":missing takes true or false")
    return false() if values[0] == "true" else true()  # every resource has an id and a lastUpdated


def _id_condition(key: str, modifier: str, values: list[str], alias) -> ColumnElement:
    if modifier == "missing":
        return _missing_column(key, values)
    ids = []
    for v in values:
        parts = split_escaped(v, "|")
        ids.append(unescape(parts[-1]))
    if modifier == "not":
        return alias.c.res_id.not_in(ids)
    if modifier:
        raise err(key, f"modifier ':{modifier}' is not supported for _id")
    return alias.c.res_id.in_(ids)


def lookup(qc: QueryContext, res_type: str | None, name: str) -> SearchParamDef:
    defn = qc.registry.params(res_type).get(name)
    if defn is None or defn.type == "special" or (not defn.expression and name not in COLUMN_PARAMS):
        if name in UNSUPPORTED_PARAMS or (defn is not None):
            raise UnknownParam(name, "is not supported by this server")
        where = f"for {res_type}" if res_type else "for all resource types"
        raise UnknownParam(name, f"is not a known search parameter {where}")
    return defn


def _chain(qc, alias, res_type, name, modifier, chain, values, key) -> ColumnElement:
    """https://hl7.org/fhir/R4/search.html#chaining"""
    if name in COLUMN_PARAMS:
        raise err(key, "chaining is only possible on reference parameters")
    defn = lookup(qc, res_type, name)
    if defn.type != "reference":
        raise err(key, f"chaining is only possible on reference parameters; '{name}' is a {defn.type} parameter")
    if modifier:
        if modifier not in resource_types():
            raise err(key, f"'{modifier}' is not a resource type")
        targets = [modifier]
    else:
        targets = defn.target or sorted(resource_types())
    chained_name = chain.split(".", 1)[0].split(":", 1)[0]
    if chained_name != "_has" and not chain.startswith("_has:"):
        targets = [t for t in targets if chained_name in COLUMN_PARAMS or chained_name in qc.registry.params(t)]
    if not targets:
        raise UnknownParam(chain, f"is not a search parameter of any target of '{name}'")
    ref = idx_reference
    inner_qc = QueryContext(qc.tenant, qc.registry, qc.base_url, qc.where_hook, qc.now, qc.depth + 1)
    per_type = []
    for t in targets:
        r2 = aliased(resource_table)
        conds = [
            r2.c.tenant == qc.tenant,
            r2.c.res_type == t,
            r2.c.deleted.is_(False),
            condition(inner_qc, r2, t, chain, values),
        ]
        h = qc.hook(r2, t)
        if h is not None:
            conds.append(h)
        per_type.append(and_(ref.c.target_type == t, ref.c.target_id.in_(select(r2.c.res_id).where(*conds))))
    sub = _index_sub(ref, qc, res_type, name, and_(ref.c.url.is_(None), or_(*per_type)))
    return alias.c.rid.in_(sub)


def _has(qc, alias, res_type, key, values) -> ColumnElement:
    """https://hl7.org/fhir/R4/search.html#has: _has:Type:reference-param:param=value"""
    parts = key.split(":", 3)
    if len(parts) != 4 or not parts[3]:
        raise err(key, "_has takes the form _has:Type:reference-parameter:parameter")
    _, other, refparam, rest = parts
    if res_type is None:
        raise err(key, "_has needs a resource type")
    if other not in resource_types():
        raise err(key, f"'{other}' is not a resource type")
    defn = lookup(qc, other, refparam)
    if defn.type != "reference":
        raise err(key, f"'{refparam}' is not a reference parameter of {other}")
    ref = idx_reference
    o = aliased(resource_table)
    inner_qc = QueryContext(qc.tenant, qc.registry, qc.base_url, qc.where_hook, qc.now, qc.depth + 1)
    conds = [
        ref.c.tenant == qc.tenant,
        ref.c.res_type == other,
        ref.c.param == refparam,
        ref.c.url.is_(None),
        ref.c.target_type == res_type,
        o.c.deleted.is_(False),
        o.c.tenant == qc.tenant,
        condition(inner_qc, o, other, rest, values),
    ]
    h = qc.hook(o, other)
    if h is not None:
        conds.append(h)
    sub = select(ref.c.target_id).join(o, o.c.rid == ref.c.rid).where(*conds)
    return alias.c.res_id.in_(sub)


def _composite(qc, alias, res_type, defn: SearchParamDef, key, modifier, values) -> ColumnElement:
    """https://hl7.org/fhir/R4/search.html#composite: components joined by '$' must all match
    values taken from the same element, i.e. the same composite index row."""
    if modifier:
        raise err(key, f"modifier ':{modifier}' is not valid for composite parameters")
    comps = defn.components
    if not comps or len(comps) > 3:
        raise UnknownParam(defn.code, "is not supported by this server")
    tests = []
    for v in values:
        parts = split_escaped(v, "$")
        if len(parts) != len(comps):
            raise err(key, f"'{v}' needs {len(comps)} components separated by '$'")
        conds = []
        for i, (part, comp) in enumerate(zip(parts, comps)):
            c = composite_cols(i, comp["type"])
            ct = comp["type"]
            if ct == "token":
                conds.append(token_test(key, part, c))
            elif ct == "quantity":
                conds.append(quantity_test(key, part, c))
            elif ct == "date":
                conds.append(date_test(key, part, c, qc.now))
            elif ct == "number":
                conds.append(number_test(key, *split_prefix(key, part), c))
            elif ct == "string":
                conds.append(string_test(key, part, "", c))
            elif ct == "reference":
                conds.append(reference_test(key, part, None, c, qc.base_url))
            elif ct == "uri":
                conds.append(c.value == unescape(part))
            else:  # pragma: no cover
                raise UnknownParam(defn.code, "is not supported by this server")
        tests.append(and_(*conds))
    sub = _index_sub(TABLE_BY_TYPE["composite"], qc, res_type, defn.code, or_(*tests))
    return alias.c.rid.in_(sub)
