"""The only place with SQL for the knowledge tables (async SQLAlchemy Core)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest, Conflict, NotFound
from yiyun.knowledge.kb import KnowledgeBase
from yiyun.knowledge.models import knowledge_entry, knowledge_feedback, knowledge_import, knowledge_revision

KINDS = ("diseases", "symptoms", "drugs", "interactions", "firstaid", "departments")


def _now() -> datetime:
    return datetime.now(UTC)


def interaction_name(entry: dict) -> str:
    parts = list(entry.get("drugs") or []) + list(entry.get("classes") or [])
    return "+".join(sorted(str(p) for p in parts))


def entries_of(kb: KnowledgeBase) -> list[tuple[str, str, dict]]:
    rows: list[tuple[str, str, dict]] = []
    rows += [("departments", d.name, d.raw) for d in kb.departments.values()]
    rows += [("symptoms", s.name, s.raw) for s in kb.symptoms.values()]
    rows += [("diseases", d.name, d.raw) for d in kb.diseases.values()]
    rows += [("drugs", g.name, g.raw) for g in kb.drugs.values()]
    rows += [("interactions", interaction_name(i.raw), i.raw) for i in kb.interactions]
    rows += [("firstaid", f.name, f.raw) for f in kb.firstaid.values()]
    return rows


async def import_entries(conn: AsyncConnection, kb: KnowledgeBase, source: str = "") -> dict[str, Any]:
    """Upsert every entry from the data files; entries a clinician edited are kept."""
    existing = {
        (r.kind, r.name): r
        for r in (await conn.execute(select(knowledge_entry.c.kind, knowledge_entry.c.name,
                                            knowledge_entry.c.origin, knowledge_entry.c.id))).all()
    }
    counts: dict[str, int] = {k: 0 for k in KINDS}
    inserted = updated = kept = 0
    now = _now()
    for kind, name, data in entries_of(kb):
        counts[kind] += 1
        row = existing.get((kind, name))
        if row is None:
            await conn.execute(knowledge_entry.insert().values(
                kind=kind, name=name, data=data, version=1, origin="import", updated_at=now, updated_by="import"))
            inserted += 1
        elif row.origin == "edit":
            kept += 1
        else:
            await conn.execute(knowledge_entry.update().where(knowledge_entry.c.id == row.id).values(
                data=data, updated_at=now, updated_by="import"))
            updated += 1
    summary = {"counts": counts, "inserted": inserted, "updated": updated, "kept_edits": kept,
               "redflags": len(kb.redflags)}
    await conn.execute(knowledge_import.insert().values(imported_at=now, counts=summary, source=source))
    return summary


async def entry_counts(conn: AsyncConnection) -> dict[str, int]:
    rows = (await conn.execute(select(knowledge_entry.c.kind, func.count()).group_by(knowledge_entry.c.kind))).all()
    return {k: int(n) for k, n in rows}


async def get_entry(conn: AsyncConnection, kind: str, name: str) -> dict | None:
    row = (await conn.execute(select(knowledge_entry).where(
        knowledge_entry.c.kind == kind, knowledge_entry.c.name == name))).mappings().first()
    return dict(row) if row else None


async def edited_entries(conn: AsyncConnection) -> list[dict]:
    rows = (await conn.execute(select(knowledge_entry).where(knowledge_entry.c.origin == "edit"))).mappings().all()
    return [dict(r) for r in rows]


async def propose(conn: AsyncConnection, *, kind: str, name: str, data: dict, author: str,
                  comment: str | None = None, feedback_id: int | None = None) -> int:
    if kind not in KINDS:
        raise BadRequest(f"未知的条目类型：{kind}")
    if not author:
        raise BadRequest("修改必须署名")
    entry = await get_entry(conn, kind, name)
    res = await conn.execute(knowledge_revision.insert().values(
        entry_id=entry["id"] if entry else None, kind=kind, name=name, data=data,
        base_version=entry["version"] if entry else None, status="pending", author=author,
        comment=comment, created_at=_now(), feedback_id=feedback_id))
    return int(res.inserted_primary_key[0])


async def get_revision(conn: AsyncConnection, revision_id: int) -> dict:
    row = (await conn.execute(select(knowledge_revision).where(knowledge_revision.c.id == revision_id))).mappings().first()
    if row is None:
        raise NotFound(f"修改记录 {revision_id} 不存在")
    return dict(row)


async def pending(conn: AsyncConnection) -> list[dict]:
    rows = (await conn.execute(select(knowledge_revision).where(knowledge_revision.c.status == "pending")
                               .order_by(knowledge_revision.c.created_at))).mappings().all()
    return [dict(r) for r in rows]


async def history(conn: AsyncConnection, kind: str, name: str) -> list[dict]:
    rows = (await conn.execute(select(knowledge_revision).where(
        knowledge_revision.c.kind == kind, knowledge_revision.c.name == name)
        .order_by(knowledge_revision.c.id.desc()))).mappings().all()
    return [dict(r) for r in rows]


async def review(conn: AsyncConnection, revision_id: int, *, reviewer: str, approve: bool,
                 comment: str | None = None) -> dict:
    """Approve (the entry takes the revision's data, version + 1) or reject a pending revision."""
    rev = await get_revision(conn, revision_id)
    if rev["status"] != "pending":
        raise Conflict("该修改已审核")
    if approve and reviewer == rev["author"]:
        raise Conflict("修改需由作者以外的人审核")
    now = _now()
    if approve:
        entry = await get_entry(conn, rev["kind"], rev["name"])
        if entry and rev["base_version"] is not None and entry["version"] != rev["base_version"]:
            raise Conflict("条目在提交后已被修改，请重新编辑")
        if entry:
            await conn.execute(knowledge_entry.update().where(knowledge_entry.c.id == entry["id"]).values(
                data=rev["data"], version=entry["version"] + 1, origin="edit", updated_at=now, updated_by=rev["author"]))
        else:
            await conn.execute(knowledge_entry.insert().values(
                kind=rev["kind"], name=rev["name"], data=rev["data"], version=1, origin="edit",
                updated_at=now, updated_by=rev["author"]))
        if rev["feedback_id"]:
            await conn.execute(knowledge_feedback.update().where(knowledge_feedback.c.id == rev["feedback_id"])
                               .values(status="resolved", resolved_by=reviewer, resolved_at=now))
    await conn.execute(knowledge_revision.update().where(knowledge_revision.c.id == revision_id).values(
        status="approved" if approve else "rejected", reviewer=reviewer, review_comment=comment, reviewed_at=now))
    return await get_revision(conn, revision_id)


async def add_feedback(conn: AsyncConnection, *, question: str, answer: str | None, intent: str | None,
                       entity_kind: str | None, entity_name: str | None, verdict: str,
                       comment: str | None = None) -> int:
    if verdict not in ("helpful", "wrong"):
        raise BadRequest("verdict 只能是 helpful 或 wrong")
    res = await conn.execute(knowledge_feedback.insert().values(
        created_at=_now(), question=question, answer=answer, intent=intent, entity_kind=entity_kind,
        entity_name=entity_name, verdict=verdict, comment=comment,
        status="open" if verdict == "wrong" else "noted"))
    return int(res.inserted_primary_key[0])


async def open_feedback(conn: AsyncConnection) -> list[dict]:
    rows = (await conn.execute(select(knowledge_feedback).where(knowledge_feedback.c.status == "open")
                               .order_by(knowledge_feedback.c.created_at))).mappings().all()
    return [dict(r) for r in rows]


async def dismiss_feedback(conn: AsyncConnection, feedback_id: int, reviewer: str) -> None:
    res = await conn.execute(knowledge_feedback.update().where(knowledge_feedback.c.id == feedback_id).values(
        status="dismissed", resolved_by=reviewer, resolved_at=_now()))
    if res.rowcount == 0:
        raise NotFound(f"反馈 {feedback_id} 不存在")
