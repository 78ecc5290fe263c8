"""JSON Patch (RFC 6902) applied to a resource, as FHIR's PATCH interaction requires.

https://hl7.org/fhir/R4/http.html#patch — `application/json-patch+json` bodies.
"""

from __future__ import annotations

import copy
from typing import Any

from yiyun.core.errors import Unprocessable, BadRequest


class PatchError(Unprocessable):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON Pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if i > limit:
        raise PatchError(f"array index {i} out of range")
    return i


def _parent(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    node = doc
    for t in tokens[:-1]:
        node = _child(node, t)
    return node, tokens[-1]


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise PatchError(f"path element {token!r} does not exist")
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, allow_end=False)]
    raise PatchError(f"cannot descend into a scalar at {token!r}")


def _get(doc: Any, path: str) -> Any:
    node = doc
    for t in _pointer(path):
        node = _child(node, t)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add to a scalar at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _parent(doc, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, allow_end=False)]
    else:
        raise PatchError(f"cannot remove from a scalar at {path!r}")
    return doc


def apply_json_patch(document: dict, operations: Any) -> dict:
    """Return a patched copy; the input is never modified (a failed patch changes nothing)."""
    if not isinstance(operations, list):
        raise BadRequest("JSON Patch body must be an array of operations")
    doc: Any = copy.deepcopy(document)
    for n, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op or not isinstance(op["path"], str):
            raise BadRequest(f"JSON Patch operation {n} needs 'op' and a string 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadRequest(f"JSON Patch operation {n} ({kind}) needs 'value'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _add(_remove(doc, path), path, copy.deepcopy(op["value"])) if _pointer(path) else op["value"]
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise BadRequest(f"JSON Patch operation {n} ({kind}) needs 'from'")
            if kind == "move" and path.startswith(source + "/"):
                raise PatchError("cannot move a value into one of its own children")
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc = _remove(doc, source)
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"test failed at {path!r}")
        else:
            raise BadRequest(f"unknown JSON Patch operation {kind!r}")
    if not isinstance(doc, dict):
        raise PatchError("the patched document is not a resource")
    return doc


def apply_patch(document: dict, body: Any) -> dict:
    """PATCH bodies: a JSON Patch array, or a FHIRPath Patch `Parameters` resource
    (https://hl7.org/fhir/R4/fhirpatch.html)."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        from yiyun.fhir.fhirpath_patch import apply_fhirpath_patch

        return apply_fhirpath_patch(document, body)
    return apply_json_patch(document, body)
