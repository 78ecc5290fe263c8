"""The FHIR repository: the one typed Python API over the store.

Domain modules and the REST router use it for every read and write. It is built per
unit of work from a connection (inside a transaction the caller owns) and a
`RequestContext`; every interaction passes the installed `AccessPolicy`.

Writes are planned first and persisted in bulk (`_persist`), so a transaction Bundle of
hundreds of resources costs a handful of statements rather than hundreds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson
from sqlalchemy import and_, insert, select, text, update, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.db import is_sqlite
from yiyun.core.errors import (
    BadRequest,
    Conflict,
    Gone,
    Issue,
    NotFound,
    PreconditionFailed,
    Unprocessable,
    YiyunError,
)
from yiyun.fhir import protection as fhir_protection
from yiyun.fhir import search as fhir_search
from yiyun.fhir.access import AccessPolicy, current_policy
from yiyun.fhir.hooks import run_write_hooks
from yiyun.fhir.ids import is_valid_id, new_id
from yiyun.fhir.search.statistics import note_writes
from yiyun.fhir.model import RequestContext, StoredResource, instant_from_us, now_us
from yiyun.fhir.patch import apply_patch
from yiyun.fhir.tables import resource as resource_t
from yiyun.fhir.tables import resource_version as version_t
from yiyun.fhir.types import is_resource_type
from yiyun.fhir.validation import validate_resource

_COLUMNS = (
    resource_t.c.rid,
    resource_t.c.tenant,
    resource_t.c.res_type,
    resource_t.c.res_id,
    resource_t.c.version_id,
    resource_t.c.ts,
    resource_t.c.deleted,
    resource_t.c.content,
)


@dataclass
class WriteResult:
    stored: StoredResource
    created: bool = False
    # "created" | "updated" | "deleted" | "unchanged" | "exists" (conditional create matched)
    outcome: str = "updated"


@dataclass
class PlannedWrite:
    """One resource version to persist; `existing` is the current row when there is one."""

    res_type: str
    res_id: str
    method: str  # POST | PUT | PATCH | DELETE
    resource: dict | None  # None for a delete
    existing: StoredResource | None = None
    stored: StoredResource | None = field(default=None, init=False)


def check_resource_body(resource: Any, res_type: str | None = None) -> dict:
    """The body must be a JSON object of a known resource type (matching the URL)."""
    if not isinstance(resource, dict):
        raise BadRequest("请求体必须是一个 FHIR 资源 JSON 对象 (the body must be a FHIR resource JSON object)")
    declared = resource.get("resourceType")
    if not isinstance(declared, str) or not is_resource_type(declared):
        raise BadRequest(
            f"未知或缺失的 resourceType: {declared!r} (unknown or missing resourceType)",
            expression=["resourceType"],
        )
    if res_type is not None and declared != res_type:
        raise BadRequest(
            f"resourceType {declared!r} 与地址中的类型 {res_type!r} 不一致 (resourceType does not match the URL)",
            expression=["resourceType"],
        )
    return resource


def validation_issues(resource: dict) -> list[Issue]:
    return [i for i in validate_resource(resource) if i.severity in ("error", "fatal")]


def ensure_valid(resource: dict) -> None:
    errors = validation_issues(resource)
    if errors:
        raise Unprocessable("资源校验未通过 (resource failed validation)", issues=errors)


class FhirRepository:
    """Per-unit-of-work access to the FHIR store for one `RequestContext`."""

    def __init__(
        self,
        conn: AsyncConnection,
        ctx: RequestContext,
        *,
        policy: AccessPolicy | None = None,
        validate: bool = True,
    ) -> None:
        self.conn = conn
        self.ctx = ctx
        policy = policy or current_policy()
        # A policy that audits inside the caller's transaction binds to this unit of work.
        bind = getattr(policy, "bind", None)
        self.policy = bind(conn) if bind is not None else policy
        self.validate = validate
        self._sqlite = is_sqlite(conn.engine)
        # Work to start only once the unit of work has committed (e.g. an export job).
        self.after_commit: list = []
        self._disclosure: fhir_protection.Disclosure | None = None

    def shown(self, stored: StoredResource) -> StoredResource:
        """A stored version as this caller may see it: protected values (resident IDs, phones)
        in full or masked (`yiyun.fhir.protection`)."""
        if fhir_protection.current_protector() is None:
            return stored
        if self._disclosure is None:
            self._disclosure = fhir_protection.disclosure_for(self.ctx)
        return fhir_protection.reveal(stored, self._disclosure)

    # ------------------------------------------------------------------ reads
    async def _current(self, res_type: str, res_id: str, *, lock: bool = False) -> StoredResource | None:
        stmt = select(*_COLUMNS).where(
            resource_t.c.tenant == self.ctx.tenant,
            resource_t.c.res_type == res_type,
            resource_t.c.res_id == res_id,
        )
        if lock and not self._sqlite:
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        return StoredResource.from_row(row) if row else None

    async def _current_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], StoredResource]:
        found: dict[tuple[str, str], StoredResource] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            stmt = select(*_COLUMNS).where(
                resource_t.c.tenant == self.ctx.tenant,
                tuple_(resource_t.c.res_type, resource_t.c.res_id).in_(chunk),
            )
            if not self._sqlite:
                stmt = stmt.with_for_update()
            for row in await self.conn.execute(stmt):
                found[(row.res_type, row.res_id)] = StoredResource.from_row(row)
        return found

    def _check_type(self, res_type: str) -> None:
        if not is_resource_type(res_type):
            raise NotFound(f"不支持的资源类型 {res_type!r} (unknown resource type)")

    def _check_id(self, res_id: str) -> None:
        if not is_valid_id(res_id):
            raise BadRequest(f"资源 id 不合法: {res_id!r} (ids are 1-64 characters of A-Z a-z 0-9 - .)")

    async def read(self, res_type: str, res_id: str) -> StoredResource:
        self._check_type(res_type)
        await self.policy.check(self.ctx, "read", res_type, res_id, None)
        stored = await self._current(res_type, res_id) if is_valid_id(res_id) else None
        if stored is None or not self.policy.can_see(self.ctx, stored):
            await self.policy.record(self.ctx, "read", res_type, res_id, "not-found")
            raise NotFound(f"未找到资源 {res_type}/{res_id} (resource not found)")
        if stored.deleted:
            await self.policy.record(self.ctx, "read", res_type, res_id, "gone")
            raise Gone(
                f"资源 {res_type}/{res_id} 已删除 (resource deleted)",
                headers={"ETag": stored.etag, "Last-Modified": stored.last_modified},
            )
        await self.policy.record(self.ctx, "read", res_type, res_id, "ok")
        return self.shown(stored)

    async def vread(self, res_type: str, res_id: str, version: str) -> StoredResource:
        self._check_type(res_type)
        await self.policy.check(self.ctx, "vread", res_type, res_id, None)
        current = await self._current(res_type, res_id) if is_valid_id(res_id) else None
        if current is None or not self.policy.can_see(self.ctx, current):
            raise NotFound(f"未找到资源 {res_type}/{res_id} (resource not found)")
        if not version.isdigit():
            raise NotFound(f"未找到版本 {version!r} (version not found)")
        row = (
            await self.conn.execute(
                select(version_t).where(version_t.c.rid == current.rid, version_t.c.version_id == int(version))
            )
        ).first()
        if row is None:
            raise NotFound(f"未找到 {res_type}/{res_id} 的版本 {version} (version not found)")
        stored = StoredResource.from_row(row)
        await self.policy.record(self.ctx, "vread", res_type, res_id, "ok")
        if stored.deleted:
            raise Gone(f"资源 {res_type}/{res_id} 的版本 {version} 是删除记录 (this version is a deletion)")
        return self.shown(stored)

    async def exists(self, res_type: str, res_id: str) -> bool:
        stored = await self._current(res_type, res_id)
        return stored is not None and not stored.deleted

    # ----------------------------------------------------------------- search
    async def search(
        self, res_type: str | None, params: list[tuple[str, str]], *, strict: bool = False
    ) -> "fhir_search.SearchResult":
        if res_type is not None:
            self._check_type(res_type)
        await self.policy.check(self.ctx, "search", res_type, None, None)
        result = await fhir_search.search(
            self.conn,
            self.ctx,
            res_type,
            params,
            strict=strict,
            where_hook=lambda table, rtype: self.policy.search_filter(self.ctx, table, rtype),
        )
        await self.policy.record(self.ctx, "search", res_type, None, "ok", detail=params)
        if fhir_protection.current_protector() is not None:
            result.matches = [self.shown(s) for s in result.matches]
            result.included = [self.shown(s) for s in result.included]
        return result

    async def find(self, res_type: str, criteria: list[tuple[str, str]]) -> list[StoredResource]:
        """Resources matching conditional-interaction criteria (at most a few)."""
        result = await fhir_search.search(
            self.conn, self.ctx, res_type, [*criteria, ("_count", "3")], strict=True,
            where_hook=lambda table, rtype: self.policy.search_filter(self.ctx, table, rtype),
        )
        return [self.shown(s) for s in result.matches]

    # ---------------------------------------------------------------- history
    async def history(
        self,
        res_type: str | None = None,
        res_id: str | None = None,
        *,
        since_us: int | None = None,
        at_most: int = 50,
        before: tuple[int, int, int] | None = None,
    ) -> list[StoredResource]:
        """Versions newest first (instance, type or system level)."""
        await self.policy.check(self.ctx, "history", res_type, res_id, None)
        stmt = select(version_t).where(version_t.c.tenant == self.ctx.tenant)
        if res_type is not None:
            self._check_type(res_type)
            stmt = stmt.where(version_t.c.res_type == res_type)
        if res_id is not None:
            current = await self._current(res_type, res_id) if is_valid_id(res_id) else None
            if current is None or not self.policy.can_see(self.ctx, current):
                raise NotFound(f"未找到资源 {res_type}/{res_id} (resource not found)")
            stmt = stmt.where(version_t.c.rid == current.rid)
        hook = self.policy.search_filter(self.ctx, version_t, res_type)
        if hook is not None:
            # filtered in SQL, not only row by row below, so a page is never cut short
            stmt = stmt.where(hook)
        if since_us is not None:
            stmt = stmt.where(version_t.c.ts >= since_us)
        if before is not None:
            # keyset cursor (ts, rid, version) so equal timestamps never split or repeat a page
            stmt = stmt.where(
                tuple_(version_t.c.ts, version_t.c.rid, version_t.c.version_id) < tuple_(*before)
            )
        stmt = stmt.order_by(version_t.c.ts.desc(), version_t.c.rid.desc(), version_t.c.version_id.desc())
        stmt = stmt.limit(at_most)
        rows = [StoredResource.from_row(r) for r in await self.conn.execute(stmt)]
        visible = [self.shown(s) for s in rows if self.policy.can_see(self.ctx, s)]
        await self.policy.record(self.ctx, "history", res_type, res_id, "ok")
        return visible

    # ----------------------------------------------------------------- writes
    def _prepare(self, resource: dict, res_type: str) -> dict:
        check_resource_body(resource, res_type)
        if self.validate:
            ensure_valid(resource)
        return resource

    async def create(
        self, resource: Any, *, if_none_exist: list[tuple[str, str]] | None = None, keep_id: bool = False
    ) -> WriteResult:
        """POST: a new resource with a server-assigned id (or the given one when `keep_id`)."""
        resource = check_resource_body(resource)
        res_type = resource["resourceType"]
        if if_none_exist:
            await self._lock_criteria(res_type, if_none_exist)
            matches = await self.find(res_type, if_none_exist)
            if len(matches) > 1:
                raise PreconditionFailed("条件创建匹配到多个资源 (If-None-Exist matched more than one resource)")
            if matches:
                return WriteResult(matches[0], created=False, outcome="exists")
        res_id = resource.get("id") if keep_id and is_valid_id(resource.get("id")) else new_id()
        await self.policy.check(self.ctx, "create", res_type, res_id, resource)
        self._prepare(resource, res_type)
        plan = PlannedWrite(res_type, res_id, "POST", resource)
        if keep_id:
            plan.existing = await self._current(res_type, res_id, lock=True)
            if plan.existing and not plan.existing.deleted:
                raise Conflict(f"资源 {res_type}/{res_id} 已存在 (resource already exists)")
        await self._persist([plan])
        await self.policy.record(self.ctx, "create", res_type, res_id, "ok")
        return WriteResult(self.shown(plan.stored), created=True, outcome="created")

    async def update(
        self, res_type: str, res_id: str, resource: Any, *, if_match: int | None = None
    ) -> WriteResult:
        """PUT: update, or create with the client's id (update-as-create)."""
        self._check_type(res_type)
        self._check_id(res_id)
        resource = check_resource_body(resource, res_type)
        if resource.get("id") != res_id:
            raise BadRequest(
                f"资源中的 id {resource.get('id')!r} 与地址中的 id {res_id!r} 不一致 (id in body must match the URL)",
                expression=[f"{res_type}.id"],
            )
        # the caller's right to the interaction first (403), then whether it sees the resource (404)
        await self.policy.check(self.ctx, "update", res_type, res_id, resource)
        existing = await self._current(res_type, res_id, lock=True)
        if existing is not None and not self.policy.can_see(self.ctx, existing):
            raise NotFound(f"未找到资源 {res_type}/{res_id} (resource not found)")
        self._check_version(existing, if_match)
        self._prepare(resource, res_type)
        plan = PlannedWrite(res_type, res_id, "PUT", resource, existing)
        await self._persist([plan])
        created = existing is None or existing.deleted
        await self.policy.record(self.ctx, "create" if created else "update", res_type, res_id, "ok")
        return WriteResult(self.shown(plan.stored), created=created, outcome="created" if created else "updated")

    async def conditional_update(
        self, res_type: str, criteria: list[tuple[str, str]], resource: Any, *, if_match: int | None = None
    ) -> WriteResult:
        """PUT Type?criteria (https://hl7.org/fhir/R4/http.html#cond-update)."""
        self._check_type(res_type)
        resource = check_resource_body(resource, res_type)
        await self._lock_criteria(res_type, criteria)
        matches = await self.find(res_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed("条件更新匹配到多个资源 (conditional update matched more than one resource)")
        if not matches:
            body_id = resource.get("id")
            if body_id is not None:
                self._check_id(body_id)
                if await self._current(res_type, body_id):
                    raise Conflict(f"资源 {res_type}/{body_id} 已存在但不符合条件 (id exists but does not match)")
                return await self.update(res_type, body_id, resource)
            return await self.create(resource)
        target = matches[0]
        if resource.get("id") not in (None, target.res_id):
            raise BadRequest("资源中的 id 与匹配到的资源不一致 (id in body differs from the matched resource)")
        resource = {**resource, "id": target.res_id}
        return await self.update(res_type, target.res_id, resource, if_match=if_match)

    async def patch(
        self, res_type: str, res_id: str, operations: Any, *, if_match: int | None = None
    ) -> WriteResult:
        # a patch needs the update permission only: reading the current version is part of it
        self._check_type(res_type)
        await self.policy.check(self.ctx, "patch", res_type, res_id, None)
        current = await self._current(res_type, res_id) if is_valid_id(res_id) else None
        if current is None or not self.policy.can_see(self.ctx, current):
            raise NotFound(f"未找到资源 {res_type}/{res_id} (resource not found)")
        if current.deleted:
            raise Gone(f"资源 {res_type}/{res_id} 已删除 (resource deleted)")
        self._check_version(current, if_match)
        # the patch applies to what this caller sees (a masked caller never tests a hidden value)
        patched = apply_patch(self.shown(current).resource, operations)
        if patched.get("resourceType") != res_type or patched.get("id") != res_id:
            raise Unprocessable("补丁不能修改 resourceType 或 id (patch may not change resourceType or id)")
        return await self.update(res_type, res_id, patched, if_match=current.version_id)

    async def delete(self, res_type: str, res_id: str, *, if_match: int | None = None) -> WriteResult | None:
        """DELETE: a tombstone version; deleting a missing or deleted resource succeeds (idempotent)."""
        self._check_type(res_type)
        self._check_id(res_id)
        await self.policy.check(self.ctx, "delete", res_type, res_id, None)
        existing = await self._current(res_type, res_id, lock=True)
        if existing is None or existing.deleted or not self.policy.can_see(self.ctx, existing):
            return None
        self._check_version(existing, if_match)
        plan = PlannedWrite(res_type, res_id, "DELETE", None, existing)
        await self._persist([plan])
        await self.policy.record(self.ctx, "delete", res_type, res_id, "ok")
        return WriteResult(self.shown(plan.stored), outcome="deleted")

    async def conditional_delete(self, res_type: str, criteria: list[tuple[str, str]]) -> int:
        self._check_type(res_type)
        if not criteria:
            raise PreconditionFailed("条件删除必须带条件 (conditional delete needs criteria)")
        matches = await self.find(res_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed("条件删除匹配到多个资源 (conditional delete matched more than one resource)")
        for m in matches:
            await self.delete(res_type, m.res_id)
        return len(matches)

    def _check_version(self, existing: StoredResource | None, if_match: int | None) -> None:
        if if_match is None:
            return
        if existing is None or existing.deleted or existing.version_id != if_match:
            have = existing.version_id if existing else "none"
            raise PreconditionFailed(
                f"版本冲突：期望版本 {if_match}，当前版本 {have} (version conflict: If-Match does not match)"
            )

    async def _lock_criteria(self, res_type: str, criteria: list[tuple[str, str]]) -> None:
        """Serialise conditional interactions on the same criteria so two can't both create."""
        if self._sqlite:
            return  # BEGIN IMMEDIATE already serialises writers
        key = f"{self.ctx.tenant}|{res_type}|{sorted(criteria)}"
        await self.conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode()) - 2**31}
        )

    # ------------------------------------------------------------ persistence
    async def _persist(self, plans: list[PlannedWrite]) -> None:
        """Write new versions for all plans: resources, history rows, search indexes."""
        if not plans:
            return
        await run_write_hooks(self, plans)
        ts = now_us()
        inserts: list[PlannedWrite] = []
        updates: list[PlannedWrite] = []
        indexed: dict[int, dict] = {}  # what the search index sees of a resource with protected values
        for plan in plans:
            version = (plan.existing.version_id + 1) if plan.existing else 1
            if plan.resource is not None:
                body = dict(plan.resource)
                body["id"] = plan.res_id
                meta = dict(body.get("meta") or {})
                meta["versionId"] = str(version)
                meta["lastUpdated"] = instant_from_us(ts)
                body["meta"] = meta
                content = orjson.dumps(body)
                sealed = self._seal(body, content)
                if sealed is not None:
                    body, content = sealed.stored, orjson.dumps(sealed.stored)
                    indexed[id(plan)] = sealed.indexed
                plan.resource = body
            else:
                content = plan.existing.content if plan.existing else b"{}"
            plan.stored = StoredResource(
                rid=plan.existing.rid if plan.existing else 0,
                tenant=self.ctx.tenant,
                res_type=plan.res_type,
                res_id=plan.res_id,
                version_id=version,
                ts=ts,
                deleted=plan.resource is None,
                content=content,
                method=plan.method,
            )
            (updates if plan.existing else inserts).append(plan)
        try:
            await self._insert_new(inserts)
            await self._update_existing(updates)
        except IntegrityError as exc:
            raise Conflict("并发写入冲突，请重试 (a concurrent write created the same resource; retry)") from exc
        await self.conn.execute(
            insert(version_t),
            [
                {
                    "rid": p.stored.rid,
                    "version_id": p.stored.version_id,
                    "tenant": p.stored.tenant,
                    "res_type": p.res_type,
                    "res_id": p.res_id,
                    "ts": ts,
                    "deleted": p.stored.deleted,
                    "method": p.method,
                    "content": p.stored.content,
                }
                for p in plans
            ],
        )
        live = [(p.stored.rid, p.stored.tenant, indexed.get(id(p), p.resource)) for p in plans if p.resource is not None]
        if live:
            # the replaced versions, so only changed parameters are rewritten
            previous = {p.stored.rid: p.existing for p in updates if p.resource is not None and not p.existing.deleted}
            await fhir_search.write_index(self.conn, live, replace=bool(updates), previous=previous)
        gone = [p.stored.rid for p in plans if p.resource is None]
        if gone:
            await fhir_search.delete_index(self.conn, gone)
        note_writes(self.conn.engine, len(plans))

    @staticmethod
    def _seal(body: dict, content: bytes) -> "fhir_protection.Sealed | None":
        """Resident IDs and phone numbers are stored encrypted, indexed by blind index; those
        written into free text are masked (`yiyun.fhir.free_text`)."""
        try:
            return fhir_protection.seal_resource(body, content)
        except fhir_protection.ProtectionError as exc:
            raise Unprocessable(str(exc)) from exc

    async def _insert_new(self, plans: list[PlannedWrite]) -> None:
        if not plans:
            return
        stmt = insert(resource_t).returning(resource_t.c.rid, sort_by_parameter_order=True)
        rows = [
            {
                "tenant": p.stored.tenant,
                "res_type": p.res_type,
                "res_id": p.res_id,
                "version_id": p.stored.version_id,
                "ts": p.stored.ts,
                "deleted": p.stored.deleted,
                "content": p.stored.content,
            }
            for p in plans
        ]
        result = await self.conn.execute(stmt, rows)
        for plan, rid in zip(plans, result.scalars().all(), strict=True):
            plan.stored.rid = rid

    async def _update_existing(self, plans: list[PlannedWrite]) -> None:
        for p in plans:
            result = await self.conn.execute(
                update(resource_t)
                .where(and_(resource_t.c.rid == p.stored.rid, resource_t.c.version_id == p.existing.version_id))
                .values(version_id=p.stored.version_id, ts=p.stored.ts, deleted=p.stored.deleted, content=p.stored.content)
            )
            if result.rowcount != 1:
                raise PreconditionFailed(
                    f"资源 {p.res_type}/{p.res_id} 已被并发修改 (resource changed concurrently)"
                )

    # ------------------------------------------------------- bulk (transactions)
    async def persist_planned(self, plans: list[PlannedWrite]) -> None:
        """Persist writes the transaction processor has planned and validated."""
        for plan in plans:
            action = "delete" if plan.resource is None else ("update" if plan.existing else "create")
            await self.policy.check(self.ctx, action, plan.res_type, plan.res_id, plan.resource)
        await self._persist(plans)
        for plan in plans:
            plan.stored = self.shown(plan.stored)
        events = [
            ("delete" if p.resource is None else ("update" if p.existing else "create"), p.res_type, p.res_id, "ok")
            for p in plans
        ]
        record_batch = getattr(self.policy, "record_batch", None)
        if record_batch is not None:
            await record_batch(self.ctx, events)
            return
        for action, res_type, res_id, outcome in events:
            await self.policy.record(self.ctx, action, res_type, res_id, outcome)

    async def current_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], StoredResource]:
        keys = list(dict.fromkeys(keys))
        return await self._current_many(keys) if keys else {}


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: W/"3"` → 3 (https://hl7.org/fhir/R4/http.html#concurrency)."""
    if value is None or value == "":
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not v.isdigit():
        raise BadRequest(f"If-Match 头格式错误: {value!r} (expected W/\"<version>\")")
    return int(v)


__all__ = [
    "FhirRepository",
    "PlannedWrite",
    "WriteResult",
    "YiyunError",
    "check_resource_body",
    "ensure_valid",
    "parse_if_match",
    "validation_issues",
]
