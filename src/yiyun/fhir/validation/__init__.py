"""Write-time structural validation of FHIR R4 resources (JSON).

    from yiyun.fhir.validation import validate_resource, known_resource_types
    issues = validate_resource(resource)      # [] when valid

Checks each resource against the R4 4.0.1 core StructureDefinitions: resource type,
unknown elements, primitive values, cardinality, arrays, choice types, Reference target
types, required-strength ValueSet bindings, extensions, contained and nested resources.
FHIRPath invariants are not evaluated, except ele-1, ext-1 and dom-2.
See https://hl7.org/fhir/R4/validation.html for what a full validator adds.
"""

from __future__ import annotations

from yiyun.core.errors import Issue
from yiyun.fhir.validation.schema import get_schema
from yiyun.fhir.validation.walker import Walker

__all__ = ["validate_resource", "known_resource_types"]


def validate_resource(resource: object) -> list[Issue]:
    """All problems found in `resource` (a parsed JSON value); [] when it is valid.

    Issues with severity "error" make the resource invalid. Never raises.
    """
    walker = Walker(get_schema())
    try:
        walker.resource(resource, None)
    except RecursionError:
        walker.issues.append(Issue("error", "too-costly", "The resource is nested too deeply to validate", []))
    return walker.issues


def known_resource_types() -> frozenset[str]:
    """The names of all concrete R4 resource types (https://hl7.org/fhir/R4/resourcelist.html)."""
    return get_schema().resources
