"""FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html).

A `Parameters` resource whose `operation` parameters each name a `type` (add, insert, delete,
replace, move), a FHIRPath `path` and, as the type needs, `name`, `value`, `index`, `source`
and `destination`. The path is resolved here, against the document and the R4 schema, into
the JSON object and property (and list position) to change, because a general FHIRPath
engine returns values, not places. The path forms handled are those the specification and
its test cases use: `Type.a.b`, `[n]`, `.where(criteria)` (the criteria are evaluated by
fhirpathpy on each candidate element, with the R4 model), `.first()`, `.last()`,
`.single()`, `.ofType(T)`, `.as(T)`, `.extension('url')`, and choice elements by their
FHIRPath name (`Observation.value`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from yiyun.core.errors import BadRequest, Unprocessable
from yiyun.fhir.validation.schema import PRIMITIVE, RESOURCE, TypeSchema, get_schema

__all__ = ["apply_fhirpath_patch"]

_TYPES = ("add", "insert", "delete", "replace", "move")
_NEEDS = {
    "add": ("name", "value"),
    "insert": ("index", "value"),
    "replace": ("value",),
    "move": ("source", "destination"),
    "delete": (),
}
# Quantity and its profiles share one JSON shape: https://hl7.org/fhir/R4/datatypes.html#quantity
_QUANTITIES = {"Quantity", "SimpleQuantity", "MoneyQuantity", "Age", "Count", "Distance", "Duration"}


class PathError(Exception):
    """Why one operation cannot be applied; turned into a 422 naming the operation."""


# -- the Parameters body ------------------------------------------------------------------


@dataclass
class Operation:
    n: int
    type: str
    path: str
    parts: dict[str, dict]  # part name -> the part itself


def _operations(parameters: dict) -> list[Operation]:
    params = parameters.get("parameter", [])
    if not isinstance(params, list):
        raise BadRequest("FHIRPath Patch: Parameters.parameter must be an array")
    ops = []
    for n, p in enumerate(params):
        where = f"FHIRPath Patch operation {n}"
        if not isinstance(p, dict) or p.get("name") != "operation":
            raise BadRequest(f"{where}: every parameter must be named 'operation'")
        parts: dict[str, dict] = {}
        for part in p.get("part") or []:
            if not isinstance(part, dict) or not isinstance(part.get("name"), str):
                raise BadRequest(f"{where}: every part needs a name")
            if part["name"] in parts:
                raise BadRequest(f"{where}: part {part['name']!r} is given twice")
            parts[part["name"]] = part
        kind = _primitive_part(parts.get("type"), ("valueCode", "valueString"))
        path = _primitive_part(parts.get("path"), ("valueString",))
        if kind is None or path is None:
            raise BadRequest(f"{where} needs a 'type' (valueCode) and a 'path' (valueString)")
        if kind not in _TYPES:
            raise BadRequest(f"{where}: unknown type {kind!r}; expected one of {', '.join(_TYPES)}")
        missing = [name for name in _NEEDS[kind] if name not in parts]
        if missing:
            raise BadRequest(f"{where} ({kind} at {path!r}) needs part(s): {', '.join(missing)}")
        for name in ("index", "source", "destination"):
            if name in _NEEDS[kind] and not isinstance(_primitive_part(parts[name], ("valueInteger",)), int):
                raise BadRequest(f"{where} ({kind} at {path!r}): '{name}' must be a valueInteger")
        if kind == "add" and not isinstance(_primitive_part(parts["name"], ("valueString", "valueCode")), str):
            raise BadRequest(f"{where} (add at {path!r}): 'name' must be a valueString")
        ops.append(Operation(n, kind, path, parts))
    return ops


def _primitive_part(part: dict | None, keys: tuple[str, ...]) -> Any:
    if part is None:
        return None
    for key in keys:
        value = part.get(key)
        if value is not None and not isinstance(value, (dict, list)) and not isinstance(value, bool):
            return value
    return None


# -- path expressions ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<id>[A-Za-z_][A-Za-z0-9_]*)|`(?P<qid>[^`]*)`|(?P<str>'(?:[^'\\]|\\.)*')|(?P<int>\d+)"
    r"|(?P<p>[.\[\](),])|(?P<other>\S))"
)


@dataclass(frozen=True)
class Step:
    kind: str  # "child" | "index" | "func"
    name: str = ""
    index: int = 0
    args: tuple[str, ...] = ()


def _parse(path: str) -> list[Step]:
    """Split `path` into steps; function arguments are kept as source text."""
    tokens: list[tuple[str, str, int, int]] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or m.end() == pos:
            break
        kind = m.lastgroup or "other"
        tokens.append((kind, m.group(kind), m.start(kind), m.end()))
        pos = m.end()
    steps: list[Step] = []
    i = 0
    expect_name = True  # a path starts with a name, as after a dot
    while i < len(tokens):
        kind, text, start, _ = tokens[i]
        if kind in ("id", "qid") and expect_name:
            if i + 1 < len(tokens) and tokens[i + 1][1] == "(" and kind == "id":
                close = _closing(tokens, i + 1)
                args = _split_args(tokens, i + 1, close, path)
                steps.append(Step("func", text, args=args))
                i = close + 1
            else:
                steps.append(Step("child", text))
                i += 1
            expect_name = False
        elif text == "." and kind == "p" and not expect_name:
            expect_name = True
            i += 1
        elif text == "[" and kind == "p" and not expect_name:
            if i + 2 < len(tokens) and tokens[i + 1][0] == "int" and tokens[i + 2][1] == "]":
                steps.append(Step("index", index=int(tokens[i + 1][1])))
                i += 3
            else:
                raise PathError("only integer indexes like [0] are supported")
        else:
            raise PathError(f"unexpected {text!r} at character {start}")
    if expect_name:
        raise PathError("the path is empty or ends with a dot")
    return steps


def _closing(tokens: list, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(tokens)):
        t = tokens[j][1] if tokens[j][0] in ("p", "other") else None
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
            if depth == 0:
                return j
    raise PathError("unbalanced parentheses")


def _split_args(tokens: list, open_at: int, close: int, path: str) -> tuple[str, ...]:
    if close == open_at + 1:
        return ()
    args, depth, start = [], 0, tokens[open_at + 1][2]
    for j in range(open_at + 1, close):
        kind, text, tstart, _ = tokens[j]
        if kind in ("p", "other"):
            if text in "([":
                depth += 1
            elif text in ")]":
                depth -= 1
            elif text == "," and depth == 0:
                args.append(path[start:tstart].strip())
                start = tokens[j + 1][2] if j + 1 < close else tokens[j][3]
    args.append(path[start : tokens[close][2]].strip())
    return tuple(args)


def _string_literal(arg: str) -> str:
    if len(arg) < 2 or arg[0] != "'" or arg[-1] != "'":
        raise PathError(f"expected a string literal, got {arg!r}")

    def unescape(m: re.Match) -> str:
        # http://hl7.org/fhirpath/N1/#string
        esc = m.group(1)
        return chr(int(esc[1:], 16)) if len(esc) == 5 else _ESCAPES.get(esc, esc)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", unescape, arg[1:-1])


_ESCAPES = {"f": "\f", "n": "\n", "r": "\r", "t": "\t"}


# -- places in the document ---------------------------------------------------------------


@dataclass
class Node:
    """One element of the document and where it lives.

    The element is `holder[key]`, or `holder[key][index]` when the property repeats; the
    resource itself has no holder. For a primitive the JSON value may be absent while its
    `_key` companion (id, extensions) is there: https://hl7.org/fhir/R4/json.html#primitive
    """

    holder: dict | None
    key: str | None
    index: int | None
    tname: str  # FHIR type: "Patient", "HumanName", "Patient.contact", "string", "Element" ...
    field: tuple | None = None  # the schema field of `key` in the holder's type
    owner: TypeSchema | None = None  # the holder's type

    @property
    def primitive(self) -> bool:
        return self.field is not None and self.field[0] == PRIMITIVE

    def get(self, doc: dict) -> Any:
        if self.holder is None:
            return doc
        raw = self.holder.get(self.key)
        if self.index is None:
            return raw
        return raw[self.index] if isinstance(raw, list) and self.index < len(raw) else None


class Resolver:
    """Evaluates the supported path forms to Nodes of one document."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.schema = get_schema()

    def resolve(self, steps: list[Step]) -> list[Node]:
        nodes = [Node(None, None, None, str(self.doc.get("resourceType", "")))]
        rest = steps
        if steps and steps[0].kind == "child" and steps[0].name[:1].isupper():
            if steps[0].name not in (self.doc.get("resourceType"), "Resource", "DomainResource"):
                return []  # a path on another resource type matches nothing
            rest = steps[1:]
        for step in rest:
            nodes = self.step(nodes, step)
        return nodes

    def step(self, nodes: list[Node], step: Step) -> list[Node]:
        if step.kind == "child":
            return [c for n in nodes for c in self.children(n, step.name)]
        if step.kind == "index":
            return nodes[step.index : step.index + 1]
        name, args = step.name, step.args
        if name in ("first", "last", "single") and not args:
            if name == "single" and len(nodes) > 1:
                raise PathError("single() found more than one element")
            return nodes[-1:] if name == "last" else nodes[:1]
        if name == "where" and len(args) == 1:
            return [n for n in nodes if self.matches(n, args[0])]
        if name in ("ofType", "as") and len(args) == 1:
            wanted = args[0].removeprefix("FHIR.")
            return [n for n in nodes if n.tname == wanted or (wanted == "Quantity" and n.tname in _QUANTITIES)]
        if name == "extension" and len(args) == 1:
            url = _string_literal(args[0])
            found = [c for n in nodes for c in self.children(n, "extension")]
            return [c for c in found if isinstance(c.get(self.doc), dict) and c.get(self.doc).get("url") == url]
        if name == "resolve":
            raise PathError("a patch path SHALL NOT cross resources with resolve()")
        raise PathError(f"{name}() is not supported in a patch path")

    def object_type(self, node: Node) -> tuple[dict, TypeSchema] | None:
        """The JSON object of a complex node and its type; None for primitives and gaps."""
        obj = node.get(self.doc)
        if not isinstance(obj, dict) or node.primitive:
            return None
        rt = obj.get("resourceType")
        if node.tname == "Element":
            return obj, self.schema.element
        if isinstance(rt, str) and rt in self.schema.resources:
            return obj, self.schema.types[rt]
        ts = self.schema.types.get(node.tname)
        return (obj, ts) if ts is not None else None

    def companion(self, node: Node, create: bool) -> Node | None:
        """The `_key` companion of a primitive, as an Element node (made when `create`)."""
        holder, key = node.holder, "_" + str(node.key)
        if holder is None:
            return None
        if node.index is None:
            if not isinstance(holder.get(key), dict):
                if not create:
                    return None
                holder[key] = {}
        else:
            extras = holder.get(key)
            present = isinstance(extras, list) and node.index < len(extras) and isinstance(extras[node.index], dict)
            if not present:
                if not create:
                    return None
                if not isinstance(extras, list):
                    extras = holder[key] = []
                extras.extend([None] * (max(_len(holder.get(node.key)), node.index + 1) - len(extras)))
                extras[node.index] = {}
        return Node(holder, key, node.index, "Element")

    def children(self, node: Node, name: str) -> list[Node]:
        if node.primitive:
            companion = self.companion(node, create=False)
            return [] if companion is None or name not in ("id", "extension") else self.children(companion, name)
        got = self.object_type(node)
        if got is None:
            return []
        obj, ts = got
        out = []
        for key in _keys_for(ts, obj, name):
            f = ts.fields[key]
            kind, is_array, tname = f[0], f[2], f[6]
            if kind == PRIMITIVE:
                values, extras = obj.get(key), obj.get("_" + key)
                if is_array:
                    count = max(_len(values), _len(extras))
                    out.extend(Node(obj, key, i, tname, f, ts) for i in range(count))
                elif values is not None or extras is not None:
                    out.append(Node(obj, key, None, tname, f, ts))
                continue
            raw = obj.get(key)
            if raw is None:
                continue
            items = list(enumerate(raw)) if is_array and isinstance(raw, list) else [(None, raw)]
            for i, item in items:
                t = item.get("resourceType", "") if kind == RESOURCE and isinstance(item, dict) else tname
                out.append(Node(obj, key, i, t, f, ts))
        return out

    def matches(self, node: Node, criteria: str) -> bool:
        import fhirpathpy

        value = node.get(self.doc)
        if value is None:
            return False
        try:
            got = fhirpathpy.evaluate(
                copy.deepcopy(value), {"base": node.tname, "expression": criteria}, model=_r4_model()
            )
        except Exception as exc:  # noqa: BLE001 - the engine raises many kinds
            raise PathError(f"cannot evaluate where({criteria}): {exc}") from exc
        return got == [True]


