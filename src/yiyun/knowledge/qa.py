"""Question answering over the knowledge base.

intent (rules over the question's wording) + entities (names, aliases, pinyin homophones)
→ an answer composed from the entry's own fields, with the entry's sources. A question the
knowledge base does not cover, or a non-medical one, gets an honest `known: false`.
"""

from __future__ import annotations

import re
from typing import Any

from yiyun.knowledge import drugs as drug_service
from yiyun.knowledge.kb import KnowledgeBase, get_kb
from yiyun.knowledge.search import get_index

# Order matters: the first matching intent wins (吃什么药 is about drugs, not food).
INTENTS: list[tuple[str, re.Pattern]] = [
    ("drug_interaction", re.compile(r"一起(吃|服|用|喝)|同时(吃|服|用)|一块(吃|服)|合用|同服|联用|混着|相互作用|冲突|搭配(吃|服|用)|配着吃|能.{0,2}一起|间隔多久")),
    ("first_aid", re.compile(r"急救|怎么救|如何救|抢救|心肺复苏|(晕倒|昏倒|溺水|噎住|烫伤|烧伤|触电|中暑|骨折|被狗咬|抽搐)了?(该)?怎么(办|处理)")),
    ("department", re.compile(r"挂(什么|哪个|哪|啥)(个)?科|看(什么|哪个|哪|啥)(个)?科|(什么|哪个|哪|啥)科室|哪个科|什么科|挂号|去哪(个)?(医院|科)|找什么医生")),
    ("drugs", re.compile(r"(吃|用|服|打|涂|擦|上)(什么|啥|哪些|哪种|哪个)(药|针)|什么药|用药|药物治疗|吃药|(的|怎么)?用法|用量|剂量|一次吃几|吃几片|一天几次|副作用|不良反应|说明书")),
    ("foods", re.compile(r"吃什么(好|比较好|合适|食物|东西|水果|菜)?|吃啥|(不能|不可以|能不能|可不可以|可以|能)(吃|喝)|饮食|忌口|食物|食疗|喝什么|忌吃|吃点什么|补什么")),
    ("checks", re.compile(r"检查|化验|查什么|做什么检|怎么确诊|如何确诊|诊断标准|拍片|抽血|查血|ct|CT|B超|彩超|核磁|空腹|憋尿|"
                          r"报告(单)?(怎么|看)|结果(怎么|看)|参考值|正常值")),
    ("complications", re.compile(r"并发症|会引起什么|会导致什么|会引发|后果|危害|后遗症|会不会(变成|发展)|严重吗|会死吗|影响")),
    ("causes", re.compile(r"原因|为什么|为啥|怎么引起|是什么引起|引起的|病因|怎么得|怎么会|怎么回事|诱因|咋回事")),
    ("prevention", re.compile(r"预防|避免|防止|怎么防|如何防|疫苗|防护")),
    ("treatment", re.compile(r"治疗|怎么治|如何治|咋治|治好|疗法|能治|根治|怎么缓解|如何缓解|缓解|好得快|手术|怎么办|咋办|怎么处理|能好吗|多久能好")),
    ("symptoms", re.compile(r"症状|表现|征兆|什么感觉|迹象|前兆|会怎么样|有哪些不舒服")),
    ("definition", re.compile(r"是什么|什么是|什么病|介绍|是啥|简介|是怎样|了解一下|科普")),
]
MEDICAL_HINT = re.compile(r"病|症|药|疼|痛|医|治|诊|健康|身体|血|炎|感染|检查|化验|体检|空腹|憋尿|CT|ct|B超|彩超|核磁|"
                          r"怀孕|发烧|咳|吐|拉|晕")
INTENT_ZH = {
    "symptoms": "症状", "causes": "病因", "prevention": "预防", "treatment": "治疗", "drugs": "用药",
    "department": "就诊科室", "foods": "饮食", "checks": "检查", "complications": "并发症",
    "drug_interaction": "药物相互作用", "first_aid": "急救", "definition": "简介",
}
WEIGHT_ORDER = {"very_common": 0, "common": 1, "occasional": 2, "rare": 3}
DISCLAIMER = "回答来自医学知识库，仅供健康科普参考，不能替代医生面诊。"
UNKNOWN = "抱歉，这个问题我还不知道答案。我只能回答知识库收录的疾病、症状、药品、检查和急救问题；如有不适请咨询医生。"
NON_MEDICAL = "抱歉，我只能回答医学健康相关的问题，这个问题我不知道。"


def classify(question: str) -> str | None:
    for intent, pattern in INTENTS:
        if pattern.search(question):
            return intent
    return None


def _join(items, sep="、") -> str:
    return sep.join(str(i) for i in items if i)


