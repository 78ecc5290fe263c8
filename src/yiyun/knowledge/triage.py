"""Intelligent triage (智能导诊): free text (+ age, sex) → departments and urgency.

1. Findings are extracted (negation-aware: 无胸痛 is not chest pain).
2. Red-flag rules (`data/redflags.yaml`, each with its sources) set the urgency; an
   emergency rule puts 急诊医学科 first and advises calling 120. Rules are conservative:
   an uncertain mention (是不是中风了) counts as present.
3. Departments are scored from the symptoms' departments, the diseases the assisted
   diagnosis finds likely, diseases the patient names, and department keywords.
4. Population rules: children under 14 go to 儿科 (newborns ≤ 28 days to 新生儿科), by the
   scope of 儿科 in 《医疗机构诊疗科目名录》（卫医发〔1994〕第27号）; a pregnancy goes to 产科;
   departments for the other sex are dropped; an adult with fever is sent to 发热门诊 first,
   as pre-examination triage requires (《医疗机构传染病预检分诊管理办法》, 卫生部令第41号).
"""

from __future__ import annotations

import re
from typing import Any

import ahocorasick

from yiyun.knowledge.diagnosis import diagnose
from yiyun.knowledge.extractor import Extraction, Extractor, get_extractor
from yiyun.knowledge.kb import KnowledgeBase, get_kb
from yiyun.knowledge.numerals import NUM_CHARS, parse_number

CHILD_AGE_LIMIT = 14  # years; 儿科 serves under-14s (《医疗机构诊疗科目名录》, 卫医发〔1994〕第27号)
NEWBORN_DAYS = 28  # 新生儿期: birth to 28 days (《儿科学》第9版 人民卫生出版社)
URGENCY_ORDER = {"routine": 0, "urgent": 1, "emergency": 2}
EMERGENCY = "急诊医学科"
FEVER_CLINIC = "发热门诊"
PAEDIATRIC_KEEP = {"眼科", "耳鼻咽喉科", "口腔科", "皮肤科", "烧伤科", "急诊医学科", "精神科", "心理咨询科",
                   "儿科", "新生儿科", "小儿外科", "妇科", "产科", "整形外科", "康复医学科", "中医科"}
FEMALE_ONLY = {"妇科", "产科"}
MALE_ONLY = {"男科"}
PREGNANCY_RE = re.compile(
    rf"(怀孕|怀了|孕妇|孕期|孕早期|孕中期|孕晚期|孕\s*\d+\s*周|孕[{NUM_CHARS}]+周|妊娠|产检|胎动|预产期|"
    r"怀二胎|怀三胎|有喜了|怀上了|验孕棒两条杠|两道杠)"
)
CHILD_WORDS = ("宝宝", "婴儿", "小孩", "小朋友", "幼儿", "娃", "宝贝", "儿童", "新生儿", "孩子", "儿子", "女儿",
               "闺女", "小儿", "孙子", "孙女", "外孙")
AGE_YEARS_RE = re.compile(rf"(?P<n>\d{{1,3}}|[{NUM_CHARS}]{{1,4}})\s*(?:周岁|岁)(?P<half>半)?")
AGE_MONTHS_RE = re.compile(
    rf"(?:(?P<n>\d{{1,2}}|[{NUM_CHARS}]{{1,3}})\s*个(?:多)?月(?:大|的(?:宝宝|孩子|婴儿|小孩|娃))"
    rf"|(?:宝宝|婴儿|孩子|小孩|娃|女儿|儿子|闺女)[^，。,\s]{{0,2}}?\s*(?P<n2>\d{{1,2}}|[{NUM_CHARS}]{{1,3}})\s*个(?:多)?月)"
)
AGE_DAYS_RE = re.compile(rf"(?:出生|生下来|新生儿|宝宝|婴儿)[^，。,]{{0,3}}?(?P<n>\d{{1,2}}|[{NUM_CHARS}]{{1,3}})\s*天")
ASK_FOR_DETAIL = "请再说具体一些：哪里不舒服、是什么感觉、从什么时候开始、有没有发热等其他不适。"
DISCLAIMER = "导诊结果仅供就医参考，不能替代医生诊断；病情危急请立即拨打120。"