def _len(v: Any) -> int:
    return len(v) if isinstance(v, list) else 0


def _keys_for(ts: TypeSchema, obj: dict, name: str) -> list[str]:
    field = ts.fields.get(name)
    if field is not None and field[5] is None:
        return [name]
    # A choice element is named without its type in FHIRPath: https://hl7.org/fhir/R4/formats.html#choice
    keys = [k for k, f in ts.fields.items() if f[5] == name and (k in obj or "_" + k in obj)]
    return keys or ([name] if field is not None else [])


@lru_cache(maxsize=1)
def _r4_model() -> dict:
    from fhirpathpy.models import models

    return models["r4"]


# -- values -------------------------------------------------------------------------------


@dataclass
class Value:
    """A value part: JSON value + companion (`_value[x]`) + FHIR type, or nested parts."""

    json: Any
    extra: dict | None
    tname: str | None  # None for anonymous (parts) values
    parts: list | None = None


def _value_part(part: dict) -> Value:
    """`value[x]`, `resource` or nested `part`s of a part: https://hl7.org/fhir/R4/fhirpatch.html#value"""
    param = get_schema().types["Parameters.parameter"]
    keys = [k for k in part if k.startswith("value") and k in param.fields]
    extras = [k for k in part if k.startswith("_value") and k[1:] in param.fields]
    if len(keys) + ("resource" in part) > 1:
        raise PathError("a value part carries more than one value")
    if keys or extras:
        key = keys[0] if keys else extras[0][1:]
        extra = part.get("_" + key)
        extra = copy.deepcopy(extra) if isinstance(extra, dict) else None
        return Value(copy.deepcopy(part.get(key)), extra, param.fields[key][6])
    if "resource" in part:
        res = part["resource"]
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise PathError("the value resource has no resourceType")
        return Value(copy.deepcopy(res), None, res["resourceType"])
    if isinstance(part.get("part"), list) and part["part"]:
        return Value(None, None, None, part["part"])
    raise PathError(f"part {part.get('name')!r} has no value[x], resource or parts")


