"""Epidemic self-check (疫情自查): a questionnaire and versioned rules from a YAML file.

The rules of a national plan live in `data/selfcheck/*.yaml`; adopting a new plan is a data
change. Every rule whose conditions hold contributes its reason; the most urgent outcome
wins (call_120 > fever_clinic > home_observation).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from yiyun.core.errors import BadRequest, NotFound
from yiyun.knowledge.kb import PACKAGE_DATA

OUTCOME_RANK = {"call_120": 3, "fever_clinic": 2, "home_observation": 1}
DISCLAIMER = "自查结果仅供参考，不能替代医生诊断；病情危急请立即拨打120。"


@lru_cache(maxsize=8)
def _load_all(folder: str) -> dict[str, dict]:
    out = {}
    for path in sorted(Path(folder).glob("*.y*ml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out[str(data.get("version") or path.stem)] = data
    return out


def plans(folder: Path | None = None) -> dict[str, dict]:
    return _load_all(str(folder or PACKAGE_DATA / "selfcheck"))


def plan(version: str | None = None, folder: Path | None = None) -> dict:
    all_plans = plans(folder)
    if not all_plans:
        raise NotFound("没有可用的自查规则")
    if version:
        if version not in all_plans:
            raise NotFound(f"没有版本为「{version}」的自查规则")
        return all_plans[version]
    return max(all_plans.values(), key=lambda p: p.get("order", 0))


def questionnaire(version: str | None = None) -> dict[str, Any]:
    p = plan(version)
    return {
        "id": p.get("id"), "version": p.get("version"), "title": p.get("title"),
        "effective": p.get("effective"), "sources": p.get("sources", []),
        "questions": p.get("questions", []),
        "versions": sorted(plans()),
        "disclaimer": DISCLAIMER,
    }


def _validate(p: dict, answers: dict) -> dict:
    if not isinstance(answers, dict):
        raise BadRequest("answers 应为对象")
    clean: dict[str, Any] = {}
    questions = {q["id"]: q for q in p.get("questions", [])}
    for qid, q in questions.items():
        value = answers.get(qid)
        if value is None or value == "" or value == []:
            if q.get("required"):
                raise BadRequest(f"请回答：{q['text']}", expression=[qid])
            continue
        kind = q.get("type")
        if kind == "number":
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise BadRequest(f"「{q['text']}」应为数字", expression=[qid]) from None
            if ("min" in q and number < q["min"]) or ("max" in q and number > q["max"]):
                raise BadRequest(f"「{q['text']}」超出合理范围（{q.get('min')}–{q.get('max')}）", expression=[qid])
            clean[qid] = number
        elif kind in ("multi", "choice"):
            allowed = {str(o["value"]) for o in q.get("options", [])}
            values = value if isinstance(value, list) else [value]
            values = [str(v) for v in values]
            bad = [v for v in values if v not in allowed and v != "none"]
            if bad:
                raise BadRequest(f"「{q['text']}」的选项无效：{'、'.join(bad)}", expression=[qid])
            values = [v for v in values if v != "none"]
            if kind == "choice":
                if len(values) > 1:
                    raise BadRequest(f"「{q['text']}」只能选一项", expression=[qid])
                if values:
                    clean[qid] = values[0]
            elif values:
                clean[qid] = values
        else:
            clean[qid] = value
    # a measured temperature counts as the fever symptom (≥37.3℃, 《诊断学》第9版)
    if clean.get("temperature", 0) >= 37.3 and "fever" not in clean.get("symptoms", []):
        clean.setdefault("symptoms", []).append("fever")
    return clean


def _holds(cond: dict, answers: dict) -> bool:
    value = answers.get(cond.get("q"))
    if "includes_any" in cond:
        return isinstance(value, list) and any(v in value for v in cond["includes_any"])
    if "not_empty" in cond:
        return bool(value) == bool(cond["not_empty"])
    if value is None:
        return False
    if "eq" in cond:
        return str(value) == str(cond["eq"])
    if "gte" in cond:
        return float(value) >= float(cond["gte"])
    if "lte" in cond:
        return float(value) <= float(cond["lte"])
    if "lt" in cond:
        return float(value) < float(cond["lt"])
    return False


def evaluate(answers: dict, version: str | None = None) -> dict[str, Any]:
    p = plan(version)
    clean = _validate(p, answers)
    matched = [r for r in p.get("rules", []) if all(_holds(c, clean) for c in r.get("when", []))]
    best = max((OUTCOME_RANK.get(r["outcome"], 0) for r in matched), default=1)
    outcome = next((k for k, v in OUTCOME_RANK.items() if v == best), "home_observation")
    reasons = [{"rule": r["id"], "reason": r["reason"], "source": r.get("source", "")}
               for r in matched if OUTCOME_RANK.get(r["outcome"]) == best]
    info = (p.get("outcomes") or {}).get(outcome, {})
    return {
        "version": p.get("version"), "title": p.get("title"), "sources": p.get("sources", []),
        "outcome": outcome, "outcome_zh": info.get("label", outcome), "advice": info.get("advice", ""),
        "reasons": reasons, "call_120": outcome == "call_120", "answers": clean, "disclaimer": DISCLAIMER,
    }
