"""FHIR XML → FHIR JSON, for reading conformance test data (test-only).

The rules are those of https://hl7.org/fhir/R4/xml.html and https://hl7.org/fhir/R4/json.html:
primitives carry their value in a `value` attribute; their `id` and `extension` go to the
`_name` companion property (arrays aligned with nulls for repeating primitives); element ids
and extension urls are attributes; a repeating element becomes a JSON array; booleans and
numbers become JSON booleans and numbers; `Narrative.div` stays XHTML, kept as a string;
a resource is the single child element of `contained`, `entry.resource`, `parameter.resource`.

Which elements repeat, and the type of each, come from the compiled R4 schema that the
store validates with (`yiyun.fhir.validation.schema`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from yiyun.fhir.validation.schema import COMPLEX, PRIMITIVE, RESOURCE, TypeSchema, get_schema

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"

_INTEGERS = {"integer", "positiveInt", "unsignedInt"}


class FhirXmlError(ValueError):
    """The XML is not a FHIR R4 resource this converter understands."""


def _local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def parse_file(path: str | Path) -> dict:
    return resource_to_json(ET.parse(path).getroot())


def parse_string(text: str) -> dict:
    return resource_to_json(ET.fromstring(text))


def resource_to_json(elem: ET.Element) -> dict:
    ns, name = _local(elem.tag)
    schema = get_schema()
    if ns != FHIR_NS or name not in schema.resources:
        raise FhirXmlError(f"not a FHIR resource: {elem.tag}")
    out: dict[str, Any] = {"resourceType": name}
    _children(elem, schema.types[name], out)
    return out


def _primitive(raw: str, tname: str) -> Any:
    if tname == "boolean":
        if raw not in ("true", "false"):
            raise FhirXmlError(f"bad boolean {raw!r}")
        return raw == "true"
    if tname in _INTEGERS:
        return int(raw)
    if tname == "decimal":
        return float(raw) if any(c in raw for c in ".eE") else int(raw)
    return raw


def _element_extras(elem: ET.Element, ts: TypeSchema, out: dict) -> None:
    """Attributes of a complex element: `id`, and `url` on Extension."""
    for attr, val in elem.attrib.items():
        if attr in ("id", "url") and attr in ts.fields:
            out[attr] = val
        elif attr.startswith("{"):
            continue  # xsi:schemaLocation and the like
        else:
            raise FhirXmlError(f"unexpected attribute {attr!r} on {elem.tag}")


def _children(elem: ET.Element, ts: TypeSchema, out: dict) -> None:
    schema = get_schema()
    _element_extras(elem, ts, out)
    companions: dict[str, list] = {}  # `_name` entries, aligned with the values
    for child in elem:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        ns, name = _local(child.tag)
        field = ts.fields.get(name)
        if ns == XHTML_NS and name == "div" and field is not None:
            out["div"] = xhtml_to_string(child)
            continue
        if ns != FHIR_NS or field is None:
            raise FhirXmlError(f"unknown element {name!r} in {ts.name}")
        kind, arg, is_array, _vs, _targets, _choice, tname = field
        if kind == PRIMITIVE:
            value, extra = _primitive_element(child, tname)
            slot = out.setdefault(name, []) if is_array else None
            if is_array:
                slot.append(value)
                companions.setdefault(name, [])
                companions[name].extend([None] * (len(slot) - 1 - len(companions[name])))
                companions[name].append(extra)
            else:
                if value is not None:
                    out[name] = value
                if extra is not None:
                    out["_" + name] = extra
            continue
        if kind == RESOURCE:
            inner = [c for c in child if isinstance(c.tag, str)]
            if len(inner) != 1:
                raise FhirXmlError(f"{name} must hold exactly one resource")
            value = resource_to_json(inner[0])
        else:
            value = {}
            _children(child, arg if kind == COMPLEX else schema.types[tname], value)
        if is_array:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    for name, extras in companions.items():
        if any(e is not None for e in extras):
            extras.extend([None] * (len(out[name]) - len(extras)))
            out["_" + name] = extras
        if all(v is None for v in out[name]):
            del out[name]  # extensions only: https://hl7.org/fhir/R4/json.html#primitive


def _primitive_element(elem: ET.Element, tname: str) -> tuple[Any, dict | None]:
    raw = elem.attrib.get("value")
    value = None if raw is None else _primitive(raw, tname)
    extra: dict[str, Any] = {}
    if "id" in elem.attrib:
        extra["id"] = elem.attrib["id"]
    element = get_schema().element
    for child in elem:
        if not isinstance(child.tag, str):
            continue
        ns, name = _local(child.tag)
        if ns != FHIR_NS or name != "extension":
            raise FhirXmlError(f"primitive {elem.tag} may only hold extensions, found {name!r}")
        ext: dict[str, Any] = {}
        _children(child, element.fields["extension"][1], ext)
        extra.setdefault("extension", []).append(ext)
    return value, (extra or None)


def _escape(text: str, attr: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;") if attr else text


def xhtml_to_string(elem: ET.Element) -> str:
    """Serialise the Narrative div as FHIR JSON carries it: the XHTML default namespace on
    the root `div`, no prefixes (https://hl7.org/fhir/R4/narrative.html#xhtml)."""

    def write(e: ET.Element, root: bool) -> str:
        _, name = _local(e.tag)
        attrs = "".join(f' {_local(k)[1]}="{_escape(v, True)}"' for k, v in e.attrib.items())
        if root:
            attrs = f' xmlns="{XHTML_NS}"' + attrs
        inner = _escape(e.text or "")
        for c in e:
            if isinstance(c.tag, str):
                inner += write(c, False)
            inner += _escape(c.tail or "")
        if not inner:
            return f"<{name}{attrs}/>"
        return f"<{name}{attrs}>{inner}</{name}>"

    return write(elem, True)
