"""Assisted diagnosis (辅诊): a naive Bayes differential over the knowledge base.

score(d) = log prior(prevalence) + log age/sex fit
           + Σ_present log P(s|d) + Σ_absent log (1 − P(s|d))
with P(s|d) from the entry's symptom weight (very_common 0.8, common 0.45, occasional 0.2,
rare 0.06, the midpoints of the bands in SCHEMA.md) and a leak of 0.03 for a finding the
entry does not list (smoothing: a knowledge base never lists everything). A narrower finding
(活动后气促) counts as its broader symptom (呼吸困难, lexicon `broader`) for an entry that lists
only the broader one. Posteriors are
normalised over every disease with at least one supporting finding; the candidates shown
are renormalised over the list. `ask_next` ranks unasked findings by expected information
gain over the top candidates. The result is a suggestion for a doctor, never a diagnosis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from yiyun.knowledge.kb import Disease, KnowledgeBase, get_kb

LIKELIHOOD = {"very_common": 0.8, "common": 0.45, "occasional": 0.2, "rare": 0.06}
LEAK = 0.03
PRIOR = {"very_common": 1.0, "common": 0.4, "uncommon": 0.1, "rare": 0.02}
AGE_MISFIT = 0.05
WEIGHT_ZH = {"very_common": "很常见", "common": "常见", "occasional": "偶见", "rare": "少见"}
PREVALENCE_ZH = {"very_common": "很常见病", "common": "常见病", "uncommon": "少见病", "rare": "罕见病"}
DISCLAIMER = "以上为基于知识库的辅助诊断建议，仅供医生参考，不能替代医生的诊断。"


@dataclass
class _Model:
    likelihood: dict[str, dict[str, float]]
    log_prior: dict[str, float]


def broader_map(kb: KnowledgeBase) -> dict[str, str]:
    """Narrower symptom → the broader one it is a form of (both defined), from the lexicon."""
    out = {}
    for narrow, broad in ((kb.lexicon or {}).get("broader") or {}).items():
        if str(narrow) in kb.symptoms and str(broad) in kb.symptoms:
            out[str(narrow)] = str(broad)
    return out


def _model(kb: KnowledgeBase) -> _Model:
    lk: dict[str, dict[str, float]] = {}
    prior: dict[str, float] = {}
    broader = broader_map(kb)
    for d in kb.diseases.values():
        lk[d.name] = {s.name: LIKELIHOOD.get(s.weight, 0.3) for s in d.symptoms}
        for narrow, broad in broader.items():
            if broad in lk[d.name] and narrow not in lk[d.name]:
                lk[d.name][narrow] = lk[d.name][broad]
        prior[d.name] = math.log(PRIOR.get(d.prevalence, 0.1))
    return _Model(lk, prior)


def _fit(d: Disease, age: float | None, sex: str | None) -> tuple[float, list[dict]]:
    terms = []
    logw = 0.0
    if sex in ("male", "female") and d.sex in ("male", "female") and d.sex != sex:
        return -math.inf, [{"term": "性别不符", "log_weight": None}]
    if age is not None:
        lo, hi = d.age
        if age < lo or age > hi:
            logw += math.log(AGE_MISFIT)
            terms.append({"term": f"年龄{age:g}岁不在好发年龄{lo:g}–{hi:g}岁", "log_weight": round(math.log(AGE_MISFIT), 3)})
    return logw, terms


def _entropy(ps) -> float:
    return -sum(p * math.log2(p) for p in ps if p > 0)


def resolve_findings(kb: KnowledgeBase, names) -> tuple[list[str], list[str]]:
    known, unknown = [], []
    for n in names or []:
        n = str(n).strip()
        if not n:
            continue
        s = kb.symptom(n)
        if s and s.name not in known:
            known.append(s.name)
        elif not s:
            unknown.append(n)
    return known, unknown


def diagnose(
    present=None,
    absent=None,
    *,
    text: str | None = None,
    age: float | None = None,
    sex: str | None = None,
    kb: KnowledgeBase | None = None,
    top: int = 5,
) -> dict[str, Any]:
    kb = kb or get_kb()
    present_k, unknown_p = resolve_findings(kb, present)
    absent_k, unknown_a = resolve_findings(kb, absent)
    extracted = None
    if text:
        from yiyun.knowledge.extractor import get_extractor

        extracted = get_extractor(kb).extract(text, structure=False)
        for s in extracted.present:
            if s not in present_k:
                present_k.append(s)
        for s in extracted.absent:
            if s not in absent_k and s not in present_k:
                absent_k.append(s)
    absent_k = [s for s in absent_k if s not in present_k]
    model = kb.cached("diagnosis_model", lambda: _model(kb))

    broader = kb.cached("broader_symptoms", lambda: broader_map(kb))
    candidates = set()
    for s in present_k:
        for dname, _w in kb.diseases_by_symptom.get(s, []) + kb.diseases_by_symptom.get(broader.get(s, ""), []):
            candidates.add(dname)
    scored: list[tuple[float, str, list[dict], list[str], list[str]]] = []
    for dname in candidates:
        d = kb.diseases[dname]
        fit, terms = _fit(d, age, sex)
        if fit == -math.inf:
            continue
        lk = model.likelihood[dname]
        score = model.log_prior[dname] + fit
        terms = [{"term": f"先验：{PREVALENCE_ZH.get(d.prevalence, d.prevalence)}",
                  "log_weight": round(model.log_prior[dname], 3)}] + terms
        supporting, against = [], []
        for s in present_k:
            p = lk.get(s, LEAK)
            score += math.log(p)
            if s in lk:
                supporting.append(s)
                w = next((x.weight for x in d.symptoms if x.name == s), None) or next(
                    (x.weight for x in d.symptoms if x.name == broader.get(s)), "common")
                terms.append({"term": f"有{s}（该病{WEIGHT_ZH.get(w, w)}）", "log_weight": round(math.log(p), 3)})
            else:
                against.append(f"有{s}（该病通常不出现）")
                terms.append({"term": f"有{s}（该病未列出）", "log_weight": round(math.log(p), 3)})
        for s in absent_k:
            p = lk.get(s, LEAK)
            score += math.log(1 - p)
            if s in lk and p >= LIKELIHOOD["common"]:
                against.append(f"无{s}（该病{'很常见' if p >= 0.8 else '常见'}）")
                terms.append({"term": f"无{s}", "log_weight": round(math.log(1 - p), 3)})
        scored.append((score, dname, terms, supporting, against))

    result: dict[str, Any] = {
        "candidates": [],
        "ask_next": [],
        "ask_next_detail": [],
        "uncertain": True,
        "present": present_k,
        "absent": absent_k,
        "unrecognized": unknown_p + unknown_a,
        "disclaimer": DISCLAIMER,
        "model": "naive_bayes",
    }
    if not scored:
        result["note"] = "未识别到可用于辅助诊断的症状，请补充症状描述。"
        return result
    scored.sort(key=lambda t: (-t[0], t[1]))
    mx = scored[0][0]
    z = sum(math.exp(t[0] - mx) for t in scored)
    posterior = [(math.exp(t[0] - mx) / z, t) for t in scored]
    shown = posterior[:top]
    zs = sum(p for p, _ in shown)
    for p, (score, dname, terms, supporting, against) in shown:
        d = kb.diseases[dname]
        result["candidates"].append({
            "disease": dname,
            "icd10": d.icd10,
            "probability": round(p / zs, 4),
            "posterior": round(p, 4),
            "supporting": supporting,
            "against": against,
            "departments": d.departments,
            "explanation": terms,
        })
    # rounding must not break "sums to 1"
    total = sum(c["probability"] for c in result["candidates"])
    result["candidates"][0]["probability"] = round(result["candidates"][0]["probability"] + 1 - total, 4)
    top1 = posterior[0][0]
    top2 = posterior[1][0] if len(posterior) > 1 else 0.0
    explained = len(result["candidates"][0]["supporting"])
    result["uncertain"] = bool(
        len(present_k) < 2 or top1 < 0.5 or top1 - top2 < 0.15 or explained < max(2, math.ceil(len(present_k) / 2))
    )
    result["ask_next_detail"] = _ask_next(kb, model, [(p, t[1]) for p, t in posterior[:top]],
                                          set(present_k) | set(absent_k) | set(extracted.possible if extracted else []))
    result["ask_next"] = [a["symptom"] for a in result["ask_next_detail"]]
    return result


def _ask_next(kb: KnowledgeBase, model: _Model, top: list[tuple[float, str]], asked: set[str], n: int = 5):
    z = sum(p for p, _ in top)
    if z <= 0 or len(top) < 2:
        return []
    dist = [(p / z, name) for p, name in top]
    h0 = _entropy(p for p, _ in dist)
    pool = set()
    for _, name in dist:
        pool.update(model.likelihood[name])
    out = []
    for s in pool - asked:
        pys = [p * model.likelihood[name].get(s, LEAK) for p, name in dist]
        pns = [p * (1 - model.likelihood[name].get(s, LEAK)) for p, name in dist]
        py, pn = sum(pys), sum(pns)
        h = 0.0
        if py > 0:
            h += py * _entropy(x / py for x in pys)
        if pn > 0:
            h += pn * _entropy(x / pn for x in pns)
        gain = h0 - h
        if gain > 0.01:
            out.append({"symptom": s, "information_gain": round(gain, 4), "question": f"是否有{s}？"})
    out.sort(key=lambda a: (-a["information_gain"], a["symptom"]))
    return out[:n]