def age_from_text(text: str) -> float | None:
    m = AGE_DAYS_RE.search(text)
    if m and (n := parse_number(m.group("n"))) is not None:
        return n / 365
    m = AGE_MONTHS_RE.search(text)
    if m and (n := parse_number(m.group("n") or m.group("n2"))) is not None:
        return n / 12
    m = AGE_YEARS_RE.search(text)
    if m and (n := parse_number(m.group("n"))) is not None and n <= 120:
        return n + (0.5 if m.group("half") else 0)
    return None


class _Keywords:
    def __init__(self, kb: KnowledgeBase) -> None:
        self.auto = ahocorasick.Automaton()
        table: dict[str, set[str]] = {}
        for d in kb.departments.values():
            for k in d.keywords:
                if k:
                    table.setdefault(k, set()).add(d.name)
        for k, deps in table.items():
            self.auto.add_word(k, (k, tuple(sorted(deps))))
        self.empty = not table
        if table:
            self.auto.make_automaton()

    def hits(self, text: str) -> list[tuple[int, int, str, tuple[str, ...]]]:
        if self.empty:
            return []
        raw = [(end - len(k) + 1, end + 1, k, deps) for end, (k, deps) in self.auto.iter(text)]
        raw.sort(key=lambda h: (-(h[1] - h[0]), h[0]))
        taken = [False] * len(text)
        out = []
        for h in raw:
            if any(taken[h[0]:h[1]]):
                continue
            for i in range(h[0], h[1]):
                taken[i] = True
            out.append(h)
        return out


