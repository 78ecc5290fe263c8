"""The knowledge module's entry points for other modules (and its own API, pages, CLI).

Other domains call these functions only, e.g. the pharmacy's prescription review calls
`review_prescription`, the hospital's booking page calls `triage`.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest
from yiyun.knowledge import drugs as _drugs
from yiyun.knowledge import kb as _kb
from yiyun.knowledge import repository
from yiyun.knowledge.diagnosis import diagnose
from yiyun.knowledge.extractor import get_extractor
from yiyun.knowledge.qa import ask
from yiyun.knowledge.selfcheck import evaluate as selfcheck_evaluate
from yiyun.knowledge.selfcheck import questionnaire as selfcheck_questionnaire
from yiyun.knowledge.triage import triage

__all__ = [
    "ask", "check_interactions", "diagnose", "extract", "get_kb", "review_prescription",
    "selfcheck_evaluate", "selfcheck_questionnaire", "triage", "validate_entry", "apply_entry",
    "sync_edits",
]

get_kb = _kb.get_kb


def extract(text: str) -> dict[str, Any]:
    return get_extractor().extract(text).as_dict()


def check_interactions(drug_names: list[str]) -> dict[str, Any]:
    return _drugs.check_interactions(drug_names)


def review_prescription(prescription: dict) -> dict[str, Any]:
    return _drugs.review(prescription)


def _entry_name(kind: str, data: dict) -> str:
    return repository.interaction_name(data) if kind == "interactions" else str(data.get("name") or "").strip()


def _with_entry(base: _kb.KnowledgeBase, kind: str, data: dict) -> _kb.KnowledgeBase:
    kb = _kb.KnowledgeBase()
    kb.departments = dict(base.departments)
    kb.symptoms = dict(base.symptoms)
    kb.diseases = dict(base.diseases)
    kb.drugs = dict(base.drugs)
    kb.firstaid = dict(base.firstaid)
    kb.interactions = list(base.interactions)
    kb.redflags, kb.lexicon, kb.checks = base.redflags, base.lexicon, base.checks
    if kind == "interactions":
        name = repository.interaction_name(data)
        kb.interactions = [i for i in kb.interactions if repository.interaction_name(i.raw) != name]
    kb.add_entry(kind, copy.deepcopy(data))
    kb.build_indexes()
    return kb


def validate_entry(kind: str, data: Any, *, name: str | None = None) -> list[str]:
    """Problems a proposed entry would introduce (dangling names, missing sources, bad codes)."""
    if kind not in repository.KINDS:
        return [f"未知的条目类型：{kind}"]
    if not isinstance(data, dict):
        return ["条目应为 YAML 映射（键: 值）"]
    entry_name = _entry_name(kind, data)
    if not entry_name:
        return ["条目缺少名称"]
    if name is not None and entry_name != name:
        return [f"不能在编辑中修改条目名称（{name} → {entry_name}）"]
    if not data.get("sources"):
        return ["条目必须注明来源 sources"]
    base = _kb.get_kb()
    before = set(_kb.validate(base, check_icd10=True))
    after = set(_kb.validate(_with_entry(base, kind, data), check_icd10=True))
    return sorted(after - before)


def apply_entry(kind: str, data: dict, kb: _kb.KnowledgeBase | None = None) -> None:
    """Make an approved entry visible to the in-memory engines of this process."""
    kb = kb or _kb.get_kb()
    if kind == "interactions":
        name = repository.interaction_name(data)
        kb.interactions = [i for i in kb.interactions if repository.interaction_name(i.raw) != name]
    kb.add_entry(kind, copy.deepcopy(data))
    kb.build_indexes()


async def sync_edits(conn: AsyncConnection, kb: _kb.KnowledgeBase | None = None) -> int:
    """Overlay every approved clinician edit from the database onto the in-memory index."""
    rows = await repository.edited_entries(conn)
    for row in rows:
        apply_entry(row["kind"], row["data"], kb)
    return len(rows)


def parse_entry_yaml(text: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadRequest(f"YAML 格式错误：{exc}") from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise BadRequest("条目应为 YAML 映射（键: 值）")
    return data