def ask(question: str, kb: KnowledgeBase | None = None) -> dict[str, Any]:
    kb = kb or get_kb()
    q = (question or "").strip()
    entities = get_index(kb).link(q) if q else []
    intent = classify(q) or ("definition" if entities else "unknown")
    drug_ents = [e for e in entities if e["kind"] == "drug"]
    if len(drug_ents) >= 2 and intent not in ("drugs",):
        intent = "drug_interaction"
    result = {"question": q, "intent": intent, "intent_zh": INTENT_ZH.get(intent, "未知"), "entities": entities,
              "answer": "", "sources": [], "known": False, "disclaimer": DISCLAIMER}
    if not q:
        result["answer"] = UNKNOWN
        return result
    if intent == "drug_interaction" and drug_ents:
        return _fill(result, *_answer_interaction(kb, drug_ents))
    target = _pick(entities, intent)
    if target is None or target["kind"] in ("symptom", "check"):
        # a description of an emergency is answered with the emergency advice first
        from yiyun.knowledge.triage import triage

        t = triage(q, kb=kb)
        if t["urgency"] == "emergency":
            srcs = [s for r in t["red_flags"] for s in r.get("sources", [])]
            result["intent"] = "first_aid"
            result["intent_zh"] = INTENT_ZH["first_aid"]
            return _fill(result, "【紧急】" + t["advice"], srcs, True)
    if target is None:
        # a description of symptoms without a named entity: answer with triage
        from yiyun.knowledge.triage import triage

        t = triage(q, kb=kb)
        if t["recognized"] or t["urgency"] != "routine":
            deps = _join(d["name"] for d in t["departments"][:3])
            text = f"{t['advice']} 可考虑就诊：{deps}。"
            srcs = [s for r in t["red_flags"] for s in r.get("sources", [])]
            result["intent"] = intent if intent != "unknown" else "department"
            result["intent_zh"] = INTENT_ZH.get(result["intent"], "未知")
            return _fill(result, text, srcs or ["《医疗机构诊疗科目名录》（卫医发〔1994〕第27号）"], True)
        result["answer"] = UNKNOWN if MEDICAL_HINT.search(q) else NON_MEDICAL
        return result
    kind, name = target["kind"], target["name"]
    if kind == "disease":
        return _fill(result, *_answer_disease(kb, kb.diseases[name], intent))
    if kind == "symptom":
        return _fill(result, *_answer_symptom(kb, kb.symptoms[name], intent))
    if kind == "drug":
        return _fill(result, *_answer_drug(kb, kb.drugs[name], intent))
    if kind == "firstaid":
        return _fill(result, *_answer_firstaid(kb.firstaid[name]))
    if kind == "department":
        d = kb.departments[name]
        return _fill(result, f"{d.name}：{d.description}" if d.description else "", d.raw.get("sources") or [],
                     bool(d.description))
    if kind == "check":
        return _fill(result, *_answer_check(kb, name, q, intent))
    result["answer"] = UNKNOWN
    return result


def _fill(result: dict, text: str, sources, known: bool) -> dict:
    result["answer"] = text or UNKNOWN
    result["known"] = bool(known and text)
    result["sources"] = list(dict.fromkeys(sources)) if result["known"] else []
    return result


def _pick(entities: list[dict], intent: str) -> dict | None:
    if not entities:
        return None
    prefer = {
        "first_aid": ["firstaid", "disease", "symptom"],
        "drugs": ["disease", "symptom", "drug"],
        "department": ["disease", "symptom", "department"],
        "checks": ["disease", "check", "symptom"],
    }.get(intent, ["disease", "firstaid", "symptom", "drug", "check", "department"])
    for kind in prefer:
        for e in entities:
            if e["kind"] == kind:
                return e
    return entities[0]


