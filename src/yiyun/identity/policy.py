"""The access policy every FHIR repository call passes: role + scope + compartment (+ consent).

Installed by the composition root (`yiyun.fhir.access.install_policy`). One decision
function, `decide`, answers for every interaction; `search_filter` and `can_see` apply
the same answer to rows (searches, `_include`/`_revinclude`, chains, `_has`, history,
bulk export), so a resource hidden from a read is hidden everywhere.

Scopes are SMART App Launch v2
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):

- the interaction needs its permission letter: read/vread/history → `r`, search → `s`,
  create → `c`, update/patch → `u`, delete → `d`; `$export` needs `r` and `s` on every type
  it writes (https://hl7.org/fhir/uv/bulkdata/STU2/authorization.html); `$reindex` needs
  `system/*.u` or the admin role;
- `system/` scopes reach the token's tenant; `user/` scopes reach the tenant too, for now
  limited only by the roles (care relationships and consent come next, see `decide`);
- `patient/` scopes reach only the Patient compartment of the token's `patient`
  (https://hl7.org/fhir/R4/compartmentdefinition-patient.html): the Patient itself and
  every resource whose compartment parameters reference `Patient/<id>`.

A resource outside what the caller may see answers 404, exactly as a missing one
(https://hl7.org/fhir/R4/security.html#AccessDenied: "not found" rather than "forbidden"
when disclosing existence would itself leak information). A type the token has no scope
for at all answers 403.

Granular scopes (`patient/Observation.rs?category=vital-signs`) grant nothing yet: the
server fails closed rather than over-granting until the intersection is implemented.

In-process services (loaders, jobs, domain workflows) use a plain `RequestContext`, not a
token: they act as the system of their tenant and are allowed everything within it. Only
`yiyun.identity.auth` builds `AuthContext`s, from verified tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, false, or_, select, tuple_
from sqlalchemy.orm import aliased

from yiyun.core.errors import Forbidden
from yiyun.core.logging import get_logger
from yiyun.fhir.bulk import export_types, patient_compartment
from yiyun.fhir.model import RequestContext, StoredResource
from yiyun.fhir.search.registry import builtin_registry
from yiyun.fhir.search.tables import idx_reference
from yiyun.identity.auth import AuthContext
from yiyun.identity.scopes import ResourceScope, parse_scopes

log = get_logger("yiyun.authz")

PERMISSION = {
    "read": "r", "vread": "r", "history": "r", "search": "s",
    "create": "c", "update": "u", "patch": "u", "delete": "d",
}
WRITES = frozenset({"create", "update", "patch", "delete"})
TENANT, COMPARTMENT = "tenant", "compartment"


# ------------------------------------------------------------------ grants
@dataclass(frozen=True)
class Grants:
    """What a token's scopes allow, parsed once per distinct scope string."""

    scopes: tuple[ResourceScope, ...]

    def reach(self, res_type: str, perm: str, patient: str | None) -> str | None:
        """TENANT, COMPARTMENT or None (no scope grants `perm` on `res_type`)."""
        best = None
        for s in self.scopes:
            if s.query is not None or not s.allows(res_type, perm):
                continue  # granular scopes: fail closed (see the module's docstring)
            if s.context in ("system", "user"):
                return TENANT
            if s.context == "patient" and patient:
                best = COMPARTMENT
        return best

    def any_reach(self, perm: str, patient: str | None) -> bool:
        return any(
            s.query is None and perm in s.permissions and (s.context != "patient" or patient)
            for s in self.scopes
        )


@lru_cache(maxsize=1024)
def grants_for(scopes: tuple[str, ...]) -> Grants:
    parsed = parse_scopes(" ".join(scopes))
    return Grants(tuple(s for s in parsed if isinstance(s, ResourceScope)))


def is_token_context(ctx: RequestContext) -> bool:
    return isinstance(ctx, AuthContext)


# ------------------------------------------------------------- compartment
@lru_cache(maxsize=1)
def _compartment_pairs() -> tuple[tuple[str, str], ...]:
    return tuple((t, p) for t, params in patient_compartment().items() for p in params)


def in_compartment(resource: dict, patient: str) -> bool:
    """Whether `resource` is in the Patient compartment of `patient`, from its content."""
    rt = resource.get("resourceType")
    if rt == "Patient" and resource.get("id") == patient:
        return True
    params = patient_compartment().get(rt) if isinstance(rt, str) else None
    if not params:
        return False
    sink: dict[str, list] = {"reference": []}
    for cp in builtin_registry().compiled(rt):
        if cp.code in params and cp.defn.type == "reference":
            cp.extract(resource, sink)
    return any(tt == "Patient" and tid == patient and url is None for _, tt, tid, url in sink["reference"])


