"""Drug knowledge service: lookup and the checks a prescription review needs.

Covered (from `data/drugs` and `data/interactions`, each finding with its source):
pairwise interactions (drug–drug, class–class, drug–class, also through the ingredients
of combination products), duplicate therapy (same ingredient or same class), allergy
cross-reactivity classes, contraindications by condition, age, pregnancy and lactation,
and the adult maximum daily dose. Not covered: renal/hepatic dose adjustment, weight-based
paediatric dosing, route-specific limits, food interactions. See docs/knowledge.md.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from yiyun.knowledge.kb import Drug, KnowledgeBase, get_kb

SEVERITY_RANK = {"contraindicated": 4, "major": 3, "moderate": 2, "minor": 1}
SEVERITY_ZH = {"contraindicated": "禁忌", "major": "严重", "moderate": "中度", "minor": "轻微"}
PREGNANCY_ZH = {"safe": "可用", "caution": "慎用", "avoid": "避免使用", "contraindicated": "禁用"}
# Known cross-reactivity between allergy classes (label wording: 对青霉素过敏者慎用头孢菌素).
CROSS_REACTIVE = {
    ("青霉素类", "头孢菌素类"): "caution",
    ("头孢菌素类", "青霉素类"): "caution",
    ("青霉素类", "碳青霉烯类"): "caution",
}
UNIT_TO_MG = {"g": 1000.0, "mg": 1.0, "μg": 0.001, "ug": 0.001, "mcg": 0.001}
DISCLAIMER = "用药提示仅供参考，请遵医嘱或咨询药师。"


def lookup(name: str, kb: KnowledgeBase | None = None) -> Drug | None:
    kb = kb or get_kb()
    d = kb.drug(name)
    if d is None and name:
        # a brand name inside a longer string: 芬必得胶囊
        for alias, canonical in kb.drug_alias.items():
            if len(alias) >= 2 and alias in name:
                return kb.drugs[canonical]
    return d


def drug_info(d: Drug) -> dict[str, Any]:
    r = d.raw
    return {
        "name": d.name, "aliases": d.aliases, "english": r.get("english"), "atc": r.get("atc"),
        "class": d.drug_class, "ingredients": d.ingredients, "allergy_class": d.allergy_class,
        "indications": d.indications, "contraindications": d.contraindications,
        "pregnancy": d.pregnancy, "pregnancy_note": r.get("pregnancy_note"), "lactation": d.lactation,
        "children": r.get("children"), "min_age_years": d.min_age_years, "elderly": r.get("elderly"),
        "usual_dose": r.get("usual_dose"), "max_daily_dose": d.max_daily_dose, "otc": d.otc,
        "controlled": d.controlled, "sources": d.sources,
    }


def _identity(kb: KnowledgeBase, d: Drug) -> tuple[set[str], set[str]]:
    """Names and classes a drug answers to, ingredients included."""
    names = {d.name, *d.ingredients}
    classes = {c for c in (d.drug_class, d.allergy_class) if c}
    for ing in d.ingredients:
        sub = kb.drugs.get(ing)
        if sub is not None and sub.name != d.name:
            classes.update(c for c in (sub.drug_class, sub.allergy_class) if c)
    return names, classes


def _resolve(kb: KnowledgeBase, names) -> tuple[list[Drug], list[dict], list[str]]:
    found, rows, unknown = [], [], []
    for n in names or []:
        n = str(n).strip()
        if not n:
            continue
        d = lookup(n, kb)
        rows.append({"input": n, "name": d.name if d else None, "found": d is not None})
        if d is None:
            unknown.append(n)
        elif d not in found:
            found.append(d)
    return found, rows, unknown


def check_interactions(names, kb: KnowledgeBase | None = None) -> dict[str, Any]:
    kb = kb or get_kb()
    drugs, rows, unknown = _resolve(kb, names)
    pairs = []
    for a, b in combinations(drugs, 2):
        na, ca = _identity(kb, a)
        nb, cb = _identity(kb, b)
        best: dict[str, dict] = {}
        for it in kb.interactions:
            if not _applies(it.drugs, it.classes, na, ca, nb, cb):
                continue
            key = it.mechanism or it.effect
            row = {
                "drugs": [a.name, b.name], "severity": it.severity,
                "severity_zh": SEVERITY_ZH.get(it.severity, it.severity), "mechanism": it.mechanism,
                "effect": it.effect, "advice": it.advice, "source": "；".join(it.sources), "sources": it.sources,
                "rule": "drug" if len(it.drugs) == 2 else "class",
            }
            if key not in best or SEVERITY_RANK.get(it.severity, 0) > SEVERITY_RANK.get(best[key]["severity"], 0):
                best[key] = row
        pairs.extend(sorted(best.values(), key=lambda r: -SEVERITY_RANK.get(r["severity"], 0)))
    pairs.sort(key=lambda r: -SEVERITY_RANK.get(r["severity"], 0))
    return {
        "drugs": rows,
        "pairs": pairs,
        "duplicates": duplicate_therapy(drugs, kb),
        "unknown": unknown,
        "checked_pairs": len(drugs) * (len(drugs) - 1) // 2,
        "note": "未发现已收录的相互作用（知识库未收录不代表没有相互作用）" if not pairs else "",
        "disclaimer": DISCLAIMER,
    }


def _applies(rule_drugs, rule_classes, na, ca, nb, cb) -> bool:
    targets = [("drug", x) for x in rule_drugs] + [("class", x) for x in rule_classes]
    if len(targets) != 2:
        return False

    def match(t, names, classes):
        return t[1] in names if t[0] == "drug" else t[1] in classes

    (t1, t2) = targets
    return (match(t1, na, ca) and match(t2, nb, cb)) or (match(t1, nb, cb) and match(t2, na, ca))


def duplicate_therapy(drugs: list[Drug], kb: KnowledgeBase | None = None) -> list[dict]:
    kb = kb or get_kb()
    out = []
    for a, b in combinations(drugs, 2):
        shared = sorted(set(a.ingredients) & set(b.ingredients))
        if shared:
            out.append({"drugs": [a.name, b.name], "reason": "same_ingredient",
                        "detail": f"含相同成分：{'、'.join(shared)}", "sources": a.sources + b.sources})
        elif a.drug_class and a.drug_class == b.drug_class:
            out.append({"drugs": [a.name, b.name], "reason": "same_class",
                        "detail": f"同属{a.drug_class}", "sources": a.sources + b.sources})
    return out


def allergy_conflicts(drugs: list[Drug], allergies, kb: KnowledgeBase | None = None) -> list[dict]:
    kb = kb or get_kb()
    out = []
    for allergy in allergies or []:
        allergy = str(allergy).strip()
        if not allergy:
            continue
        src = lookup(allergy, kb)
        classes = {c for c in ((src.allergy_class, src.drug_class) if src else ()) if c}
        if not src:
            classes.add(allergy)
            if not allergy.endswith("类"):
                classes.add(allergy + "类")
        for d in drugs:
            if src and (src.name == d.name or set(src.ingredients) & set(d.ingredients)):
                out.append({"drug": d.name, "allergy": allergy, "level": "contraindicated",
                            "detail": f"对{allergy}过敏，{d.name}含相同成分", "sources": d.sources})
            elif d.allergy_class and d.allergy_class in classes:
                out.append({"drug": d.name, "allergy": allergy, "level": "contraindicated",
                            "detail": f"{d.name}属{d.allergy_class}，与过敏药物同类", "sources": d.sources})
            elif d.allergy_class and any((c, d.allergy_class) in CROSS_REACTIVE for c in classes):
                out.append({"drug": d.name, "allergy": allergy, "level": "caution",
                            "detail": f"{d.allergy_class}与{'、'.join(sorted(classes))}存在交叉过敏可能，慎用",
                            "sources": d.sources})
    return out


def contraindications(drugs: list[Drug], *, conditions=None, age: float | None = None, pregnant: bool = False,
                      lactating: bool = False, kb: KnowledgeBase | None = None) -> list[dict]:
    kb = kb or get_kb()
    out = []
    conds = []
    for c in conditions or []:
        c = str(c).strip()
        d = kb.disease(c)
        conds.append((c, {c} | ({d.name, *d.aliases} if d else set())))
    for g in drugs:
        for c, names in conds:
            hit = next((x for x in g.contraindications if x in names or any(n and n in x for n in names)), None)
            if hit:
                out.append({"drug": g.name, "type": "condition", "level": "contraindicated",
                            "detail": f"{g.name}禁用于{hit}", "sources": g.sources})
        if age is not None and g.min_age_years is not None and age < g.min_age_years:
            out.append({"drug": g.name, "type": "age", "level": "contraindicated",
                        "detail": f"{g.name}适用年龄不低于{g.min_age_years:g}岁", "sources": g.sources})
        if pregnant and g.pregnancy in ("avoid", "contraindicated", "caution"):
            out.append({"drug": g.name, "type": "pregnancy",
                        "level": "contraindicated" if g.pregnancy == "contraindicated" else g.pregnancy,
                        "detail": f"妊娠期{PREGNANCY_ZH[g.pregnancy]}" + (f"（{g.raw.get('pregnancy_note')}）"
                                                                     if g.raw.get("pregnancy_note") else ""),
                        "sources": g.sources})
        if lactating and g.lactation in ("avoid", "contraindicated", "caution"):
            out.append({"drug": g.name, "type": "lactation",
                        "level": "contraindicated" if g.lactation == "contraindicated" else g.lactation,
                        "detail": f"哺乳期{PREGNANCY_ZH[g.lactation]}", "sources": g.sources})
    return out


def to_mg(value: float, unit: str) -> float | None:
    factor = UNIT_TO_MG.get((unit or "").strip().lower().replace("µ", "μ"))
    return value * factor if factor is not None else None


def dose_check(drug: Drug, daily_value: float, unit: str) -> dict | None:
    """Compares an adult daily dose with the label maximum; None when no maximum is known."""
    mx = drug.max_daily_dose
    if not mx or mx.get("value") is None:
        return None
    limit = to_mg(float(mx["value"]), str(mx.get("unit", "")))
    given = to_mg(float(daily_value), unit)
    if limit is None or given is None:
        return {"drug": drug.name, "level": "unknown", "detail": "剂量单位无法比较", "sources": drug.sources}
    if given > limit + 1e-9:
        return {"drug": drug.name, "level": "major", "detail":
                f"日剂量{daily_value:g}{unit}超过说明书最大日剂量{mx['value']:g}{mx.get('unit')}",
                "sources": drug.sources}
    return {"drug": drug.name, "level": "ok", "detail": f"日剂量在说明书最大日剂量{mx['value']:g}{mx.get('unit')}以内",
            "sources": drug.sources}


def review(prescription: dict, kb: KnowledgeBase | None = None) -> dict[str, Any]:
    """All checks for one prescription: {drugs: [name | {name, daily_dose: {value, unit}}],
    allergies, conditions, age, pregnant, lactating}."""
    kb = kb or get_kb()
    items = prescription.get("drugs") or []
    names = [i["name"] if isinstance(i, dict) else i for i in items]
    inter = check_interactions(names, kb)
    drugs, _rows, _unknown = _resolve(kb, names)
    doses = []
    for i in items:
        if isinstance(i, dict) and i.get("daily_dose"):
            d = lookup(i["name"], kb)
            if d:
                r = dose_check(d, float(i["daily_dose"]["value"]), str(i["daily_dose"].get("unit", "")))
                if r:
                    doses.append(r)
    controlled = [{"drug": d.name, "level": "contraindicated", "detail": "麻醉药品或精神药品不得在互联网诊疗中开具",
                   "sources": ["《互联网诊疗管理办法（试行）》（2018）"]} for d in drugs if d.controlled]
    return {
        **inter,
        "allergies": allergy_conflicts(drugs, prescription.get("allergies"), kb),
        "contraindications": contraindications(
            drugs, conditions=prescription.get("conditions"), age=prescription.get("age"),
            pregnant=bool(prescription.get("pregnant")), lactating=bool(prescription.get("lactating")), kb=kb),
        "doses": doses,
        "controlled": controlled,
    }