def _answer_disease(kb: KnowledgeBase, d, intent: str) -> tuple[str, list[str], bool]:
    r = d.raw
    name = d.name
    if intent == "symptoms":
        syms = sorted(d.symptoms, key=lambda s: WEIGHT_ORDER.get(s.weight, 9))
        common = [s.name for s in syms if s.weight in ("very_common", "common")]
        other = [s.name for s in syms if s.weight not in ("very_common", "common")]
        text = f"{name}的常见症状：{_join(common) or _join(other)}。" + (f"也可出现：{_join(other)}。" if common and other else "")
        if d.red_flags:
            text += f"出现{_join(d.red_flags)}时需尽快就医。"
        return text, d.sources, bool(syms)
    if intent == "department":
        deps = d.departments
        return (f"{name}一般就诊{_join(deps[:3])}" + (f"（首选{deps[0]}）" if len(deps) > 1 else "") + "。"
                + (f"{r.get('urgent_care')}" if r.get("urgent_care") else "")), d.sources, bool(deps)
    if intent == "foods":
        diet = r.get("diet") or {}
        fav, avoid = diet.get("favour") or [], diet.get("avoid") or []
        text = (f"{name}饮食建议：宜{_join(fav)}。" if fav else "") + (f"忌：{_join(avoid)}。" if avoid else "")
        return text, d.sources, bool(fav or avoid)
    if intent == "drugs":
        text = ""
        if d.drugs:
            text = f"{name}常用药物：{_join(d.drugs)}。请在医生或药师指导下用药，不要自行购买处方药。"
        if r.get("treatment"):
            text += f"治疗原则：{r['treatment']}"
        return text, d.sources, bool(text)
    if intent == "checks":
        if not d.checks:
            return "", d.sources, False
        text = f"{name}常做的检查：{_join(d.checks)}。"
        fasting = [c for c in d.checks if (kb.check(c) or {}).get("fasting")]
        bladder = [c for c in d.checks if (kb.check(c) or {}).get("full_bladder")]
        if fasting:
            text += f"其中{_join(fasting)}需要空腹。"
        if bladder:
            text += f"{_join(bladder)}需要憋尿。"
        described = [kb.check(c) for c in d.checks if kb.check(c)]
        srcs = list(d.sources) + [s for c in described[:3] for s in c.get("sources") or []]
        return text, srcs, True
    if intent == "complications":
        return (f"{name}可能的并发症：{_join(d.complications)}。" if d.complications else ""), d.sources, bool(d.complications)
    field = {"causes": "causes", "prevention": "prevention", "treatment": "treatment", "first_aid": "urgent_care"}.get(intent)
    if field:
        value = r.get(field)
        if field == "treatment" and value and d.drugs:
            value = f"{value} 常用药物：{_join(d.drugs)}（请遵医嘱）。"
        return (f"{name}：{value}" if value else ""), d.sources, bool(value)
    parts = [r.get("summary"), r.get("onset"), r.get("population")]
    text = "".join(f"{p}" for p in parts if p)
    if d.departments:
        text += f" 就诊科室：{_join(d.departments[:2])}。"
    return (f"{name}：{text}" if text else ""), d.sources, bool(text)


CHECK_PREPARATION = re.compile(r"空腹|憋尿|准备|注意(什么|事项|啥)|之前|前一天|前一晚|能(不能)?(吃|喝)|可以(吃|喝)|要(不要)?(吃|喝)|停药|吃药|多久|几点")
CHECK_RESULTS_FIRST = re.compile(r"高|低|异常|阳性|阴性|超标|大三阳|小三阳|结果|报告|发现|查出")
CHECK_RESULTS = re.compile(r"高|低|异常|大三阳|小三阳|结果|报告|发现|查出|怎么看|看懂|参考值|正常值|正常范围|偏高|偏低|高了|低了|升高|降低|阳性|阴性|超标|箭头|正常吗|多少算")


def _answer_check(kb: KnowledgeBase, name: str, question: str, intent: str = "") -> tuple[str, list[str], bool]:
    """What a check is, how to prepare, how to read it: the part the question asks for."""
    info = kb.checks.get(name) or {}
    users = kb.diseases_by_check.get(name, [])
    if not info:
        text = f"{name}常用于：{_join(users[:10])}。" if users else ""
        return text, [s for u in users[:3] for s in kb.diseases[u].sources], bool(text)
    if intent == "department":
        # which clinic sees an abnormal result: the first department of the diseases it serves
        counts: dict[str, int] = {}
        for u in users:
            for dep in kb.diseases[u].departments[:1]:
                counts[dep] = counts.get(dep, 0) + 1
        deps = [d for d, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:2]]
        if deps:
            text = f"{name}结果异常，一般可就诊{_join(deps)}，请带上化验单或报告。"
            if info.get("results"):
                text += f"\n结果怎么看：{info['results']}"
            return text, list(info.get("sources") or []) + [s for u in users[:2] for s in kb.diseases[u].sources], True
    prep = [str(p) for p in info.get("preparation") or []]
    fasting = info.get("fasting")
    # the cues are read in the question without the check's own name (空腹血糖高 asks about a result)
    for term in sorted([name, *(str(a) for a in info.get("aliases") or [])], key=len, reverse=True):
        question = question.replace(term, "")
    needs = ("需要空腹。" if fasting else "一般不需要空腹。") + ("需要憋尿。" if info.get("full_bladder") else
                                                        "一般不需要憋尿。" if "憋尿" in question else "")
    if CHECK_PREPARATION.search(question) and not (intent == "department" or CHECK_RESULTS_FIRST.search(question)):
        text = f"{name}：{needs}" + ("\n检查前准备：\n" + "\n".join(f"· {_period(p)}" for p in prep) if prep else "")
    elif CHECK_RESULTS.search(question) and info.get("results"):
        text = f"{name}的结果怎么看：{info['results']}"
    else:
        text = f"{name}：{info.get('what', '')}用途：{info.get('purpose', '')}{needs}"
        if users:
            text += f"常用于：{_join(users[:6])}。"
    return text, list(info.get("sources") or []), True


