"""The CapabilityStatement, generated from what the server implements.

https://hl7.org/fhir/R4/capabilitystatement.html
"""

from __future__ import annotations

from functools import lru_cache

from yiyun import __version__
from yiyun.fhir import search as fhir_search
from yiyun.fhir.types import resource_types

# Functions returning `rest.security` (e.g. SMART's OAuth endpoints), filled by the modules
# that implement it: the FHIR layer itself knows nothing of authentication.
SECURITY_CONTRIBUTORS: list = []

INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]


@lru_cache(maxsize=4)
def _resources() -> tuple:
    out = []
    for res_type in sorted(resource_types()):
        params = fhir_search.known_params(res_type)
        out.append(
            {
                "type": res_type,
                "interaction": [{"code": c} for c in INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "not-supported",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "logical"],
                "searchInclude": ["*"],
                "searchRevInclude": ["*"],
                "searchParam": [
                    {"name": name, "type": d.type, **({"definition": d.url} if getattr(d, "url", None) else {})}
                    for name, d in sorted(params.items())
                ],
            }
        )
    return tuple(out)


def capability_statement(base_url: str, registry) -> dict:
    ops = registry.all()
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "publisher": "yiyun",
        "kind": "instance",
        "software": {"name": "yiyun", "version": __version__},
        "implementation": {"description": "yiyun 医云 FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                **({"security": SECURITY_CONTRIBUTORS[-1]()} if SECURITY_CONTRIBUTORS else {}),
                "resource": list(_resources()),
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "search-system"},
                    {"code": "history-system"},
                ],
                "operation": [
                    {"name": op.name, "definition": op.definition or f"{base_url}/OperationDefinition/{op.name}"}
                    for op in {o.name: o for o in ops}.values()
                ],
            }
        ],
    }
