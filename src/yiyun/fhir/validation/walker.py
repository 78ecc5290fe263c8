"""Walks a JSON resource against the compiled schema and collects Issues.

Structure rules: https://hl7.org/fhir/R4/json.html and
https://hl7.org/fhir/R4/elementdefinition.html (cardinality, types, bindings).
Written as plain loops over dicts because it runs on every write.
"""

from __future__ import annotations

from yiyun.core.errors import Issue
from yiyun.fhir.validation.primitives import EXPECTED
from yiyun.fhir.validation.schema import COMPLEX, PRIMITIVE, Schema, TypeSchema, ValueSet

_MAX_SHOWN = 60


def _show(v: object) -> str:
    try:
        text = repr(v)
    except Exception:  # pragma: no cover - repr of JSON values does not fail
        text = f"<{type(v).__name__}>"
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _jtype(v: object) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


class Walker:
    __slots__ = ("schema", "types", "resources", "element", "extension", "issues")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.types = schema.types
        self.resources = schema.resources
        self.element = schema.element
        self.extension = schema.types["Extension"]
        self.issues: list[Issue] = []

    def error(self, code: str, message: str, path: str) -> None:
        self.issues.append(Issue("error", code, message, [path]))

    # -- resources -----------------------------------------------------------------

    def resource(self, res: object, path: str | None, in_contained: bool = False) -> None:
        """Validate a resource; path is None at the top level, else where it is nested."""
        if type(res) is not dict:
            self.error("structure", f"A resource must be a JSON object, not {_jtype(res)}", path or "Resource")
            return
        rt = res.get("resourceType")
        if rt is None or (type(rt) is str and rt not in self.resources):
            where = "resourceType" if path is None else path + ".resourceType"
            if rt is None:
                self.error("required", "resourceType is missing", where)
            else:
                self.error("not-supported", f"Unknown resource type {_show(rt)}", where)
            return
        if type(rt) is not str:
            where = "resourceType" if path is None else path + ".resourceType"
            self.error("structure", f"resourceType must be a string, not {_jtype(rt)}", where)
            return
        if path is None:
            path = rt
        elif in_contained and "contained" in res:
            # dom-2: https://hl7.org/fhir/R4/domainresource.html#invs
            self.error(
                "invariant", "dom-2: a contained resource SHALL NOT contain other resources", path + ".contained"
            )
        self.obj(res, self.types[rt], path)

    # -- elements ------------------------------------------------------------------

    def obj(self, obj: dict, ts: TypeSchema, path: str) -> None:
        """One JSON object against its type. Kept as one loop: it runs for every node."""
        fields = ts.fields
        choices: dict[str, str] | None = None
        if len(obj) < 2 and (not obj or "id" in obj):
            # ele-1: https://hl7.org/fhir/R4/element.html#invs
            self.error("invariant", "ele-1: an element must have a value or children", path)
        for key, val in obj.items():
            f = fields.get(key)
            if f is None:
                if type(key) is str and key[:1] == "_":
                    f = fields.get(key[1:])
                    if f is not None and f[0] == PRIMITIVE:
                        if f[5] is not None:
                            if choices is None:
                                choices = {f[5]: key[1:]}
                            elif choices.setdefault(f[5], key[1:]) != key[1:]:
                                self.two_choices(f[5], choices[f[5]], key, path)
                        self.primitive_extension(obj, key, val, f, path)
                        continue
                self.other_key(ts, key, path)
                continue
            kind, arg, is_array, vs, targets, choice, tname = f
            if choice is not None:
                if choices is None:
                    choices = {choice: key}
                elif choices.setdefault(choice, key) != key:
                    self.two_choices(choice, choices[choice], key, path)
            if is_array:
                if type(val) is not list:
                    self.error(
                        "structure", f"{key} repeats and must be a JSON array, not {_jtype(val)}", f"{path}.{key}"
                    )
                    continue
                if not val:
                    self.error("structure", f"{key} is an empty array; omit it instead", f"{path}.{key}")
                    continue
                if kind == PRIMITIVE:
                    for i, item in enumerate(val):
                        if not arg(item):
                            self.bad_primitive(obj, key, item, tname, f"{path}.{key}[{i}]", i)
                        elif vs is not None and item not in vs.codes:
                            self.bad_code(vs, item, f"{path}.{key}[{i}]")
                elif kind == COMPLEX:
                    for i, item in enumerate(val):
                        if type(item) is dict:
                            ipath = f"{path}.{key}[{i}]"
                            self.obj(item, arg, ipath)
                            if vs is not None or targets is not None:
                                self.post_complex(item, tname, vs, targets, ipath)
                        else:
                            self.not_object(item, f"{path}.{key}[{i}]")
                else:
                    for i, item in enumerate(val):
                        self.resource(item, f"{path}.{key}[{i}]", key == "contained")
            else:
                if type(val) is list:
                    self.error("structure", f"{key} does not repeat and must not be a JSON array", f"{path}.{key}")
                    continue
                if kind == PRIMITIVE:
                    if not arg(val):
                        self.bad_primitive(obj, key, val, tname, f"{path}.{key}", None)
                    elif vs is not None and val not in vs.codes:
                        self.bad_code(vs, val, f"{path}.{key}")
                elif kind == COMPLEX:
                    if type(val) is dict:
                        ipath = f"{path}.{key}"
                        self.obj(val, arg, ipath)
                        if vs is not None or targets is not None:
                            self.post_complex(val, tname, vs, targets, ipath)
                    else:
                        self.not_object(val, f"{path}.{key}")
                else:
                    self.resource(val, f"{path}.{key}")
        for elem, keys in ts.required:
            for k in keys:
                if k in obj:
                    break
            else:
                self.error("required", f"{elem} is required (min 1)", f"{path}.{elem}")
        if ts is self.extension:
            self.extension_rules(obj, path)

    def other_key(self, ts: TypeSchema, key: object, path: str) -> None:
        if key == "resourceType" and ts.is_resource:
            return
        self.error("structure", f"Unknown element {_show(key)} in {ts.name}", f"{path}.{key}")

    def primitive_extension(self, obj: dict, key: str, val: object, f: tuple, path: str) -> None:
        """`_name` carries id/extension of primitive `name`: https://hl7.org/fhir/R4/json.html#primitive"""
        base = key[1:]
        is_array = f[2]
        element = self.element
        if is_array:
            values = obj.get(base)
            if type(val) is not list:
                self.error("structure", f"{key} must be a JSON array like {base}", f"{path}.{key}")
                return
            if not val:
                self.error("structure", f"{key} is an empty array; omit it instead", f"{path}.{key}")
                return
            if type(values) is list and len(values) != len(val):
                self.error("structure", f"{key} must have as many entries as {base}", f"{path}.{key}")
            for i, item in enumerate(val):
                if item is None:
                    if type(values) is not list or i >= len(values) or values[i] is None:
                        self.error("structure", "null is not allowed where there is no value", f"{path}.{key}[{i}]")
                elif type(item) is dict:
                    self.obj(item, element, f"{path}.{key}[{i}]")
                else:
                    self.not_object(item, f"{path}.{key}[{i}]")
        elif type(val) is dict:
            self.obj(val, element, f"{path}.{key}")
        elif type(val) is list:
            self.error("structure", f"{base} does not repeat, so {key} must not be a JSON array", f"{path}.{key}")
        else:
            self.not_object(val, f"{path}.{key}")

    def extension_rules(self, ext: dict, path: str) -> None:
        """ext-1: https://hl7.org/fhir/R4/extensibility.html#ext-1"""
        has_value = False
        for k in ext:
            if type(k) is str and (k[:5] == "value" or k[:6] == "_value"):
                has_value = True
                break
        if has_value == ("extension" in ext):
            self.error("invariant", "ext-1: an extension must have either extensions or value[x], not both", path)

    # -- problems ------------------------------------------------------------------

    def bad_primitive(self, obj: dict, key: str, val: object, tname: str, path: str, index: int | None) -> None:
        if val is None:
            ext = obj.get("_" + key)
            if index is not None and type(ext) is list and index < len(ext) and type(ext[index]) is dict:
                return  # the value is absent but the extension is there: allowed
            self.error("structure", "null is not allowed in FHIR JSON; omit the element", path)
            return
        self.error("value", f"Invalid {tname} {_show(val)}: expected {EXPECTED[tname]}", path)

    def two_choices(self, choice: str, first: str, second: str, path: str) -> None:
        message = f"Only one {choice}[x] is allowed: found {first} and {second.lstrip('_')}"
        self.error("structure", message, f"{path}.{second}")

    def not_object(self, val: object, path: str) -> None:
        if val is None:
            self.error("structure", "null is not allowed in FHIR JSON; omit the element", path)
        else:
            self.error("structure", f"Expected a JSON object, not {_jtype(val)}", path)

    def bad_code(self, vs: ValueSet, code: object, path: str) -> None:
        self.error("code-invalid", f"Code {_show(code)} is not in the required value set {vs.url}", path)

    # -- datatype rules ------------------------------------------------------------

    def post_complex(self, item: dict, tname: str, vs: ValueSet | None, targets, path: str) -> None:
        if targets is not None:
            self.reference_target(item, targets, path)
        if vs is not None:
            if tname == "CodeableConcept":
                self.codeable_concept(item, vs, path)
            elif tname == "Coding":
                system = item.get("system")
                if type(system) is str and system in vs.systems:
                    code = item.get("code")
                    if type(code) is str and code not in vs.systems[system]:
                        self.bad_code(vs, code, path + ".code")

    def codeable_concept(self, cc: dict, vs: ValueSet, path: str) -> None:
        """Required binding: https://hl7.org/fhir/R4/terminologies.html#required"""
        codings = cc.get("coding")
        if type(codings) is not list:
            return
        first_bad = None
        systems = vs.systems
        for i, c in enumerate(codings):
            if type(c) is not dict:
                continue
            system = c.get("system")
            code = c.get("code")
            if type(system) is str and type(code) is str and system in systems:
                if code in systems[system]:
                    return
                if first_bad is None:
                    first_bad = (i, code)
        if first_bad is not None:
            i, code = first_bad
            self.bad_code(vs, code, f"{path}.coding[{i}].code")

    def reference_target(self, ref: dict, targets: frozenset[str], path: str) -> None:
        """Literal references name their type: https://hl7.org/fhir/R4/references.html#literal"""
        url = ref.get("reference")
        if type(url) is str and url and url[0] != "#" and not url.startswith("urn:"):
            q = url.find("?")
            if q >= 0:
                # A conditional reference Type?search, allowed in transactions.
                parts = [url[:q], ""]
            else:
                parts = url.split("/")
                if len(parts) >= 4 and parts[-2] == "_history":
                    del parts[-2:]
            if len(parts) >= 2:
                rtype = parts[-2]
                if rtype not in targets and rtype in self.resources:
                    self.error(
                        "value",
                        f"Reference to {rtype} is not allowed here; allowed: {', '.join(sorted(targets))}",
                        path + ".reference",
                    )
        rtype = ref.get("type")
        if type(rtype) is str and rtype not in targets and rtype in self.resources:
            self.error(
                "value",
                f"Reference type {rtype} is not allowed here; allowed: {', '.join(sorted(targets))}",
                path + ".type",
            )
