"""Compile the FHIR R4 core StructureDefinitions and required ValueSets into the
compact schema that `yiyun.fhir.validation` walks at write time.

Usage:
    python scripts/build_validation_data.py [--data DIR] [--out FILE]

DIR defaults to $YIYUN_SHARED_DATA or <repo>/../shared/data; it must contain
fhir/r4-spec/definitions/ (StructureDefinition-*.json and the two terminology
Bundles of the hl7.fhir.r4 4.0.1 release). The output is deterministic, so a
rebuild from the same inputs gives a byte-identical file.

Output layout (gzipped JSON, see src/yiyun/fhir/data/validation/README.md):
    resources   concrete resource type names (https://hl7.org/fhir/R4/resourcelist.html)
    types       {type name: {"f": {json key: [type, is_array, binding, targets, choice]},
                             "r": [[element name, [json keys...]], ...]}}
                 type is a primitive code ("string", "dateTime"...), "Resource", or the
                 name of another entry in `types` (datatypes, and "Patient.contact"-style
                 names for BackboneElements); binding and targets index the tables below.
    valuesets   [[canonical url, {system: [codes...]}], ...] required bindings that could be
                 expanded from the staged terminology
    targets     [[resource type, ...], ...] allowed Reference targets
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "yiyun" / "fhir" / "data" / "validation" / "r4-schema.json.gz"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def default_data_dir() -> Path:
    env = os.environ.get("YIYUN_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def strip_version(canonical: str) -> str:
    # Core canonicals carry "|4.0.1": https://hl7.org/fhir/R4/references.html#canonical
    return canonical.split("|", 1)[0]


class Terminology:
    """Expands ValueSets by their compose rules; None when that cannot be done exactly."""

    def __init__(self, bundles: list[dict]) -> None:
        self.valuesets: dict[str, dict] = {}
        self.codesystems: dict[str, dict] = {}
        for bundle in bundles:
            for entry in bundle.get("entry", []):
                res = entry.get("resource", {})
                if res.get("resourceType") == "ValueSet":
                    self.valuesets[res["url"]] = res
                elif res.get("resourceType") == "CodeSystem":
                    self.codesystems[res["url"]] = res
        self._cache: dict[str, dict[str, set[str]] | None] = {}

    def expand(self, url: str, stack: tuple[str, ...] = ()) -> dict[str, set[str]] | None:
        if url in self._cache:
            return self._cache[url]
        if url in stack:
            return None
        vs = self.valuesets.get(url)
        result = None if vs is None else self._expand_vs(vs, stack + (url,))
        self._cache[url] = result
        return result

    def _expand_vs(self, vs: dict, stack: tuple[str, ...]) -> dict[str, set[str]] | None:
        compose = vs.get("compose")
        if not compose:
            return None
        out: dict[str, set[str]] = {}
        for inc in compose.get("include", []):
            part = self._expand_include(inc, stack)
            if part is None:
                return None
            for system, codes in part.items():
                out.setdefault(system, set()).update(codes)
        for exc in compose.get("exclude", []):
            if exc.get("filter") or exc.get("valueSet") or not exc.get("concept"):
                return None
            out.get(exc.get("system"), set()).difference_update(c["code"] for c in exc["concept"])
        return out or None

    def _expand_include(self, inc: dict, stack: tuple[str, ...]) -> dict[str, set[str]] | None:
        if inc.get("filter"):
            return None  # filters need the code system's properties and hierarchy semantics
        if inc.get("valueSet"):
            if inc.get("system"):
                return None  # intersection semantics; not used by core required bindings
            out: dict[str, set[str]] = {}
            for ref in inc["valueSet"]:
                part = self.expand(strip_version(ref), stack)
                if part is None:
                    return None
                for system, codes in part.items():
                    out.setdefault(system, set()).update(codes)
            return out
        system = inc.get("system")
        if not system:
            return None
        if inc.get("concept"):
            return {system: {c["code"] for c in inc["concept"]}}
        cs = self.codesystems.get(system)
        if cs is None or cs.get("content", "complete") != "complete":
            return None  # UCUM, BCP-13 (MIME), BCP-47, ISO 4217 ... have no CodeSystem here
        codes: set[str] = set()
        stack_c = list(cs.get("concept", []))
        while stack_c:
            c = stack_c.pop()
            codes.add(c["code"])
            stack_c.extend(c.get("concept", []))
        return {system: codes} if codes else None


class SchemaBuilder:
    def __init__(self, sds: list[dict], term: Terminology) -> None:
        self.sds = sds
        self.term = term
        self.types: dict[str, dict] = {}
        self.vs_index: dict[str, int] = {}
        self.valuesets: list = []
        self.target_index: dict[tuple[str, ...], int] = {}
        self.targets: list[list[str]] = []
        self.required_seen: set[str] = set()
        self.required_unexpanded: set[str] = set()

    def build(self) -> dict:
        resources = sorted(
            sd["id"] for sd in self.sds if sd["kind"] == "resource" and not sd.get("abstract")
        )
        for sd in sorted(self.sds, key=lambda s: s["id"]):
            if sd["kind"] in ("resource", "complex-type") and sd["id"] != "MetadataResource":
                self._compile_sd(sd)
        return {
            "fhirVersion": "4.0.1",
            "resources": resources,
            "types": self.types,
            "valuesets": self.valuesets,
            "targets": self.targets,
        }

    def _compile_sd(self, sd: dict) -> None:
        name = sd["id"]  # "SimpleQuantity" for the constraint on Quantity
        root = sd["type"]
        elements = [e for e in sd["snapshot"]["element"] if e.get("max") != "0"]
        children: dict[str, list[dict]] = {}
        by_path: dict[str, dict] = {}
        for e in elements:
            by_path[e["path"]] = e
            if "." in e["path"]:
                children.setdefault(e["path"].rsplit(".", 1)[0], []).append(e)

        def type_name(path: str) -> str:
            # BackboneElements become their own entry, named as in the definition paths.
            return name + path[len(root):] if path != root else name

        for parent, elems in children.items():
            is_resource = sd["kind"] == "resource"
            fields: dict[str, list] = {}
            required: list[list] = []
            for e in elems:
                ename = e["path"].rsplit(".", 1)[1]
                is_array = 1 if e["max"] == "*" else 0
                if "contentReference" in e:
                    ref_path = e["contentReference"].lstrip("#")
                    codes = [(type_name(ref_path), None)]
                    if ref_path not in children:
                        raise SystemExit(f"unresolved contentReference {e['contentReference']}")
                elif e["path"] in children:
                    codes = [(type_name(e["path"]), None)]
                else:
                    codes = [self._type_code(t, e, is_resource, parent == root) for t in e["type"]]
                binding = self._binding(e)
                keys: list[str] = []
                if ename.endswith("[x]"):
                    base = ename[:-3]
                    for code, targets in codes:
                        # SimpleQuantity is a profile: the JSON name stays valueQuantity.
                        jname = "Quantity" if code == "SimpleQuantity" else code
                        key = base + jname[0].upper() + jname[1:]
                        coded = code in ("code", "Coding", "CodeableConcept")
                        fields[key] = [code, is_array, binding if coded else None, targets, base]
                        keys.append(key)
                else:
                    if len(codes) != 1:
                        raise SystemExit(f"{e['path']}: several types without [x]")
                    code, targets = codes[0]
                    fields[ename] = [code, is_array, binding, targets, None]
                    keys.append(ename)
                if e["min"] > 0:
                    required.append([ename.removesuffix("[x]"), keys])
            self.types[type_name(parent)] = {"f": fields, "r": required}

    def _type_code(self, t: dict, e: dict, is_resource: bool, top: bool) -> tuple[str, int | None]:
        code = t["code"]
        if code.startswith("http://hl7.org/fhirpath/System."):
            code = next(x["valueUrl"] for x in t.get("extension", []) if x["url"] == FHIR_TYPE_EXT)
            if is_resource and top and e["path"].endswith(".id"):
                # Resource.id is an `id`: https://hl7.org/fhir/R4/resource.html#id
                code = "id"
        if code == "Quantity" and SD_PREFIX + "SimpleQuantity" in t.get("profile", []):
            code = "SimpleQuantity"
        targets = None
        if code == "Reference":
            names = sorted({p.rsplit("/", 1)[1] for p in t.get("targetProfile", [])})
            if names and "Resource" not in names:
                targets = self._target_id(tuple(names))
        return code, targets

    def _target_id(self, names: tuple[str, ...]) -> int:
        if names not in self.target_index:
            self.target_index[names] = len(self.targets)
            self.targets.append(list(names))
        return self.target_index[names]

    def _binding(self, e: dict) -> int | None:
        b = e.get("binding")
        if not b or b.get("strength") != "required" or not b.get("valueSet"):
            return None
        url = strip_version(b["valueSet"])
        self.required_seen.add(url)
        if url not in self.vs_index:
            expansion = self.term.expand(url)
            if expansion is None:
                self.required_unexpanded.add(url)
                return None
            self.vs_index[url] = len(self.valuesets)
            self.valuesets.append([url, {s: sorted(c) for s, c in sorted(expansion.items())}])
        return self.vs_index[url]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    defs = args.data / "fhir" / "r4-spec" / "definitions"
    sds = [json.loads(p.read_text("utf-8")) for p in sorted(defs.glob("StructureDefinition-*.json"))]
    bundles = [json.loads((defs / f).read_text("utf-8")) for f in ("Bundle-valuesets.json", "Bundle-v3-valuesets.json")]
    builder = SchemaBuilder(sds, Terminology(bundles))
    schema = builder.build()
    raw = json.dumps(schema, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as fh:
        # mtime=0 keeps the archive byte-identical across rebuilds.
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
            gz.write(raw)
    print(
        f"{len(schema['resources'])} resources, {len(schema['types'])} types, "
        f"{len(schema['valuesets'])} value sets expanded, "
        f"{len(builder.required_unexpanded)} of {len(builder.required_seen)} required value sets skipped "
        f"({', '.join(sorted(builder.required_unexpanded))}); "
        f"{len(raw):,} bytes JSON -> {args.out.stat().st_size:,} bytes gz at {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
