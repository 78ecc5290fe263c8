"""Comparing scope sets: what a client registered, what it asks for, what it may get.

SMART v2 resource scopes (`yiyun.identity.scopes`) compare by context, type, permission
letters and granular filter; other scopes (`openid`, `launch/patient`, `offline_access` …)
compare literally.
"""

from __future__ import annotations

from yiyun.core.errors import BadRequest
from yiyun.identity.scopes import PERMISSIONS, ResourceScope, normalise, parse_scopes


def parsed(scope: str) -> list[ResourceScope | str]:
    try:
        return parse_scopes(normalise(scope))
    except BadRequest:
        from yiyun.identity.oauth.errors import invalid_scope

        raise invalid_scope("范围格式不正确 (malformed scope)") from None


def covers(big: ResourceScope, small: ResourceScope) -> bool:
    return (big.context == small.context and big.resource_type in ("*", small.resource_type)
            and small.permissions <= big.permissions and (big.query is None or big.query == small.query))


def covered(scope: ResourceScope | str, registered: list[ResourceScope | str]) -> bool:
    if isinstance(scope, str):
        return scope in registered
    return any(isinstance(r, ResourceScope) and covers(r, scope) for r in registered)


def uncovered(requested: str, registered: str) -> list[str]:
    """The requested scopes no registered scope allows (an escalation)."""
    reg = parsed(registered)
    return [str(s) for s in parsed(requested) if not covered(s, reg)]


def narrower_or_equal(requested: str, granted: str) -> bool:
    return not uncovered(requested, granted)


def _meet(a: ResourceScope, b: ResourceScope) -> ResourceScope | None:
    if a.context != b.context or "*" not in (a.resource_type, b.resource_type) and a.resource_type != b.resource_type:
        return None
    perms = a.permissions & b.permissions
    if not perms or (a.query and b.query and a.query != b.query):
        return None
    rtype = a.resource_type if a.resource_type != "*" else b.resource_type
    return ResourceScope(a.context, rtype, frozenset(perms), a.query or b.query)


def intersect_scopes(requested: str, registered: str, *, contexts: tuple[str, ...]) -> str:
    """What of `requested` the registration allows, limited to resource scopes of `contexts`
    (for the client-credentials grant: `system/` only)."""
    reg = [r for r in parsed(registered) if isinstance(r, ResourceScope)]
    out: list[str] = []
    for s in parsed(requested):
        if not isinstance(s, ResourceScope) or s.context not in contexts:
            continue
        for r in reg:
            m = _meet(s, r)
            if m is not None and str(m) not in out:
                out.append(str(m))
    return " ".join(out)


def permissions_text(scope: ResourceScope) -> str:
    return "".join(p for p in PERMISSIONS if p in scope.permissions)
