"""Search parameter definitions and their compiled extractors.

The built-in registry holds the 1,375 SearchParameters of FHIR R4 4.0.1 (shipped in
`yiyun/fhir/data/search`). A tenant's registry adds its active custom SearchParameter
resources on top. Each (resource type, parameter) is compiled once into branch getters plus
a converter for the parameter type (https://hl7.org/fhir/R4/search.html#ptypes) that turns
FHIR values into index rows.
"""

from __future__ import annotations

import gzip
import itertools
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources as _res

import orjson

from yiyun.fhir.search import compiler
from yiyun.fhir.search.tables import ID_LEN, STRING_LEN, URI_LEN
from yiyun.fhir.search.values import (
    DATE_MAX,
    DATE_MIN,
    date_range,
    normalize,
    parse_reference,
    to_float,
)

log = logging.getLogger(__name__)

# Parameters answered from `fhir_resource` columns instead of index rows.
COLUMN_PARAMS = {"_id", "_lastUpdated"}
# Defined by R4 but not supported by this server (reported in the CapabilityStatement as absent).
UNSUPPORTED_PARAMS = {"_text", "_content", "_query", "_filter", "_list", "_contained", "_containedType", "near"}


@dataclass
class SearchParamDef:
    code: str
    type: str
    url: str
    expression: str | None
    base: list[str]
    target: list[str] = field(default_factory=list)
    documentation: str = ""
    components: list[dict] = field(default_factory=list)  # [{"type", "expression", "definition"}]
    custom: bool = False

    @property
    def definition(self) -> str:
        return self.url


@lru_cache(maxsize=1)
def resource_types() -> frozenset[str]:
    raw = (_res.files("yiyun.fhir.data.search") / "elements.json.gz").read_bytes()
    return frozenset(orjson.loads(gzip.decompress(raw))["resources"])


@lru_cache(maxsize=1)
def builtin_defs() -> list[SearchParamDef]:
    raw = (_res.files("yiyun.fhir.data.search") / "search-parameters.json.gz").read_bytes()
    out = []
    for p in orjson.loads(gzip.decompress(raw)):
        out.append(
            SearchParamDef(
                code=p["code"],
                type=p["type"],
                url=p["url"],
                expression=p.get("expression"),
                base=p["base"],
                target=p.get("target", []),
                documentation=p.get("description", ""),
                components=p.get("component", []),
            )
        )
    return out


# ------------------------------------------------------------------ converters
# Each converter appends rows to sink[table] as tuples (param, *typed columns).


def _strings_of(v, t) -> list[str]:
    if type(v) is str:
        return [v]
    if type(v) is not dict:
        return []
    if t == "HumanName" or (t is None and ("family" in v or "given" in v)):
        # https://hl7.org/fhir/R4/search.html#string: HumanName matches family, given, prefix,
        # suffix and text; the assembled name is indexed too so "Peter Chalmers" matches.
        out = []
        fam = v.get("family")
        given = v.get("given") or []
        if fam:
            out.append(fam)
        out.extend(given)
        out.extend(v.get("prefix") or [])
        out.extend(v.get("suffix") or [])
        if v.get("text"):
            out.append(v["text"])
        elif given and fam:
            out.append(" ".join(given + [fam]))
        return [s for s in out if type(s) is str]
    if t == "Address" or (t is None and ("line" in v or "city" in v or "postalCode" in v)):
        out = list(v.get("line") or [])
        for k in ("city", "district", "state", "postalCode", "country", "text"):
            if v.get(k):
                out.append(v[k])
        return [s for s in out if type(s) is str]
    for k in ("text", "display", "value", "name"):
        if type(v.get(k)) is str:
            return [v[k]]
    return []


def conv_string(vals, t, code, sink):
    rows = sink["string"]
    for v in vals:
        for s in _strings_of(v, t):
            if s:
                rows.append((code, normalize(s), s[:STRING_LEN]))