def compartment_condition(table: Any, tenant: str, res_type: str | None, patient: str):
    """SQL: the row of `table` (a resource or version table) is in the patient's compartment.

    Membership comes from the reference index of the resource's current version, the
    same rows `Observation?subject=Patient/<id>` searches."""
    ref = aliased(idx_reference, name="cmp")
    linked = select(ref.c.rid).where(
        ref.c.tenant == tenant, ref.c.target_type == "Patient", ref.c.target_id == patient, ref.c.url.is_(None)
    )
    if res_type is None:
        linked = linked.where(tuple_(ref.c.res_type, ref.c.param).in_(_compartment_pairs()))
        itself = and_(table.c.res_type == "Patient", table.c.res_id == patient)
        return or_(itself, table.c.rid.in_(linked))
    params = patient_compartment().get(res_type)
    conds = []
    if res_type == "Patient":
        conds.append(table.c.res_id == patient)
    if params:
        conds.append(table.c.rid.in_(linked.where(ref.c.res_type == res_type, ref.c.param.in_(params))))
    return or_(*conds) if conds else false()


# ---------------------------------------------------------------- decision
@dataclass(frozen=True)
class Decision:
    allowed: bool
    reach: str | None = None  # TENANT | COMPARTMENT when allowed
    reason: str = ""


def decide(ctx: AuthContext, action: str, res_type: str | None, resource: dict | None = None) -> Decision:
    """The one decision point: role, then scope, then compartment.

    Next slice: for `user/` scopes, a care relationship (the practitioner's encounters,
    care teams, referrals) and the patient's Consent decide here, after the scope and
    before TENANT reach is granted; break-glass will grant it with a reason and an audit
    entry. Until then `user/` reaches the whole tenant as `system/` does.
    """
    grants = grants_for(ctx.scopes)
    if action == "reindex":
        ok = "admin" in ctx.roles or any(
            s.context == "system" and s.resource_type == "*" and "u" in s.permissions and s.query is None
            for s in grants.scopes
        )
        return Decision(ok, TENANT if ok else None, "" if ok else "needs system/*.u or the admin role")
    perm = PERMISSION.get(action)
    if perm is None:
        return Decision(False, reason=f"unknown interaction {action}")
    if res_type is None:  # system-level search or history: narrowed per type by search_filter
        ok = grants.any_reach(perm, ctx.patient)
        return Decision(ok, COMPARTMENT if ok else None, "" if ok else f"no scope grants {perm!r}")
    reach = grants.reach(res_type, perm, ctx.patient)
    if reach is None:
        return Decision(False, reason=f"no scope grants {perm!r} on {res_type}")
    if reach == COMPARTMENT and action in ("create", "update") and resource is not None:
        if not in_compartment(resource, ctx.patient or ""):
            return Decision(False, reason="the resource is outside the patient's compartment")
    return Decision(True, reach)


def _visible_reach(ctx: AuthContext, res_type: str, letters: str = "rs") -> str | None:
    """How far the caller sees `res_type`: in results, read or search permission suffices
    (a search's primary type was already checked for `s`); as the target of a single
    interaction, any permission (the interaction itself was checked for its own letter)."""
    grants = grants_for(ctx.scopes)
    reaches = {grants.reach(res_type, p, ctx.patient) for p in letters}
    if TENANT in reaches:
        return TENANT
    return COMPARTMENT if COMPARTMENT in reaches else None


