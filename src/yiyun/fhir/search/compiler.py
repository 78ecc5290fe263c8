"""Compile SearchParameter FHIRPath expressions into small Python extractors.

Evaluating every R4 search expression with a general FHIRPath engine is far too slow for the
write path, and `resolve()` cannot run there. The R4 definitions use a small subset of
FHIRPath (https://hl7.org/fhir/R4/searchparameter-registry.html), which is compiled here into
"branches": straight paths of JSON keys and filters whose end type is known statically, since
a choice element `value[x]` is expanded at compile time into `valueQuantity`,
`valueCodeableConcept`... using the element types of the R4 StructureDefinitions.

Supported forms: `A.b.c | B.d`, `(X.y as T)`, `.as(T)`, `.ofType(T)`, `.where(resolve() is T)`
(a check on the reference's type), `.where(field = 'literal')`, `extension('url')`, `[n]`,
`.first()`, `.exists()`, `%resource.` (composite components), and the `deceased` special
form. Anything else raises `Unsupported`; the caller falls back to fhirpathpy.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources as _res

import orjson

from yiyun.fhir.search.values import reference_type


class Unsupported(Exception):
    """The expression uses FHIRPath outside the compiled subset."""


@lru_cache(maxsize=1)
def element_types() -> tuple[dict[str, list[str]], dict[str, str]]:
    raw = (_res.files("yiyun.fhir.data.search") / "elements.json.gz").read_bytes()
    data = orjson.loads(gzip.decompress(raw))
    return data["types"], data["refs"]


_TOKEN_RE = re.compile(r"\s*(?:(%?[A-Za-z_][A-Za-z0-9_\-]*)|('(?:[^'\\]|\\.)*')|(\d+)|(!=|[().\[\]|=]))")


def _tokenize(expr: str) -> list[str]:
    pos, out = 0, []
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"cannot tokenize at {expr[pos:]!r}")
        out.append(m.group(m.lastindex))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


@dataclass(frozen=True)
class Branch:
    root: str  # "this" (the element), "resource" (%resource) or a type name
    steps: tuple  # ("key", name) | ("ref_is", T) | ("eq", field, literal) | ("index", n) | ("ext", url)
    type: str | None  # FHIR type of the values produced; None when unknown
    exists: bool = False
    alts: tuple = ()  # for exists(): the branches whose presence is tested


class _Parser:
    def __init__(self, tokens: list[str]):
        self.t = tokens
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        return self.t[self.i + k] if self.i + k < len(self.t) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise Unsupported(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok

    def union(self) -> list[tuple]:
        paths = [self.path()]
        while self.peek() == "|":
            self.take("|")
            paths.append(self.path())
        return paths

    def path(self) -> tuple:
        """A path is (root, [ops]); ops are raw syntax items resolved later against types."""
        if self.peek() == "(":
            self.take("(")
            inner = self.path()
            if self.peek() == "as":
                self.take("as")
                typ = self.take()
                inner = (inner[0], inner[1] + [("as", typ)])
            elif self.peek() == "is":
                raise Unsupported("is")
            self.take(")")
            root, ops = inner
        else:
            name = self.take()
            if not re.match(r"%?[A-Za-z_]", name):
                raise Unsupported(name)
            if name == "%resource":
                root, ops = "resource", []
            elif name[0].isupper() and self.peek() in (".", None, "|", ")", "["):
                root, ops = name, []
            else:
                root, ops = "this", [("member", name)]
                ops += self._call_or_index(ops)
        while self.peek() in (".", "["):
            if self.peek() == "[":
                ops += self._call_or_index(ops)
                continue
            self.take(".")
            name = self.take()
            if self.peek() == "(":
                ops.append(self._function(name))
            else:
                ops.append(("member", name))
                ops += self._call_or_index(ops)
        return root, ops

    def _call_or_index(self, ops) -> list:
        out = []
        while self.peek() == "[":
            self.take("[")
            n = self.take()
            if not n.isdigit():
                raise Unsupported("index")
            self.take("]")
            out.append(("index", int(n)))
        return out

    def _function(self, name: str) -> tuple:
        self.take("(")
        if name in ("as", "ofType"):
            typ = self.take()
            self.take(")")
            return ("as", typ)
        if name in ("first", "exists"):
            self.take(")")
            return (name,)
        if name == "extension":
            url = self.take()
            self.take(")")
            if not url.startswith("'"):
                raise Unsupported("extension")
            return ("ext", url[1:-1])
        if name == "where":
            if self.peek() == "resolve":
                self.take("resolve")
                self.take("(")
                self.take(")")
                self.take("is")
                typ = self.take()
                self.take(")")
                return ("ref_is", typ)
            field = self.take()
            self.take("=")
            lit = self.take()
            self.take(")")
            if not lit.startswith("'") or not re.match(r"[A-Za-z_]\w*$", field):
                raise Unsupported("where")
            return ("eq", field, lit[1:-1])
        raise Unsupported(f"function {name}()")


_DECEASED = "Patient.deceased.exists() and Patient.deceased != false"
_BACKBONE = {"BackboneElement", "Element"}


def _resolve(res_type: str, root: str, ops: list, start_ctx: str | None) -> list[Branch]:
    """Expand a parsed path into branches for `res_type` (choice elements become several)."""
    types, refs = element_types()
    if root == "this":
        ctx0 = start_ctx
    elif root == "resource":
        ctx0 = res_type
    elif root in (res_type, "Resource", "DomainResource"):
        ctx0 = res_type
    else:
        return []  # an alternative for another resource type
    # a partial branch: (steps, ctx, type)
    partial = [((), ctx0, res_type if root != "this" else None)]
    exists = False
    for op in ops:
        nxt = []
        kind = op[0]
        for steps, ctx, typ in partial:
            if kind == "member":
                name = op[1]
                if ctx is None:
                    nxt.append((steps + (("key", name),), None, None))
                    continue
                path = f"{ctx}.{name}"
                if path in refs:
                    nxt.append((steps + (("key", name),), refs[path], "BackboneElement"))
                elif path in types:
                    for t in types[path] or [None]:
                        new_ctx = path if t in _BACKBONE else t
                        nxt.append((steps + (("key", name),), new_ctx, t))
                elif f"{path}[x]" in types:
                    for t in types[f"{path}[x]"]:
                        key = name + t[0].upper() + t[1:]
                        nxt.append((steps + (("key", key),), t, t))
                else:
                    raise Unsupported(f"unknown element {path}")
            elif kind == "as":
                want = op[1].lower()
                if typ is None or typ.lower() == want:
                    nxt.append((steps, ctx if typ else op[1], typ or op[1]))
            elif kind == "ref_is":
                nxt.append((steps + (("ref_is", op[1]),), ctx, typ))
            elif kind == "eq":
                nxt.append((steps + (("eq", op[1], op[2]),), ctx, typ))
            elif kind == "index":
                nxt.append((steps + (("index", op[1]),), ctx, typ))
            elif kind == "first":
                nxt.append((steps + (("index", 0),), ctx, typ))
            elif kind == "ext":
                nxt.append((steps + (("ext", op[1]),), "Extension", "Extension"))
            elif kind == "exists":
                nxt.append((steps, ctx, "boolean"))
                exists = True
            else:  # pragma: no cover
                raise Unsupported(kind)
        partial = nxt
    rroot = "this" if root == "this" else "resource"
    if exists:
        # exists() yields one boolean, true when any expanded branch has a value
        alts = tuple(Branch(rroot, steps, None) for steps, _, _ in partial)
        return [Branch(rroot, (), "boolean", exists=True, alts=alts)]
    return [Branch(rroot, steps, typ) for steps, _, typ in partial]


def compile_expression(expression: str, res_type: str, start_ctx: str | None = None) -> list[Branch]:
    """Branches of `expression` that apply to `res_type`; raises Unsupported."""
    if expression.strip() == _DECEASED:
        return [Branch("resource", ("deceased",), "boolean")]
    p = _Parser(_tokenize(expression))
    paths = p.union()
    if p.peek() is not None:
        raise Unsupported(f"trailing {p.peek()!r}")
    out: list[Branch] = []
    for root, ops in paths:
        out.extend(_resolve(res_type, root, ops, start_ctx))
    return out


def context_of(expression: str, res_type: str) -> list[str | None]:
    """Element type contexts that a composite's expression yields (for its components)."""
    types, refs = element_types()
    ctxs = []
    for b in compile_expression(expression, res_type):
        ctx = res_type
        for s in b.steps:
            if s[0] == "key":
                path = f"{ctx}.{s[1]}" if ctx else None
                if path and path in refs:
                    ctx = refs[path]
                elif path and path in types:
                    t = types[path][0]
                    ctx = path if t in _BACKBONE else t
                else:
                    ctx = None
        ctxs.append(ctx)
    return ctxs


