"""Compile the HL7 FHIR R4 (4.0.1) search definitions into the compact files that
`yiyun.fhir.search` loads at import.

Usage:
    python scripts/build_search_data.py [--data DIR] [--out DIR]

DIR defaults to $YIYUN_SHARED_DATA or <repo>/../shared/data and must contain
fhir/r4-spec/definitions/ (Bundle-searchParams.json and StructureDefinition-*.json of the
hl7.fhir.r4 4.0.1 release, CC0-1.0). Output is deterministic (sorted, no timestamps).

Outputs (gzipped JSON, see src/yiyun/fhir/data/search/README.md):
    search-parameters.json.gz  [{url, code, base[], type, expression, target[], modifier[],
                                  component[{type, expression}], description}] for every
                                 SearchParameter of the release, in Bundle order
    elements.json.gz           {"resources": [concrete resource types],
                                 "types": {element path: [type codes]},
                                 "refs": {element path: content reference path}}
                                 for every element of every resource and complex datatype;
                                 the search compiler uses it to resolve choice elements
                                 (value[x] -> valueQuantity ...) and BackboneElement paths.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "yiyun" / "fhir" / "data" / "search"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def default_data_dir() -> Path:
    env = os.environ.get("YIYUN_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def type_code(t: dict) -> str:
    for ext in t.get("extension", []):
        if ext.get("url") == FHIR_TYPE_EXT:
            return ext.get("valueUrl") or ext.get("valueUri") or t["code"]
    return t["code"]


def build_elements(defs: Path) -> dict:
    types: dict[str, list[str]] = {}
    refs: dict[str, str] = {}
    resources: list[str] = []
    for f in sorted(defs.glob("StructureDefinition-*.json")):
        sd = json.loads(f.read_text(encoding="utf-8"))
        if sd.get("kind") not in ("resource", "complex-type") or sd.get("derivation") == "constraint":
            continue
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resources.append(sd["type"])
        for el in sd.get("snapshot", {}).get("element", []):
            path = el["path"]
            if "." not in path:
                continue
            if "contentReference" in el:
                refs[path] = el["contentReference"].lstrip("#")
            elif el.get("type"):
                types[path] = [type_code(t) for t in el["type"]]
    return {
        "resources": sorted(resources),
        "types": dict(sorted(types.items())),
        "refs": dict(sorted(refs.items())),
    }


def build_params(defs: Path) -> list[dict]:
    bundle = json.loads((defs / "Bundle-searchParams.json").read_text(encoding="utf-8"))
    params = [e["resource"] for e in bundle["entry"]]
    by_url = {p["url"]: p for p in params}
    out = []
    for p in params:
        item = {
            "url": p["url"],
            "code": p["code"],
            "base": p["base"],
            "type": p["type"],
            "expression": p.get("expression"),
            "target": p.get("target", []),
            "modifier": p.get("modifier", []),
            "description": p.get("description", "").split("\r\n")[0][:300],
        }
        if p.get("component"):
            item["component"] = [
                {"type": by_url[c["definition"]]["type"], "expression": c["expression"], "definition": c["definition"]}
                for c in p["component"]
            ]
        out.append(item)
    return out


def write_gz(path: Path, obj) -> None:
    raw = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=False).encode()
    with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    defs = args.data / "fhir" / "r4-spec" / "definitions"
    args.out.mkdir(parents=True, exist_ok=True)
    params = build_params(defs)
    elements = build_elements(defs)
    write_gz(args.out / "search-parameters.json.gz", params)
    write_gz(args.out / "elements.json.gz", elements)
    print(f"{len(params)} search parameters, {len(elements['types'])} elements -> {args.out}")


if __name__ == "__main__":
    main()