def _answer_symptom(kb: KnowledgeBase, s, intent: str) -> tuple[str, list[str], bool]:
    diseases = [n for n, _w in kb.diseases_by_symptom.get(s.name, [])]
    if intent == "department":
        text = f"{s.name}可就诊{_join(s.departments[:3])}。" if s.departments else ""
        if s.red_flag:
            text += "如症状严重或突然出现，请立即到急诊就诊或拨打120。"
        return text, s.sources, bool(s.departments)
    text = s.description or ""
    if diseases:
        text += ("" if not text else " ") + f"可出现{s.name}的疾病包括：{_join(diseases[:8])}。"
    if s.departments:
        text += f"建议就诊：{_join(s.departments[:2])}。"
    if s.red_flag:
        text += "此症状可能提示急症，严重时请立即拨打120。"
    sources = list(s.sources) + [src for n in diseases[:3] for src in kb.diseases[n].sources]
    return (f"{s.name}：{text}" if text else ""), sources, bool(text)


def _answer_drug(kb: KnowledgeBase, g, intent: str) -> tuple[str, list[str], bool]:
    info = drug_service.drug_info(g)
    if intent == "drug_interaction":
        related = [it for it in kb.interactions if g.name in it.drugs]
        if not related:
            return "", [], False
        text = "；".join(f"与{_join([x for x in it.drugs if x != g.name])}合用：{it.effect}，{it.advice}" for it in related)
        return f"{g.name}{text}", [s for it in related for s in it.sources], True
    parts = []
    if g.drug_class:
        parts.append(f"{g.name}属于{g.drug_class}")
    if g.indications:
        parts.append(f"用于{_join(g.indications)}")
    if info.get("usual_dose"):
        parts.append(f"常用剂量：{info['usual_dose']}")
    if g.contraindications:
        parts.append(f"禁忌：{_join(g.contraindications)}")
    if g.pregnancy:
        parts.append(f"孕妇{drug_service.PREGNANCY_ZH.get(g.pregnancy, g.pregnancy)}")
    if info.get("children"):
        parts.append(f"儿童：{info['children']}")
    text = "；".join(parts)
    if text:
        text += "。请按说明书或遵医嘱使用。"
    return text, g.sources, bool(parts)


def _answer_firstaid(f) -> tuple[str, list[str], bool]:
    steps = "；".join(f"{i + 1}. {s}" for i, s in enumerate(f.steps))
    text = (f"{f.name}（{f.when}）" if f.when else f.name) + f"：{steps}。"
    if f.do_not:
        text += f"注意：{_join(f.do_not, '；')}。"
    if f.call_120:
        text = "请立即拨打120。" + text
    return text, f.sources, bool(f.steps)


SEVERITY_RANK = {"contraindicated": 0, "major": 1, "moderate": 2, "minor": 3}
# The one-line answer to "能一起吃吗", from the most severe interaction recorded.
VERDICT = {
    0: "不能一起用：说明书或指南列为禁忌合用。",
    1: "一般不建议一起用；确需合用，须在医生指导下并密切观察。",
    2: "需要谨慎合用，注意下面的风险，最好先问医生或药师。",
    3: "相互影响较小，一般可以合用，注意下面的提示。",
}


def _period(text: str) -> str:
    text = (text or "").strip()
    return text if not text or text[-1] in "。！？；.!?" else text + "。"


def _answer_interaction(kb: KnowledgeBase, drug_ents: list[dict]) -> tuple[str, list[str], bool]:
    names = list(dict.fromkeys(e["name"] for e in drug_ents))
    res = drug_service.check_interactions(names, kb)
    if res["pairs"]:
        worst = min((SEVERITY_RANK.get(p["severity"], 9) for p in res["pairs"]), default=9)
        lines = [VERDICT.get(worst, "")] if worst in VERDICT else []
        lines += [f"{p['drugs'][0]}与{p['drugs'][1]}（{p['severity_zh']}）：{_period(p['effect'] or p['mechanism'])}"
                  f"建议：{_period(p['advice'])}" for p in res["pairs"]]
        return "\n".join(lines), [s for p in res["pairs"] for s in p["sources"]], True
    dup = res["duplicates"]
    if dup:
        text = "；".join(f"{d['drugs'][0]}与{d['drugs'][1]}{d['detail']}，属于重复用药，一般不宜同时服用" for d in dup)
        return text + "。请咨询医生或药师。", [s for d in dup for s in d["sources"]], True
    return (f"知识库中没有收录{_join(names)}之间的相互作用。这不代表可以放心合用，请咨询医生或药师。", [], False)