# ---------------------------------------------------------------- runtime

_EMPTY: list = []


def _walk_keys(nodes: list, key: str) -> list:
    out = []
    for n in nodes:
        if type(n) is dict:
            v = n.get(key)
            if v is not None:
                if type(v) is list:
                    out.extend(v)
                else:
                    out.append(v)
    return out


def make_getter(branch: Branch):
    """A function (node, resource) -> list of values for one branch."""
    if branch.steps == ("deceased",):

        def deceased(node, res):
            if "deceasedDateTime" in res:
                return [True]
            b = res.get("deceasedBoolean")
            return [b is not None and b is not False]

        return deceased
    if branch.exists:
        subs = [make_getter(a) for a in branch.alts]
        return lambda node, res: [any(bool(g(node, res)) for g in subs)]

    ops = []
    for s in branch.steps:
        k = s[0]
        if k == "key":
            ops.append((0, s[1]))
        elif k == "ref_is":
            t = s[1]
            ops.append((1, lambda n, t=t: reference_type(n) == t))
        elif k == "eq":
            f, lit = s[1], s[2]
            ops.append((1, lambda n, f=f, lit=lit: type(n) is dict and n.get(f) == lit))
        elif k == "ext":
            url = s[1]
            ops.append((0, "extension"))
            ops.append((1, lambda n, url=url: type(n) is dict and n.get("url") == url))
        elif k == "index":
            ops.append((2, s[1]))
    from_resource = branch.root == "resource"

    if len(ops) == 1 and ops[0][0] == 0:
        key = ops[0][1]

        def one(node, res):
            v = (res if from_resource else node).get(key) if type(res if from_resource else node) is dict else None
            if v is None:
                return _EMPTY
            return v if type(v) is list else [v]

        return one

    if all(o[0] == 0 for o in ops) and len(ops) == 2:
        k1, k2 = ops[0][1], ops[1][1]

        def two(node, res):
            start = res if from_resource else node
            v = start.get(k1) if type(start) is dict else None
            if v is None:
                return _EMPTY
            if type(v) is dict:
                w = v.get(k2)
                if w is None:
                    return _EMPTY
                return w if type(w) is list else [w]
            return _walk_keys(v, k2)

        return two

    def walk(node, res):
        nodes = [res if from_resource else node]
        for kind, arg in ops:
            if kind == 0:
                nodes = _walk_keys(nodes, arg)
            elif kind == 1:
                nodes = [n for n in nodes if arg(n)]
            else:
                nodes = nodes[arg : arg + 1]
            if not nodes:
                return _EMPTY
        return nodes

    return walk