def _token_rows(v, t) -> list[tuple]:
    """(system, code, text) triples of one value (https://hl7.org/fhir/R4/search.html#token)."""
    tv = type(v)
    if tv is str:
        return [(None, v[:STRING_LEN], None)]
    if tv is bool:
        return [(None, "true" if v else "false", None)]
    if tv is not dict:
        return []
    if t == "CodeableConcept" or (t is None and ("coding" in v)):
        text = v.get("text")
        out = []
        for c in v.get("coding") or ():
            if type(c) is dict and (c.get("code") or c.get("system")):
                d = c.get("display") or text
                out.append(
                    (c.get("system"), c.get("code"), normalize(d) if type(d) is str else None)
                )
        if type(text) is str and text:
            nt = normalize(text)
            if not any(row[2] == nt for row in out):  # :text already finds it on a coding row
                out.append((None, None, nt))
        return out
    if t == "Identifier" or t == "ContactPoint" or t is None and "value" in v and "code" not in v:
        val = v.get("value")
        if val is None:
            return []
        ty = v.get("type")
        text = ty.get("text") if type(ty) is dict else None
        return [(v.get("system"), str(val)[:STRING_LEN], normalize(text) if type(text) is str else None)]
    # Coding, Quantity-as-token and anything with system/code
    c = v.get("code")
    if c is None and v.get("system") is None:
        return []
    d = v.get("display")
    return [(v.get("system"), str(c)[:STRING_LEN] if c is not None else None, normalize(d) if type(d) is str else None)]


def conv_token(vals, t, code, sink):
    rows = sink["token"]
    for v in vals:
        for sys_, c, text in _token_rows(v, t):
            rows.append((code, sys_[:URI_LEN] if type(sys_) is str else None, c, text))
        if (t == "Identifier" or t is None) and type(v) is dict and type(v.get("type")) is dict:
            # :of-type (https://hl7.org/fhir/R4/search.html#token) indexes type-system|type-code + value
            val = v.get("value")
            if val is not None:
                for c in v["type"].get("coding") or ():
                    if type(c) is dict and c.get("code"):
                        rows.append(
                            (code + ":of-type", f"{c.get('system') or ''}|{c['code']}"[:URI_LEN], str(val)[:STRING_LEN], None)
                        )


def conv_reference(vals, t, code, sink):
    rows = sink["reference"]
    for v in vals:
        if type(v) is str:  # canonical / uri used as a reference
            rt, rid, url = parse_reference(v)
            if url is None and rt is not None:
                rows.append((code, rt, rid, None))
            elif url:
                rows.append((code, rt, rid, url))
            continue
        if type(v) is not dict:
            continue
        ref = v.get("reference")
        if type(ref) is str:
            rt, rid, url = parse_reference(ref)
            if rt is None and url is None:
                pass
            else:
                if rt is None and type(v.get("type")) is str:
                    rt = v["type"]
                rows.append((code, rt, rid, url))
        ident = v.get("identifier")
        if type(ident) is dict and ident.get("value") is not None:
            # :identifier (https://hl7.org/fhir/R4/search.html#reference) searches Reference.identifier
            sys_ = ident.get("system")
            sink["token"].append(
                (code + ":identifier", sys_[:URI_LEN] if type(sys_) is str else None, str(ident["value"])[:STRING_LEN], None)
            )


def _date_ranges(v, t) -> list[tuple[float, float]]:
    if type(v) is str:
        r = date_range(v)
        return [r] if r else []
    if type(v) is not dict:
        return []
    if "start" in v or "end" in v:  # Period: an open end is unbounded
        lo = date_range(v.get("start")) if v.get("start") else None
        hi = date_range(v.get("end")) if v.get("end") else None
        if lo is None and hi is None:
            return []
        return [(lo[0] if lo else DATE_MIN, hi[1] if hi else DATE_MAX)]
    if "event" in v or "repeat" in v:  # Timing: its events, else its bounds
        out = [r for e in v.get("event") or () if (r := date_range(e))]
        rep = v.get("repeat")
        if not out and type(rep) is dict and type(rep.get("boundsPeriod")) is dict:
            out.extend(_date_ranges(rep["boundsPeriod"], "Period"))
        return out
    return []


def conv_date(vals, t, code, sink):
    rows = sink["date"]
    for v in vals:
        for lo, hi in _date_ranges(v, t):
            rows.append((code, lo, hi))