# ------------------------------------------------------------------ policy
class AuthorizationPolicy:
    """`yiyun.fhir.access.AccessPolicy` with scope and compartment rules and the audit trail."""

    def __init__(self, recorder: "AuditRecorder | None" = None) -> None:
        self.recorder = recorder or AuditRecorder()

    def bind(self, conn) -> "BoundPolicy":
        """The policy for one unit of work: audit entries of writes go into its transaction."""
        return BoundPolicy(self, conn)

    # -- AccessPolicy
    async def check(self, ctx, action, res_type, res_id, resource) -> None:
        await self._check(ctx, action, res_type, res_id, resource, None)

    def can_see(self, ctx: RequestContext, stored: StoredResource) -> bool:
        if stored.tenant != ctx.tenant:
            return False
        if not is_token_context(ctx):
            return True
        reach = _visible_reach(ctx, stored.res_type, "cruds")
        if reach == TENANT:
            return True
        if reach == COMPARTMENT and ctx.patient:
            if stored.deleted:
                return False
            return in_compartment(stored.resource, ctx.patient)
        return False

    def search_filter(self, ctx: RequestContext, table: Any, res_type: str | None):
        if not is_token_context(ctx):
            return None
        if res_type is not None:
            reach = _visible_reach(ctx, res_type)
            if reach == TENANT:
                return None
            if reach == COMPARTMENT and ctx.patient:
                return compartment_condition(table, ctx.tenant, res_type, ctx.patient)
            return false()
        return self._typeless_filter(ctx, table)

    def _typeless_filter(self, ctx: AuthContext, table: Any):
        """A search or history across all types: each type as far as the caller sees it."""
        grants = grants_for(ctx.scopes)
        wild = [s for s in grants.scopes if s.resource_type == "*" and s.query is None and s.permissions & {"r", "s"}]
        if any(s.context in ("system", "user") for s in wild):
            return None
        named = {s.resource_type for s in grants.scopes if s.resource_type != "*"}
        tenant_types = sorted(t for t in named if _visible_reach(ctx, t) == TENANT)
        conds = [table.c.res_type.in_(tenant_types)] if tenant_types else []
        if ctx.patient:
            own = compartment_condition(table, ctx.tenant, None, ctx.patient)
            if any(s.context == "patient" for s in wild):
                conds.append(own)
            else:
                own_types = sorted(t for t in named if _visible_reach(ctx, t) == COMPARTMENT)
                if own_types:
                    conds.append(and_(table.c.res_type.in_(own_types), own))
        return or_(*conds) if conds else false()

    async def record(self, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        if is_token_context(ctx):
            await self.recorder.record(None, ctx, action, res_type, res_id, outcome, detail)

    # -- shared
    async def _check(self, ctx, action, res_type, res_id, resource, conn) -> None:
        if not is_token_context(ctx):
            return
        if action == "export":
            return await self._check_export(ctx, res_type, res_id, resource, conn)
        decision = decide(ctx, action, res_type, resource)
        if not decision.allowed:
            await self._deny(ctx, action, res_type, res_id, decision.reason, conn)

    async def _deny(self, ctx, action, res_type, res_id, reason, conn) -> None:
        await self.recorder.record(conn, ctx, action, res_type, res_id, "denied", {"reason": reason})
        raise Forbidden(f"访问令牌的授权范围不允许此操作 (insufficient scope: {reason})",
                        headers={"WWW-Authenticate": 'Bearer realm="yiyun", error="insufficient_scope"'})

    async def _check_export(self, ctx: AuthContext, res_type, res_id, params: dict | None, conn) -> None:
        """Narrow a bulk export to what the token may read and search
        (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#bulk-data-kick-off-request:
        the server limits the data to the resources the client is authorised for)."""
        params = params if params is not None else {}
        grants = grants_for(ctx.scopes)
        wanted = params.get("types") or export_types(params.get("level", "system"), None)
        allowed, own = [], False
        for t in wanted:
            reaches = {grants.reach(t, "r", ctx.patient), grants.reach(t, "s", ctx.patient)}
            if None in reaches:
                continue
            allowed.append(t)
            own = own or COMPARTMENT in reaches
        if not allowed:
            await self._deny(ctx, "export", res_type, res_id, "no scope grants r and s on the exported types", conn)
        if own:
            if not ctx.patient:
                await self._deny(ctx, "export", res_type, res_id, "patient scopes need a patient", conn)
            # a patient-scoped export writes that patient's compartment only, at any level
            params["level"] = "patient"
            params["patients"] = [ctx.patient]
            allowed = [t for t in allowed if t in set(export_types("patient", None))]
        params["types"] = allowed


class BoundPolicy:
    """`AuthorizationPolicy` bound to one unit of work's connection.

    Entries for the writes of a token's request wait here and are appended by `flush`
    just before the unit of work commits (the audit chain's head stays locked from the
    append to the commit, so appending last keeps that short and lets two requests that
    write several resources never wait on each other in opposite orders). The FHIR API
    calls `flush`; in-process callers' writes are appended at once.
    """

    def __init__(self, policy: AuthorizationPolicy, conn) -> None:
        self.policy, self.conn = policy, conn
        self.pending: list = []

    async def check(self, ctx, action, res_type, res_id, resource) -> None:
        await self.policy._check(ctx, action, res_type, res_id, resource, self.conn)

    def can_see(self, ctx, stored) -> bool:
        return self.policy.can_see(ctx, stored)

    def search_filter(self, ctx, table, res_type):
        return self.policy.search_filter(ctx, table, res_type)

    async def record(self, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        await self.record_batch(ctx, [(action, res_type, res_id, outcome)], detail)

    async def record_batch(self, ctx, events, detail=None) -> None:
        rec = self.policy.recorder
        writes = [e for e in events if e[0] in WRITES and e[3] == "ok"]
        others = [e for e in events if not (e[0] in WRITES and e[3] == "ok")]
        if is_token_context(ctx):
            # In-process services read as the system on behalf of a workflow whose own
            # caller is audited; their reads are not recorded one by one (their writes are).
            for action, res_type, res_id, outcome in others:
                await rec.record(self.conn, ctx, action, res_type, res_id, outcome, detail)
        if not writes:
            return
        entries = [rec.entry(ctx, a, t, i, o, detail) for a, t, i, o in writes]
        if is_token_context(ctx):
            self.pending.extend(entries)
        else:
            await rec.append_in(self.conn, entries)

    async def flush(self) -> None:
        """Append the pending write entries inside this unit of work (before it commits)."""
        entries, self.pending = self.pending, []
        if entries:
            await self.policy.recorder.append_in(self.conn, entries)


# ------------------------------------------------------------------- audit
class AuditRecorder:
    """Writes the audit trail (`yiyun.identity.audit`) for the policy.

    Writes: appended in the unit of work of the write, so an entry commits if and only if
    its write does. Reads, searches, exports and refusals: buffered in memory and appended
    in batches, every `interval` seconds or `batch` entries, in transactions of their own
    (reads on PostgreSQL run in AUTOCOMMIT units with nothing to append into, and a refusal
    must stay recorded although its request fails). The trade-off: a process that dies
    abruptly loses at most the last `interval` seconds of read entries; a clean shutdown
    flushes them (the application's lifespan calls `close`). The buffer is bounded: a
    request that finds `max_pending` entries waiting appends them itself before it goes on,
    so memory stays bounded and no entry is dropped while the database answers.
    """

    def __init__(self, *, batch: int = 200, interval: float = 0.2, max_pending: int = 10_000) -> None:
        self.batch, self.interval, self.max_pending = batch, interval, max_pending
        self._pending: list[tuple[Any, Any]] = []  # (engine, AuditEntry)
        self._timer = None
        self._tasks: set = set()
        self.failures = 0

    @staticmethod
    def entry(ctx, action, res_type, res_id, outcome, detail=None):
        from yiyun.identity.audit import entry_from_context

        patient = getattr(ctx, "patient", None) or (res_id if res_type == "Patient" else None)
        return entry_from_context(ctx, action, res_type, res_id, outcome, detail, patient=patient)

    async def record(self, conn, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        from yiyun.core.db import get_engine

        engine = conn.engine if conn is not None else get_engine()
        self._pending.append((engine, self.entry(ctx, action, res_type, res_id, outcome, detail)))
        if len(self._pending) >= self.max_pending:
            await self.flush()  # back-pressure instead of dropping entries
        else:
            self._schedule(now=len(self._pending) >= self.batch)

    async def append_in(self, conn, entries) -> None:
        from yiyun.identity.audit import AuditChainError, append

        try:
            await append(conn, entries)
        except AuditChainError:  # a read-only unit of work: append in a transaction of its own
            self._pending.extend((conn.engine, e) for e in entries)
            self._schedule(now=True)

    def _schedule(self, *, now: bool) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if now:
            task = loop.create_task(self.flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self._timer is None or self._timer.cancelled() or getattr(self._timer, "_loop", loop) is not loop:
            self._timer = loop.call_later(self.interval, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._pending:
            self._schedule(now=True)

    async def flush(self) -> int:
        """Append every buffered entry now; returns how many were written."""
        from yiyun.identity.audit import append_committed

        batch, self._pending = self._pending, []
        by_engine: dict[int, tuple[Any, list]] = {}
        for engine, entry in batch:
            by_engine.setdefault(id(engine), (engine, []))[1].append(entry)
        written = 0
        for engine, entries in by_engine.values():
            try:
                await append_committed(engine, entries)
                written += len(entries)
            except Exception:  # the database is away: keep the entries while there is room
                self.failures += 1
                log.exception("audit_flush_failed", entries=len(entries))
                room = self.max_pending - len(self._pending)
                self._pending[:0] = [(engine, e) for e in entries[:max(room, 0)]]
        return written

    async def close(self) -> None:
        """Flush at shutdown, after the requests in flight have finished."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            await task
        await self.flush()
