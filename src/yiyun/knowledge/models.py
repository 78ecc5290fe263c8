"""Tables of the knowledge module (non-clinical data, so ordinary tables, not FHIR).

- knowledge_entry: the imported entries (one row per kind + name) and the approved edits.
- knowledge_revision: every proposed change with its author, review and status (history).
- knowledge_feedback: users' verdicts on answers (helpful / wrong); wrong ones are reviewed.
- knowledge_import: one row per `yiyun knowledge import`, with its counts.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

ENTRY_KINDS = ("diseases", "symptoms", "drugs", "interactions", "firstaid", "departments")

knowledge_entry = Table(
    "knowledge_entry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("data", JSON, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("origin", String(16), nullable=False, default="import"),  # import | edit
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=True),
    UniqueConstraint("kind", "name", name="uq_knowledge_entry_kind_name"),
)

knowledge_revision = Table(
    "knowledge_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("knowledge_entry.id", ondelete="CASCADE"), nullable=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("data", JSON, nullable=False),
    Column("base_version", Integer, nullable=True),
    Column("status", String(16), nullable=False, default="pending"),  # pending | approved | rejected
    Column("author", String(200), nullable=False),
    Column("comment", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("reviewer", String(200), nullable=True),
    Column("review_comment", Text, nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Column("feedback_id", Integer, nullable=True),
)
Index("ix_knowledge_revision_status", knowledge_revision.c.status)
Index("ix_knowledge_revision_entry", knowledge_revision.c.kind, knowledge_revision.c.name)

knowledge_feedback = Table(
    "knowledge_feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=True),
    Column("intent", String(32), nullable=True),
    Column("entity_kind", String(32), nullable=True),
    Column("entity_name", String(200), nullable=True),
    Column("verdict", String(16), nullable=False),  # helpful | wrong
    Column("comment", Text, nullable=True),
    Column("status", String(16), nullable=False, default="open"),  # open | resolved | dismissed | noted
    Column("resolved_by", String(200), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
)
Index("ix_knowledge_feedback_status", knowledge_feedback.c.status)

knowledge_import = Table(
    "knowledge_import",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("counts", JSON, nullable=False),
    Column("source", String(500), nullable=True),
)