class _RuleContext:
    def __init__(self, kb: KnowledgeBase, ex: Extractor, text: str, extraction: Extraction,
                 age: float | None, sex: str | None, pregnant: bool) -> None:
        self.kb, self.ex, self.text = kb, ex, text
        self.masked = ex._masked(text)
        self.extraction = extraction
        self.age, self.sex, self.pregnant = age, sex, pregnant
        self.findings = [f for f in extraction.findings if not f.negated]
        self.worsening = self._literal(WORSENING_RE, text) is not None

    def _literal(self, pattern: re.Pattern, text: str) -> tuple[int, int] | None:
        for m in pattern.finditer(text):
            if m.end() == m.start():
                continue
            negated, _u, _c = self.ex._polarity(self.masked, m.start(), m.end(), [])
            if not negated:
                return m.span()
        return None

    def term(self, term: str, text: str, blocked: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Where a rule term is present and not negated (empty when it is not)."""
        term = str(term)
        if term.startswith("re:"):
            span = self._literal(re.compile(term[3:]), text)
            return [span] if span else []
        s = self.kb.symptoms.get(term)
        spans = []
        if s is not None:
            spans = [(f.start, f.end) for f in self.findings
                     if f.symptom == s.name and not any(a < f.end and f.start < b for a, b in blocked)]
        if not spans and term in text:
            span = self._literal(re.compile(re.escape(term)), text)
            spans = [span] if span else []
        return spans

    def onset_hours(self, spans: list[tuple[int, int]]) -> float:
        """How long ago the evidence began, in hours: the most recent of the matched terms.

        A term with no duration attached (突然嘴歪了) counts as beginning now, and so does any
        recent worsening (今天加重了): unknown timing is treated as acute.
        """
        if self.worsening:
            return 0.0
        hours = []
        for s, e in spans:
            d = self.ex._nearest_duration(self.text, s, e, self.extraction.durations)
            hours.append(d["days"] * 24 if d else 0.0)
        return min(hours, default=0.0)


# A worsening makes long-standing signs acute again (说话不清两周了，今天突然加重).
WORSENING_RE = re.compile(r"加重|加剧|恶化|更(厉害|严重|重)了?|突然.{0,4}(厉害|严重)起来|又(犯|发作)了")


def _rule_fires(rule: dict, ctx: _RuleContext) -> bool:
    if "age_lt" in rule and (ctx.age is None or ctx.age >= float(rule["age_lt"])):
        return False
    if "age_gte" in rule and (ctx.age is None or ctx.age < float(rule["age_gte"])):
        return False
    if rule.get("sex") and ctx.sex and ctx.sex != rule["sex"]:
        return False
    if rule.get("pregnant") and not ctx.pregnant:
        return False
    if "temp_gte" in rule:
        t = ctx.extraction.max_temperature
        if t is None or t < float(rule["temp_gte"]):
            return False
    text = ctx.text
    blocked: list[tuple[int, int]] = []
    for phrase in rule.get("none") or []:
        phrase = str(phrase)
        pattern = re.compile(phrase[3:] if phrase.startswith("re:") else re.escape(phrase))
        for m in pattern.finditer(text):
            if m.end() > m.start():
                blocked.append((m.start(), m.end()))
    if blocked:
        chars = list(text)
        for a, b in blocked:
            for i in range(a, b):
                chars[i] = "#"
        text = "".join(chars)
    groups = rule.get("all") or []
    onset = rule.get("onset")
    evidence: list[tuple[int, int]] = []
    for group in groups:
        if onset:  # every matched term counts towards the timing
            spans = [span for t in group for span in ctx.term(t, text, blocked)]
        else:  # the first present term is enough
            spans = next((found for t in group if (found := ctx.term(t, text, blocked))), [])
        if not spans:
            return False
        evidence += spans
    if onset and groups:
        # stroke signs are an emergency within the reperfusion windows, or when the timing is
        # unknown; the same signs days old are urgent rather than a call for an ambulance
        hours = ctx.onset_hours(evidence)
        if "max_hours" in onset and hours > float(onset["max_hours"]):
            return False
        if "min_hours" in onset and hours <= float(onset["min_hours"]):
            return False
    return bool(groups) or "temp_gte" in rule


def _is_pregnant(ex: Extractor, text: str, sex: str | None) -> bool:
    if sex == "male":
        return False
    masked = ex._masked(text)
    for m in PREGNANCY_RE.finditer(text):
        negated, _u, _c = ex._polarity(masked, m.start(), m.end(), [])
        before = text[max(0, m.start() - 2):m.start()]
        if not negated and "备" not in before and "避" not in before and "不" not in before:
            return True
    return False


def _child(text: str, age: float | None) -> bool:
    if age is not None:
        return age < CHILD_AGE_LIMIT
    return any(w in text for w in CHILD_WORDS)


def triage(text: str, age: float | None = None, sex: str | None = None,
           kb: KnowledgeBase | None = None) -> dict[str, Any]:
    kb = kb or get_kb()
    ex = get_extractor(kb)
    text = (text or "").strip()
    extraction = ex.extract(text, structure=False)
    sex = sex if sex in ("male", "female") else None
    if age is None:
        age = age_from_text(text)
    pregnant = _is_pregnant(ex, text, sex)
    if pregnant and sex is None:
        sex = "female"
    child = _child(text, age)
    newborn = age is not None and age <= NEWBORN_DAYS / 365

    # 1. red flags
    ctx = _RuleContext(kb, ex, text, extraction, age, sex, pregnant)
    fired = [r for r in kb.redflags if _rule_fires(r, ctx)]
    urgency = "routine"
    for r in fired:
        if URGENCY_ORDER.get(r.get("urgency", "urgent"), 1) > URGENCY_ORDER[urgency]:
            urgency = r.get("urgency", "urgent")
    present = extraction.present + [s for s in extraction.possible if s not in extraction.present]
    flagged = [s for s in present if kb.symptoms.get(s) and kb.symptoms[s].red_flag
               and not _chronic_stable(kb, ctx, s)]
    if flagged and urgency == "routine":
        urgency = "urgent"

    # 2. department scores
    scores: dict[str, float] = {}
    reasons: dict[str, list[str]] = {}

    def add(dep: str, value: float, reason: str) -> None:
        if dep not in kb.departments or dep == EMERGENCY or value <= 0:
            return
        if not child and dep in ("儿科", "新生儿科", "小儿外科"):
            return
        scores[dep] = scores.get(dep, 0.0) + value
        if reason and reason not in reasons.setdefault(dep, []):
            reasons[dep].append(reason)

    for f in extraction.findings:
        if f.negated:
            continue
        s = kb.symptoms.get(f.symptom)
        if not s:
            continue
        boost = 1.3 if f.severity == "severe" else 1.0
        boost *= 0.6 if f.uncertain else 1.0
        for i, dep in enumerate(d for d in s.departments if d != EMERGENCY):
            add(dep, boost * (1.0 if i == 0 else 0.6 if i == 1 else 0.35), f"症状「{f.symptom}」")
    dx = None
    if extraction.present:
        dx = diagnose(extraction.present, extraction.absent, age=age, sex=sex, kb=kb, top=5)
        # one finding makes a weak differential (its posterior is shared by the few diseases
        # that list the finding: 腿抽筋 alone is not 下肢静脉曲张): it counts half
        dx_weight = 1.0 if len(extraction.present) >= 2 else 0.5
        for c in dx["candidates"]:
            deps = [d for d in kb.diseases[c["disease"]].departments if d != EMERGENCY]
            if not child:
                deps = [d for d in deps if d not in ("儿科", "新生儿科", "小儿外科")]
            for i, dep in enumerate(deps[:2]):
                add(dep, dx_weight * c["probability"] * (1.6 if i == 0 else 0.8),
                    f"可能的疾病：{c['disease']}（{round(c['probability'] * 100)}%）")
    for cond in extraction.conditions:
        if cond["negated"]:
            continue
        d = kb.diseases.get(cond["disease"])
        if not d:
            continue
        deps = [x for x in d.departments if x != EMERGENCY]
        weight = 0.4 if cond["history"] else 1.5
        for i, dep in enumerate(deps[:2]):
            add(dep, weight * (1.0 if i == 0 else 0.5), f"提到疾病「{cond['text']}」")
    masked = ex._masked(text)
    keyword_hits: dict[str, int] = {}
    for s_, e_, k, deps in kb.cached("triage_keywords", lambda: _Keywords(kb)).hits(text):
        negated, _u, _c = ex._polarity(masked, s_, e_, [])
        if negated:
            continue
        for dep in deps:
            if keyword_hits.get(dep, 0) < 3:
                keyword_hits[dep] = keyword_hits.get(dep, 0) + 1
                add(dep, 0.5, f"提到「{k}」")

    # 3. population rules
    fever = kb.first_symptom(["发热", "发烧"])
    has_fever = fever in extraction.present or (extraction.max_temperature or 0) >= 37.3
    top_score = max(scores.values(), default=0.0)
    if child:
        scores, reasons = _paediatric(kb, scores, reasons, newborn)
        top_score = max(scores.values(), default=0.0)
        target = "新生儿科" if newborn and "新生儿科" in kb.departments else "儿科"
        if target in kb.departments:
            scores[target] = max(scores.get(target, 0.0), top_score + 0.01 if _paediatric_first(scores) else 0.5)
            reasons.setdefault(target, []).insert(
                0, "新生儿（出生28天内）就诊新生儿科" if target == "新生儿科"
                else f"{CHILD_AGE_LIMIT}岁以下儿童就诊儿科（《医疗机构诊疗科目名录》）")
    elif has_fever and FEVER_CLINIC in kb.departments and not pregnant:
        scores[FEVER_CLINIC] = max(scores.get(FEVER_CLINIC, 0.0), top_score + 0.2)
        reasons.setdefault(FEVER_CLINIC, []).insert(0, "发热患者须先到发热门诊（《医疗机构传染病预检分诊管理办法》）")
    if pregnant and "产科" in kb.departments:
        top_score = max(scores.values(), default=0.0)
        scores["产科"] = top_score + 0.5
        reasons.setdefault("产科", []).insert(0, "孕期不适优先就诊产科")
    if sex == "male":
        for dep in FEMALE_ONLY:
            scores.pop(dep, None)
    elif sex == "female":
        for dep in MALE_ONLY:
            scores.pop(dep, None)

    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    if ranked:  # drop departments that only a sliver of the evidence points to
        ranked = [kv for kv in ranked if kv[1] >= 0.05 * ranked[0][1]]
    recognized = bool(ranked)
    if not ranked:
        fallback = "儿科" if child and "儿科" in kb.departments else "全科医疗科" if "全科医疗科" in kb.departments else "内科"
        ranked = [(fallback, 1.0)]
        reasons[fallback] = ["没能从描述中识别出明确的症状，可先到该科就诊或咨询医院导诊台"]
    total = sum(v for _, v in ranked) or 1.0
    departments = [
        {"name": dep, "score": round(v / total, 4), "reason": "；".join(reasons.get(dep, [])[:3])}
        for dep, v in ranked
    ]
    red_flags = [
        {"id": r.get("id"), "name": r.get("name"), "urgency": r.get("urgency", "urgent"),
         "advice": r.get("advice", ""), "sources": r.get("sources", [])}
        for r in fired
    ]
    for s in flagged:
        red_flags.append({"id": f"symptom:{s}", "name": s, "urgency": "urgent",
                          "advice": f"「{s}」可能提示急症，请尽快就医。", "sources": kb.symptoms[s].sources})
    if urgency == "emergency":
        names = "、".join(r["name"] for r in red_flags if r["urgency"] == "emergency")
        departments = [{"name": EMERGENCY, "score": 1.0, "reason": f"危险信号：{names}；请立即拨打120"}] + [
            {**d, "score": round(d["score"] * 0.5, 4)} for d in departments if recognized and d["name"] != EMERGENCY
        ]
        total = sum(d["score"] for d in departments)
        for d in departments:
            d["score"] = round(d["score"] / total, 4)
    advice = _advice(urgency, red_flags, departments)
    if not recognized and urgency == "routine":
        advice = f"抱歉，没能看懂您的描述。{ASK_FOR_DETAIL} " + advice
    return {
        "urgency": urgency,
        "departments": departments,
        "red_flags": red_flags,
        "call_120": urgency == "emergency",
        "advice": advice,
        "findings": {"present": extraction.present, "absent": extraction.absent,
                     "possible": extraction.possible, "max_temperature": extraction.max_temperature},
        "patient": {"age": age, "sex": sex, "child": child, "pregnant": pregnant},
        "possible_diseases": [
            {"disease": c["disease"], "probability": c["probability"]} for c in (dx or {}).get("candidates", [])[:3]
        ],
        "recognized": recognized,
        "ask_for_detail": None if recognized else ASK_FOR_DETAIL,
        "disclaimer": DISCLAIMER,
    }


def _chronic_stable(kb: KnowledgeBase, ctx: _RuleContext, symptom: str) -> bool:
    """A red-flag symptom present unchanged for weeks (气短好几年了) is not acute by itself.

    Only for the symptoms listed under `chronic_signs` in the lexicon, and only when every
    mention carries a duration longer than the threshold, none is described as severe, and
    nothing says it got worse. The red-flag rules still apply to such text on their own terms.
    """
    conf = (kb.lexicon or {}).get("chronic_signs") or {}
    if symptom not in set(conf.get("symptoms") or []) or ctx.worsening:
        return False
    days = float(conf.get("days", 28))
    mentions = [f for f in ctx.findings if f.symptom == symptom]
    return bool(mentions) and all(
        f.duration is not None and f.duration["days"] > days and f.severity != "severe" for f in mentions)


def _paediatric_first(scores: dict[str, float]) -> bool:
    """儿科 leads unless an organ specialty (eye, ENT, teeth, skin…) clearly dominates."""
    organ = max((v for d, v in scores.items() if d in PAEDIATRIC_KEEP - {"儿科", "新生儿科"}), default=0.0)
    general = max((v for d, v in scores.items() if d in ("儿科", "新生儿科", "小儿外科")), default=0.0)
    return organ <= general * 1.5 or general == 0.0 and organ == 0.0


def _paediatric(kb: KnowledgeBase, scores, reasons, newborn: bool):
    """Adult internal and surgical departments map to their children's counterparts."""
    out: dict[str, float] = {}
    why: dict[str, list[str]] = {}
    medical = "新生儿科" if newborn and "新生儿科" in kb.departments else "儿科"
    for dep, v in scores.items():
        if dep in PAEDIATRIC_KEEP:
            target = dep
        else:
            d = kb.departments.get(dep)
            surgical = dep == "外科" or (d is not None and d.parent == "外科") or dep == "骨科"
            target = "小儿外科" if surgical and "小儿外科" in kb.departments and not newborn else medical
        out[target] = out.get(target, 0.0) + v
        why.setdefault(target, []).extend(r for r in reasons.get(dep, []) if r not in why.get(target, []))
    return out, why


def _advice(urgency: str, red_flags: list[dict], departments: list[dict]) -> str:
    if urgency == "emergency":
        first = next((r["advice"] for r in red_flags if r["urgency"] == "emergency"), "")
        return first or "情况危急，请立即拨打120。"
    top = departments[0]["name"] if departments else "全科医疗科"
    if urgency == "urgent":
        first = next((r["advice"] for r in red_flags if r.get("advice")), "")
        return f"建议尽快（当天）到{top}就诊。" + first
    return f"建议到{top}门诊就诊；症状加重或出现胸痛、呼吸困难、意识改变等情况请立即就医。"