def conv_number(vals, t, code, sink):
    rows = sink["number"]
    for v in vals:
        f = to_float(v) if type(v) is not dict else to_float(v.get("value"))
        if f is not None:
            rows.append((code, f, f))


def _quantities(v, t) -> list[tuple]:
    """(system, code, unit, low, high) of a Quantity, Money, Range or SampledData-free value."""
    if type(v) is not dict:
        return []
    if "low" in v or "high" in v:  # Range
        lo, hi = v.get("low") or {}, v.get("high") or {}
        lv, hv = to_float(lo.get("value")), to_float(hi.get("value"))
        if lv is None and hv is None:
            return []
        u = lo if lv is not None else hi
        return [(u.get("system"), u.get("code"), u.get("unit"), lv if lv is not None else -1e300, hv if hv is not None else 1e300)]
    f = to_float(v.get("value"))
    if f is None:
        return []
    if "currency" in v:  # Money
        return [("urn:iso:std:iso:4217", v["currency"], None, f, f)]
    return [(v.get("system"), v.get("code"), v.get("unit"), f, f)]


def _cut(s, n):
    return s[:n] if type(s) is str else None


def conv_quantity(vals, t, code, sink):
    rows = sink["quantity"]
    for v in vals:
        for s, c, u, lo, hi in _quantities(v, t):
            rows.append((code, _cut(s, URI_LEN), _cut(c, STRING_LEN), _cut(u, STRING_LEN), lo, hi))


def conv_uri(vals, t, code, sink):
    rows = sink["uri"]
    for v in vals:
        if type(v) is str and v:
            rows.append((code, v[:URI_LEN]))


CONVERTERS = {
    "string": conv_string,
    "token": conv_token,
    "reference": conv_reference,
    "date": conv_date,
    "number": conv_number,
    "quantity": conv_quantity,
    "uri": conv_uri,
}


def component_values(ptype: str, vals: list, t) -> list[tuple]:
    """Generic (sys, val, lo, hi) quadruples of a composite component's values."""
    out = []
    if ptype == "token":
        for v in vals:
            out.extend((_cut(s, URI_LEN), c, None, None) for s, c, _ in _token_rows(v, t) if c is not None)
    elif ptype == "quantity":
        for v in vals:
            out.extend((_cut(s, URI_LEN), _cut(c or u, STRING_LEN), lo, hi) for s, c, u, lo, hi in _quantities(v, t))
    elif ptype == "date":
        for v in vals:
            out.extend((None, None, lo, hi) for lo, hi in _date_ranges(v, t))
    elif ptype == "number":
        for v in vals:
            f = to_float(v)
            if f is not None:
                out.append((None, None, f, f))
    elif ptype == "string":
        for v in vals:
            out.extend((None, normalize(s), None, None) for s in _strings_of(v, t) if s)
    elif ptype == "reference":
        for v in vals:
            if type(v) is dict and type(v.get("reference")) is str:
                rt, rid, url = parse_reference(v["reference"])
                if rid:
                    out.append((rt, rid[:ID_LEN], None, None))
    elif ptype == "uri":
        out.extend((None, v[:STRING_LEN], None, None) for v in vals if type(v) is str)
    return out


# ------------------------------------------------------------------ compiled parameters