def _fit(value: Value, ts: TypeSchema, name: str) -> tuple[str, Any, dict | None]:
    """The JSON key, value and companion that put `value` in element `name` of `ts`.

    The value's type must suit the element: https://hl7.org/fhir/R4/fhirpatch.html ("The
    type of the value must be correct for the place at which it will be added").
    """
    key = name
    f = ts.fields.get(name)
    if f is None:
        choices = [k for k, cf in ts.fields.items() if cf[5] == name]
        if not choices:
            raise PathError(f"{ts.name} has no element {name!r}")
        if value.tname is None:
            raise PathError(f"{name}[x] needs a typed value, not parts")
        suffix = value.tname[:1].upper() + value.tname[1:]
        key = name + suffix
        f = ts.fields.get(key)
        if f is None:
            raise PathError(f"{ts.name}.{name}[x] does not allow type {value.tname}")
    kind, arg, tname = f[0], f[1], f[6]
    if kind == PRIMITIVE:
        ok = value.tname is not None and value.tname[:1].islower() and (
            (value.json is None and value.extra is not None) or arg(value.json)
        )
        if not ok:
            raise PathError(f"a {value.tname or 'parts'} value does not fit {ts.name}.{key} ({tname})")
        return key, value.json, value.extra
    if kind == RESOURCE:
        if not isinstance(value.json, dict) or "resourceType" not in value.json:
            raise PathError(f"{ts.name}.{key} takes a resource")
        return key, value.json, None
    if value.parts is not None:
        return key, _build(value.parts, arg), None
    if not isinstance(value.json, dict) or not (
        value.tname == tname or (value.tname in _QUANTITIES and tname in _QUANTITIES)
    ):
        raise PathError(f"a {value.tname} value does not fit {ts.name}.{key} ({tname})")
    return key, value.json, None


