"""FHIR id and reference rules (https://hl7.org/fhir/R4/datatypes.html#id)."""

from __future__ import annotations

import re
import uuid

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value))


def new_id() -> str:
    return str(uuid.uuid4())
