"""SMART App Launch v2 scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

`(patient|user|system)/(Type|*).(c?r?u?d?s?)` with an optional `?param=value` filter; the
v1 suffixes `.read` (= `rs`) and `.write` (= `cud`) are accepted. Other scopes
(`openid`, `fhirUser`, `launch/patient`, `offline_access` …) pass through as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yiyun.core.errors import BadRequest

_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/([A-Z][A-Za-z]+|\*)\.([a-z]+)(\?.*)?$")
PERMISSIONS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
OTHER_SCOPES = {"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter", "offline_access", "online_access"}


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    permissions: frozenset[str]  # subset of c r u d s
    query: str | None = None  # granular filter, e.g. "category=vital-signs"

    def allows(self, resource_type: str, permission: str) -> bool:
        return (self.resource_type in ("*", resource_type)) and permission in self.permissions

    def __str__(self) -> str:
        perms = "".join(p for p in PERMISSIONS if p in self.permissions)
        return f"{self.context}/{self.resource_type}.{perms}" + (f"?{self.query}" if self.query else "")


def parse_scope(text: str) -> ResourceScope | str:
    m = _RESOURCE_SCOPE.match(text)
    if not m:
        if text in OTHER_SCOPES:
            return text
        raise BadRequest(f"无法识别的授权范围 {text!r} (unknown scope)")
    context, rtype, perms, query = m.groups()
    perms = V1.get(perms, perms)
    if not perms or any(p not in PERMISSIONS for p in perms) or list(perms) != sorted(perms, key=PERMISSIONS.index):
        raise BadRequest(f"授权范围 {text!r} 的权限部分不合法 (permissions must be c, r, u, d, s in order)")
    return ResourceScope(context, rtype, frozenset(perms), query[1:] if query else None)


def parse_scopes(text: str) -> list[ResourceScope | str]:
    return [parse_scope(s) for s in text.split() if s]


def normalise(text: str) -> str:
    return " ".join(str(s) for s in parse_scopes(text))