def _build(parts: list, ts: TypeSchema) -> dict:
    """An element of an anonymous (backbone) type from nested parts, one per child element."""
    out: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise PathError(f"every nested part of a {ts.name} value needs a name")
        key, json, extra = _fit(_value_part(part), ts, part["name"])
        if ts.fields[key][2]:
            _list_insert(out, key, _len(out.get(key)), json, extra)
        elif key in out or "_" + key in out:
            raise PathError(f"{ts.name}.{key} does not repeat but is given twice")
        else:
            _set_single(out, key, json, extra)
    return out


# -- edits (keeping `key` and `_key` aligned) ---------------------------------------------


def _set_single(holder: dict, key: str, json: Any, extra: dict | None) -> None:
    holder.pop(key, None)
    holder.pop("_" + key, None)
    if json is not None:
        holder[key] = json
    if extra is not None:
        holder["_" + key] = extra


def _extras(holder: dict, key: str, need: bool) -> list | None:
    extras = holder.get("_" + key)
    if isinstance(extras, list):
        return extras
    if not need:
        return None
    extras = holder["_" + key] = [None] * _len(holder.get(key))
    return extras


def _list_insert(holder: dict, key: str, i: int, json: Any, extra: dict | None) -> None:
    values = holder.setdefault(key, [])
    extras = _extras(holder, key, extra is not None)
    if extras is not None:
        extras.extend([None] * (len(values) - len(extras)))
        extras.insert(i, extra)
    values.insert(i, json)


