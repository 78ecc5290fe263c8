"""The precompiled R4 schema, loaded once and turned into plain tuples for the walker.

The data file is produced by scripts/build_validation_data.py from the R4 4.0.1
StructureDefinitions (snapshot elements) and the required-strength ValueSets.
"""

from __future__ import annotations

import gzip
import json
import threading
from importlib import resources

from yiyun.fhir.validation.primitives import CHECKERS

SCHEMA_FILE = "r4-schema.json.gz"

# Field kinds.
PRIMITIVE = 0
COMPLEX = 1
RESOURCE = 2


class ValueSet:
    """The codes of one expanded required ValueSet."""

    __slots__ = ("url", "systems", "codes")

    def __init__(self, url: str, systems: dict[str, list[str]]) -> None:
        self.url = url
        self.systems = {s: frozenset(c) for s, c in systems.items()}
        self.codes = frozenset(c for cs in systems.values() for c in cs)


class TypeSchema:
    """One datatype, resource or BackboneElement.

    fields maps each JSON property name to a Field tuple:
        (kind, arg, is_array, valueset | None, targets | None, choice base | None, type name)
    where arg is the primitive checker or the child TypeSchema. required lists
    (element name, JSON names that satisfy it, primitive-extension names included).
    """

    __slots__ = ("name", "fields", "required", "is_resource")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, tuple] = {}
        self.required: tuple[tuple[str, tuple[str, ...]], ...] = ()
        self.is_resource = False


class Schema:
    __slots__ = ("types", "resources", "element")

    def __init__(self, raw: dict) -> None:
        self.resources: frozenset[str] = frozenset(raw["resources"])
        valuesets = [ValueSet(url, systems) for url, systems in raw["valuesets"]]
        targets = [frozenset(t) for t in raw["targets"]]
        types = {name: TypeSchema(name) for name in raw["types"]}
        for name, spec in raw["types"].items():
            ts = types[name]
            ts.is_resource = name in self.resources
            prim_names: set[str] = set()
            for key, (code, is_array, binding, target, choice) in spec["f"].items():
                vs = None if binding is None else valuesets[binding]
                tg = None if target is None else targets[target]
                checker = CHECKERS.get(code)
                if checker is not None:
                    ts.fields[key] = (PRIMITIVE, checker, bool(is_array), vs, None, choice, code)
                    prim_names.add(key)
                elif code == "Resource":
                    ts.fields[key] = (RESOURCE, None, bool(is_array), None, None, choice, code)
                else:
                    ts.fields[key] = (COMPLEX, types[code], bool(is_array), vs, tg, choice, code)
            ts.required = tuple(
                (elem, tuple(k for key in keys for k in ((key, "_" + key) if key in prim_names else (key,))))
                for elem, keys in spec["r"]
            )
        self.types = types
        # Primitive extensions (`_name`) carry only id and extension:
        # https://hl7.org/fhir/R4/json.html#primitive
        self.element = types["Element"]


_lock = threading.Lock()
_schema: Schema | None = None


def get_schema() -> Schema:
    global _schema
    if _schema is None:
        with _lock:
            if _schema is None:
                data = resources.files("yiyun.fhir").joinpath("data", "validation", SCHEMA_FILE).read_bytes()
                _schema = Schema(json.loads(gzip.decompress(data)))
    return _schema
