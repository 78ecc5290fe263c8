"""Accuracy measurement for triage and diagnosis on labelled case sets, with baselines.

Case formats are those of tests/knowledge/devsets/*.yaml. Baselines: always the most
common department of the set; naive keyword matching on the department keywords (no
negation, no red flags, no age or pregnancy rules).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import yaml

from yiyun.knowledge.diagnosis import diagnose
from yiyun.knowledge.kb import KnowledgeBase, get_kb
from yiyun.knowledge.triage import triage


def load_cases(path: Path | str) -> list[dict]:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []


def _triage_metrics(cases: list[dict], predict: Callable[[dict], tuple[list[str], str | None]]) -> dict[str, Any]:
    top1 = top3 = urg = emerg_tp = emerg_n = over = 0
    misses = []
    for c in cases:
        deps, urgency = predict(c)
        ok = set(c["d"])
        hit1 = bool(deps) and deps[0] in ok
        top1 += hit1
        top3 += bool(set(deps[:3]) & ok)
        if urgency is not None:
            urg += urgency == c["u"]
            if c["u"] == "emergency":
                emerg_n += 1
                emerg_tp += urgency == "emergency"
            elif urgency == "emergency":
                over += 1
        if not hit1 or (urgency is not None and urgency != c["u"]):
            misses.append({"text": c["t"], "expected": c["d"][0], "urgency": c["u"],
                           "got": deps[:3], "got_urgency": urgency})
    n = len(cases) or 1
    non_emerg = sum(1 for c in cases if c["u"] != "emergency") or 1
    return {
        "cases": len(cases),
        "top1": round(top1 / n, 4),
        "top3": round(top3 / n, 4),
        "urgency_accuracy": round(urg / n, 4) if any(True for _ in cases) else None,
        "emergency_recall": round(emerg_tp / emerg_n, 4) if emerg_n else None,
        "emergency_false_alarm_rate": round(over / non_emerg, 4),
        "misses": misses,
    }


def evaluate_triage(cases: list[dict], kb: KnowledgeBase | None = None) -> dict[str, Any]:
    kb = kb or get_kb()

    def predict(c):
        r = triage(c["t"], age=c.get("age"), sex=c.get("sex"), kb=kb)
        return [d["name"] for d in r["departments"]], r["urgency"]

    return _triage_metrics(cases, predict)


def baseline_most_common(cases: list[dict]) -> dict[str, Any]:
    common = Counter(c["d"][0] for c in cases).most_common(3)
    deps = [d for d, _ in common]
    urgency = Counter(c["u"] for c in cases).most_common(1)[0][0]
    out = _triage_metrics(cases, lambda c: (deps, urgency))
    out["predicts"] = deps[0]
    return out


def baseline_keywords(cases: list[dict], kb: KnowledgeBase | None = None) -> dict[str, Any]:
    kb = kb or get_kb()
    table = [(k, d.name) for d in kb.departments.values() for k in d.keywords]
    for s in kb.symptoms.values():
        for term in [s.name, *s.synonyms]:
            for dep in s.departments[:1]:
                table.append((term, dep))
    fallback = Counter(c["d"][0] for c in cases).most_common(1)[0][0]

    def predict(c):
        scores: Counter = Counter()
        for word, dep in table:
            if word and word in c["t"]:
                scores[dep] += len(word)
        deps = [d for d, _ in scores.most_common(3)] or [fallback]
        urgent = any(w in c["t"] for w in ("120", "昏迷", "抽搐", "胸痛", "大出血", "自杀", "农药"))
        return deps, "emergency" if urgent else "routine"

    return _triage_metrics(cases, predict)


def _dx_match(kb: KnowledgeBase, candidate: dict, case: dict) -> bool:
    if candidate["disease"] == case["dx"]:
        return True
    d = kb.diseases.get(candidate["disease"])
    if d is not None and case["dx"] in d.aliases:
        return True
    return bool(case.get("icd")) and candidate.get("icd10", "").startswith(case["icd"])


def evaluate_diagnosis(cases: list[dict], kb: KnowledgeBase | None = None) -> dict[str, Any]:
    kb = kb or get_kb()
    top1 = top3 = top5 = 0
    covered = 0
    misses = []
    for c in cases:
        r = diagnose(c.get("present"), c.get("absent"), text=c.get("text"), age=c.get("age"), sex=c.get("sex"),
                     kb=kb, top=5)
        cands = r["candidates"]
        ranks = [i for i, cand in enumerate(cands) if _dx_match(kb, cand, c)]
        rank = ranks[0] if ranks else None
        top1 += rank == 0
        top3 += rank is not None and rank < 3
        top5 += rank is not None
        in_kb = kb.disease(c["dx"]) is not None or any(
            d.icd10.startswith(c.get("icd", "~")) for d in kb.diseases.values())
        covered += in_kb
        if rank != 0:
            misses.append({"case": c.get("text") or c.get("present"), "expected": c["dx"], "in_kb": in_kb,
                           "got": [x["disease"] for x in cands[:3]]})
    n = len(cases) or 1
    return {"cases": len(cases), "top1": round(top1 / n, 4), "top3": round(top3 / n, 4),
            "top5": round(top5 / n, 4), "expected_disease_in_kb": round(covered / n, 4), "misses": misses}


def diagnosis_baseline_prior(cases: list[dict], kb: KnowledgeBase | None = None) -> dict[str, Any]:
    """Most prevalent disease sharing at least one finding (no likelihoods)."""
    kb = kb or get_kb()
    from yiyun.knowledge.diagnosis import PRIOR
    from yiyun.knowledge.extractor import get_extractor

    top1 = 0
    for c in cases:
        present = list(c.get("present") or [])
        if c.get("text"):
            present += get_extractor(kb).extract(c["text"], structure=False).present
        names = {n for s in present for n, _w in kb.diseases_by_symptom.get(s, [])}
        best = sorted(names, key=lambda n: (-PRIOR.get(kb.diseases[n].prevalence, 0), n))[:1]
        top1 += bool(best) and _dx_match(kb, {"disease": best[0], "icd10": kb.diseases[best[0]].icd10}, c)
    return {"cases": len(cases), "top1": round(top1 / (len(cases) or 1), 4)}