def _list_pop(holder: dict, key: str, i: int) -> tuple[Any, dict | None]:
    values = holder.get(key)
    extras = _extras(holder, key, False)
    json = values.pop(i) if isinstance(values, list) and i < len(values) else None
    extra = extras.pop(i) if extras is not None and i < len(extras) else None
    return json, extra


def _remove(node: Node) -> None:
    holder, key = node.holder, node.key
    assert holder is not None and key is not None
    if node.index is None:
        holder.pop(key, None)
        holder.pop("_" + key, None)
    else:
        _list_pop(holder, key, node.index)


def _tidy(value: Any) -> Any:
    """Drop the empty objects and arrays that edits leave behind: FHIR JSON has none
    (https://hl7.org/fhir/R4/json.html, and ele-1: an element has a value or children)."""
    if isinstance(value, list):
        items = [_tidy(x) for x in value]
        if None in items:  # a primitive array aligned with its `_key` companion: keep places
            return [None if x == {} else x for x in items]
        return [x for x in items if x != {} and x != []]
    if not isinstance(value, dict):
        return value
    for k in list(value):
        v = value[k] = _tidy(value[k])
        if v == {} or v == [] or v is None or (isinstance(v, list) and all(x is None for x in v)):
            del value[k]
    return value


# -- the operations -----------------------------------------------------------------------


