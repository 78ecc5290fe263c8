"""The one hook point every FHIR read and write passes.

The repository asks the policy before and after each interaction and lets it narrow
searches. The identity module installs a policy that decides by role, scope, compartment
and consent and writes the audit trail; until then `TenantPolicy` keeps each tenant's
resources to itself and records nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.sql.elements import ColumnElement

from yiyun.fhir.model import RequestContext, StoredResource


class AccessPolicy(Protocol):
    async def check(
        self, ctx: RequestContext, action: str, res_type: str | None, res_id: str | None, resource: dict | None
    ) -> None:
        """Raise `Forbidden` (or `NotFound` to hide existence) to refuse an interaction."""

    def can_see(self, ctx: RequestContext, stored: StoredResource) -> bool:
        """Whether a fetched resource may be shown (compartments, consent)."""

    def search_filter(self, ctx: RequestContext, table: Any, res_type: str) -> ColumnElement | None:
        """An extra SQL condition on `fhir_resource` rows for searches and includes."""

    async def record(
        self, ctx: RequestContext, action: str, res_type: str | None, res_id: str | None, outcome: str, detail: Any = None
    ) -> None:
        """Audit one interaction (called after it succeeds or fails)."""


class TenantPolicy:
    """Tenant isolation only: the repository already scopes every query to `ctx.tenant`."""

    async def check(self, ctx, action, res_type, res_id, resource) -> None:
        return None

    def can_see(self, ctx, stored) -> bool:
        return stored.tenant == ctx.tenant

    def search_filter(self, ctx, table, res_type):
        return None

    async def record(self, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        return None


_policy: AccessPolicy = TenantPolicy()


def install_policy(policy: AccessPolicy) -> None:
    """Called once at start-up by the composition root."""
    global _policy
    _policy = policy


def current_policy() -> AccessPolicy:
    return _policy