class CompiledParam:
    __slots__ = ("defn", "code", "branches", "conv", "components", "fallback")

    def __init__(self, defn: SearchParamDef, res_type: str):
        self.defn = defn
        self.code = defn.code
        self.fallback = False
        self.components: list = []
        self.branches: list = []
        self.conv = CONVERTERS.get(defn.type)
        expr = defn.expression or ""
        try:
            branches = compiler.compile_expression(expr, res_type)
            self.branches = [(compiler.make_getter(b), b.type) for b in branches]
            if defn.type == "composite":
                # components are evaluated on each element the composite expression yields,
                # compiled against that element's type (Observation | Observation.component)
                for ctx in compiler.context_of(expr, res_type):
                    per_ctx = []
                    for comp in defn.components:
                        cb = compiler.compile_expression(comp["expression"], res_type, start_ctx=ctx)
                        per_ctx.append((comp["type"], [(compiler.make_getter(b), b.type) for b in cb]))
                    self.components.append(per_ctx)
        except compiler.Unsupported:
            self.fallback = True
            self.branches = [(_fhirpath_getter(expr), None)]
            if defn.type == "composite":
                self.components = [[(c["type"], [(_fhirpath_getter(c["expression"]), None)]) for c in defn.components]]

    def extract(self, res: dict, sink: dict) -> None:
        if self.defn.type == "composite":
            self._composite(res, sink)
            return
        conv = self.conv
        for getter, t in self.branches:
            vals = getter(res, res)
            if vals:
                conv(vals, t, self.code, sink)

    def _composite(self, res: dict, sink: dict) -> None:
        rows = sink["composite"]
        for (getter, _), components in zip(self.branches, self.components):
            for element in getter(res, res):
                parts = []
                for ptype, getters in components:
                    quads = []
                    for g, t in getters:
                        vals = g(element, res)
                        if vals:
                            quads.extend(component_values(ptype, vals, t))
                    if not quads:
                        break
                    parts.append(quads)
                else:
                    while len(parts) < 3:
                        parts.append([(None, None, None, None)])
                    for a, b, c in itertools.product(*parts[:3]):
                        rows.append((self.code, *a, *b, *c))


@lru_cache(maxsize=1)
def _fhirpath_model() -> dict:
    from fhirpathpy.models import models

    return models["r4"]


def compile_fhirpath(expr: str):
    """fhirpathpy's function for `expr`, called as `fn(resource, {"resource": resource})`.

    The R4 model lets the engine resolve choice elements by their FHIRPath name
    (`Observation.value`, https://hl7.org/fhir/R4/fhirpath.html#polymorphism) and types for
    `is`/`as`/`ofType`; without it such paths evaluate to nothing.
    """
    import fhirpathpy

    return fhirpathpy.compile(expr, model=_fhirpath_model())


def _fhirpath_getter(expr: str):
    """A getter evaluating `expr` with fhirpathpy (custom parameters the compiler can't handle)."""
    try:
        fn = compile_fhirpath(expr)
    except Exception as exc:  # noqa: BLE001 - a bad custom expression indexes nothing
        log.warning("search expression not usable: %s (%s)", expr, exc)
        return lambda node, res: []

    def get(node, res):
        try:
            out = fn(node, {"resource": res})
        except Exception:  # noqa: BLE001 - evaluation errors on odd content index nothing
            return []
        return [v for v in out if v is not None] if isinstance(out, list) else []

    return get


class Registry:
    """Parameters by resource type; a tenant registry overlays custom parameters."""

    def __init__(self, defs: list[SearchParamDef], parent: Registry | None = None):
        self.parent = parent
        self._by_base: dict[str, dict[str, SearchParamDef]] = {}
        for d in defs:
            for base in d.base:
                self._by_base.setdefault(base, {})[d.code] = d
        self._params: dict[str, dict[str, SearchParamDef]] = {}
        self._compiled: dict[str, list[CompiledParam]] = {}

    def params(self, res_type: str | None) -> dict[str, SearchParamDef]:
        key = res_type or ""
        got = self._params.get(key)
        if got is None:
            got = dict(self.parent.params(res_type)) if self.parent else {}
            for base in ("Resource", "DomainResource") + ((res_type,) if res_type else ()):
                for code, d in self._by_base.get(base, {}).items():
                    if self.parent and code in got:
                        continue  # a custom parameter never shadows a built-in one
                    got[code] = d
            self._params[key] = got
        return got

    def compiled(self, res_type: str) -> list[CompiledParam]:
        got = self._compiled.get(res_type)
        if got is None:
            got = []
            for code, d in self.params(res_type).items():
                if code in COLUMN_PARAMS or not d.expression or d.type == "special":
                    continue
                got.append(CompiledParam(d, res_type))
            self._compiled[res_type] = got
        return got


@lru_cache(maxsize=1)
def builtin_registry() -> Registry:
    return Registry(builtin_defs())


def fallback_report() -> list[tuple[str, str, str]]:
    """(resource type, code, expression) of built-in parameters evaluated by fhirpathpy."""
    reg = builtin_registry()
    out = []
    for rt in sorted(resource_types()):
        for cp in reg.compiled(rt):
            if cp.fallback:
                out.append((rt, cp.code, cp.defn.expression or ""))
    return out