class Patcher:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.resolver = Resolver(doc)

    def one(self, steps: list[Step], what: str) -> Node:
        nodes = self.resolver.resolve(steps)
        if not nodes:
            raise PathError(f"no content found at the path ({what})")
        if len(nodes) > 1:
            raise PathError(f"the path matches {len(nodes)} elements; it must match one ({what})")
        return nodes[0]

    def container(self, node: Node) -> tuple[dict, TypeSchema]:
        """Where children of `node` go: its object, or a primitive's `_key` companion."""
        if node.primitive:
            companion = self.resolver.companion(node, create=True)
            assert companion is not None
            node = companion
        got = self.resolver.object_type(node)
        if got is None:
            raise PathError("the path does not name an element that can hold children")
        return got

    def collection(self, steps: list[Step]) -> tuple[dict, str, TypeSchema]:
        """The list a path names (insert, move): its holder and JSON key; may be absent yet."""
        if not steps or steps[-1].kind != "child":
            raise PathError("the path must end with the name of a repeating element")
        prefix = steps[:-1]
        name = steps[-1].name
        if not prefix and name[:1].isupper():
            raise PathError("the path must name a list inside the resource")
        obj, ts = self.container(self.one(prefix, "list holder"))
        keys = _keys_for(ts, obj, name)
        if len(keys) != 1 or not ts.fields[keys[0]][2]:
            raise PathError(f"{ts.name}.{name} is not a repeating element")
        return obj, keys[0], ts

    def apply(self, op: Operation) -> None:
        steps = _parse(op.path)
        getattr(self, op.type)(op, steps)

    def add(self, op: Operation, steps: list[Step]) -> None:
        obj, ts = self.container(self.one(steps, "adding"))
        name = _primitive_part(op.parts["name"], ("valueString", "valueCode"))
        key, json, extra = _fit(_value_part(op.parts["value"]), ts, name)
        if ts.fields[key][2]:
            _list_insert(obj, key, max(_len(obj.get(key)), _len(obj.get("_" + key))), json, extra)
            return
        base = ts.fields[key][5]
        fields = [ts.fields.get(k.removeprefix("_")) for k in obj]
        if any(f is not None and (f is ts.fields[key] or (base and f[5] == base)) for f in fields):
            raise PathError(f"{ts.name}.{name} already has a value; use replace")
        _set_single(obj, key, json, extra)

    def insert(self, op: Operation, steps: list[Step]) -> None:
        obj, key, ts = self.collection(steps)
        index = op.parts["index"]["valueInteger"]
        size = max(_len(obj.get(key)), _len(obj.get("_" + key)))
        if not 0 <= index <= size:
            raise PathError(f"index {index} is outside 0..{size}")
        k, json, extra = _fit(_value_part(op.parts["value"]), ts, key)
        _list_insert(obj, k, index, json, extra)

    def delete(self, op: Operation, steps: list[Step]) -> None:
        nodes = self.resolver.resolve(steps)
        if not nodes:
            return  # "Path of the element to delete (if found)"
        if len(nodes) > 1:
            raise PathError(f"the path matches {len(nodes)} elements; only a single element can be deleted")
        if nodes[0].holder is None:
            raise PathError("the resource itself cannot be deleted by a patch")
        _remove(nodes[0])

    def replace(self, op: Operation, steps: list[Step]) -> None:
        node = self.one(steps, "replacing")
        if node.holder is None or node.owner is None or node.key is None:
            raise PathError("the whole resource cannot be replaced by a patch; use update")
        name = node.field[5] if node.field and node.field[5] else node.key
        key, json, extra = _fit(_value_part(op.parts["value"]), node.owner, name)
        holder = node.holder
        if node.index is None:
            _remove(node)
            _set_single(holder, key, json, extra)
            return
        _list_pop(holder, node.key, node.index)
        _list_insert(holder, node.key, node.index, json, extra)

    def move(self, op: Operation, steps: list[Step]) -> None:
        obj, key, _ = self.collection(steps)
        size = max(_len(obj.get(key)), _len(obj.get("_" + key)))
        source, destination = op.parts["source"]["valueInteger"], op.parts["destination"]["valueInteger"]
        for what, i in (("source", source), ("destination", destination)):
            if not 0 <= i < size:
                raise PathError(f"{what} {i} is outside 0..{size - 1}")
        json, extra = _list_pop(obj, key, source)
        _list_insert(obj, key, destination, json, extra)


def apply_fhirpath_patch(document: dict, parameters: dict) -> dict:
    """Return a patched copy of `document`; the input is never modified.

    A malformed Parameters body is a BadRequest (400); an operation that cannot be applied
    is Unprocessable (422), naming the operation's index and path.
    """
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise BadRequest("FHIRPath Patch body must be a Parameters resource")
    ops = _operations(parameters)
    doc = copy.deepcopy(document)
    patcher = Patcher(doc)
    for op in ops:
        try:
            patcher.apply(op)
        except PathError as exc:
            raise Unprocessable(
                f"FHIRPath Patch operation {op.n} ({op.type} at {op.path!r}): {exc}",
                expression=[f"Parameters.parameter[{op.n}]"],
            ) from None
    return _tidy(doc)
