"""Finding extraction from Chinese free text (patients' words and clinical notes).

Symptom names and synonyms from the knowledge base (plus the engine's colloquial lexicon)
are matched with an Aho-Corasick automaton, leftmost-longest; single-character terms
(咳, 吐, 痒) are kept only where jieba, loaded with the medical vocabulary, segments them
as a word. Each finding carries character offsets into the original text, its polarity
(negation and uncertainty cues, in the spirit of NegEx adapted to Chinese), frequency,
severity, body site and duration. Temperatures, epidemiological history (travel to a
named area, contact with a confirmed case) and mentioned conditions and drugs are
extracted too, and a note is split into its sections (主诉/现病史/既往史/流行病学史…).
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import ahocorasick

from yiyun.knowledge.kb import KnowledgeBase, get_kb
from yiyun.knowledge.numerals import NUM_CHARS, parse_number

# --- cue lists ---------------------------------------------------------------------------
# Clause boundaries stop a cue's scope; a list (、和及或) continues it: 无发热、咳嗽.
HARD_BOUNDARY = "，,。.；;！!？?\n\r：:"
CONTRAST = ("但是", "但", "可是", "不过", "却", "然而", "而是")
NEGATION_CUES = (
    "否认", "没有", "并没有", "从没有", "从来没有", "从未", "未曾", "并未", "并无", "未见", "未诉",
    "未出现", "没出现", "未有", "不伴有", "不伴", "无", "没", "未", "不", "非", "不是", "没什么",
    "不怎么", "也没", "也不", "都没", "都不", "毫无", "排除",
)
UNCERTAIN_CUES = (
    "不排除", "不能排除", "待排除", "待排", "疑似", "可疑", "可能", "怀疑", "考虑", "似乎", "好像",
    "也许", "不确定", "有可能", "是不是", "有没有", "会不会", "像是", "？",
)
# Phrases that contain a negation character but negate nothing clinical.
PSEUDO_NEGATIONS = (
    "无明显诱因", "无明显原因", "无诱因", "不明原因", "原因不明", "不明", "无明显好转", "没有好转",
    "未见好转", "未好转", "不见好", "没好", "不好", "不舒服", "不适", "不停", "不止", "不断", "不退",
    "不下", "不了", "不住", "不行", "无法", "没法", "不能", "不清", "不出", "不上", "不过来", "不到",
    "不管", "不知道", "不知", "不用", "不要", "无事", "没事", "没想到", "不久", "不小心", "未治疗",
    "未就诊", "未处理", "未服药", "没吃药", "没看", "未见明显好转", "不一定",
)
FREQUENCY_CUES = {
    "偶有": "occasional", "偶尔": "occasional", "有时候": "occasional", "有时": "occasional",
    "时有": "occasional", "间断": "occasional", "间歇": "occasional", "反复": "frequent",
    "经常": "frequent", "总是": "frequent", "老是": "frequent", "频繁": "frequent", "常常": "frequent",
    "一直": "persistent", "持续": "persistent", "天天": "frequent", "每天": "frequent",
}
SEVERE_BEFORE = ("剧烈", "剧", "严重", "很厉害", "特别", "非常", "极度", "撕裂样", "刀割样", "持续性剧",
                 "难以忍受", "很", "超级", "巨")
MILD_BEFORE = ("轻微", "轻度", "有点儿", "有点", "有些", "稍微", "稍", "略", "隐隐", "一点点", "一点", "微")
SEVERE_AFTER = ("得厉害", "得很", "得要命", "得不行", "死了", "受不了", "厉害", "严重", "剧烈", "难忍")
# Between a cue and its target only these may stand (plus other findings).
FILLER = re.compile(
    r"(明显|什么|任何|特别|怎么|太|很|有|出现|想|要|会|打算|伴有|伴|过|再|发生|感到|觉得|咋|啥|是|都|了|也|还|"
    r"并且|并|和|及|与|或|或者|、|/|\s|以及|等|症状|表现|情况|的|其他|其它|一点|啊|呀|呢|吧)"
)
QUESTION_END = re.compile(r"(吗|么|没有?|不)[？?]?$")

# --- patterns ----------------------------------------------------------------------------
_NUM = rf"(?:\d+(?:\.\d+)?|[{NUM_CHARS}]{{1,4}})"
DURATION = re.compile(
    rf"(?P<num>{_NUM})\s*(?P<approx>多|余|来)?\s*(?:个)?\s*(?P<approx2>多|余)?\s*(?P<half>半)?"
    r"(?P<unit>小时|钟头|分钟|天|日|周|星期|礼拜|月|年)(?P<half2>半)?(?P<approx3>多|余|左右|上下)?"
    r"(?P<ago>前|以前|之前|以来|来|了)?"
)
RELATIVE_DAYS = {
    "昨天": 1.0, "昨晚": 1.0, "昨日": 1.0, "昨夜": 1.0, "前天": 2.0, "大前天": 3.0, "今天": 0.5,
    "今早": 0.5, "今晨": 0.5, "今晚": 0.2, "上周": 7.0, "上个星期": 7.0, "上个礼拜": 7.0,
    "上个月": 30.0, "上月": 30.0, "去年": 365.0, "刚才": 0.05, "半夜": 0.5,
}
UNIT_DAYS = {"小时": 1 / 24, "钟头": 1 / 24, "分钟": 1 / 1440, "天": 1, "日": 1, "周": 7,
             "星期": 7, "礼拜": 7, "月": 30, "年": 365}
TEMPERATURE = re.compile(
    r"(?P<num>\d{2}(?:\.\d{1,2})?|[三四]十[一二三四五六七八九]?(?:点[零〇一二三四五六七八九])?)\s*"
    r"(?P<unit>℃|°C|°c|摄氏度|度)(?P<dec>[一二三四五六七八九]|\d(?!\d))?"
)
TEMPERATURE_BARE = re.compile(r"(?:体温|[Tt]\s*[:：=]?)\s*(?P<num>\d{2}\.\d{1,2}|\d{2})(?!\d)")
SECTION_HEADINGS = {
    "主诉": "chief_complaint",
    "现病史": "present_illness",
    "既往史": "past_history",
    "既往病史": "past_history",
    "流行病学史": "epidemiological_history",
    "流行病学调查": "epidemiological_history",
    "个人史": "personal_history",
    "过敏史": "allergy_history",
    "家族史": "family_history",
    "婚育史": "marital_history",
    "月经史": "menstrual_history",
    "体格检查": "physical_exam",
    "查体": "physical_exam",
    "辅助检查": "auxiliary_exams",
    "初步诊断": "diagnosis",
    "诊断": "diagnosis",
    "处理": "plan",
    "处理意见": "plan",
}
SECTION_RE = re.compile(
    r"(?:^|(?<=[\n。；;\s]))\s*【?(?P<h>" + "|".join(sorted(SECTION_HEADINGS, key=len, reverse=True))
    + r")】?\s*[:：]"
)
PAST_HINTS = re.compile(r"既往|以前|以往|曾患|曾有|曾经|病史|手术史|过敏|多年|长期服用|平素|平时身体")
EPI_HINTS = re.compile(r"旅居|旅行史|接触史|接触过|密接|确诊|疑似|疫区|风险地区|去过|到过|从.{1,8}回来|聚集|阳性")
TRAVEL_VERBS = ("去过", "到过", "去了", "途经", "出差", "旅游", "旅行", "旅居", "刚从", "从", "来自",
                "回来", "待过", "呆过", "探亲", "路过")
TRAVEL_AFTER = ("回来", "返回", "回到", "旅居", "旅行", "旅游", "出差", "探亲", "来的", "过来", "待过", "呆过",
                "玩", "一趟", "趟")
CONTACT_TARGET = re.compile(
    r"(确诊(?:病例|患者|病人|者|的人|的)?|疑似(?:病例|患者|病人)?|(?:核酸|抗原)?阳性(?:病例|患者|的人)?|感染者|"
    r"阳了|发热病人|发烧的人|新冠(?:病人|患者)|病例)"
)
CONTACT_CUES = ("密切接触", "接触过", "接触到", "接触", "密接", "同住", "一起吃饭", "一起", "见过", "陪护",
                "照顾", "同事", "同学", "家人", "家里人", "老公", "老婆", "爱人", "孩子", "父母", "爸", "妈",
                "朋友", "室友", "舍友", "邻居", "同车", "同一", "共同")
PLACE_SUFFIX = re.compile(r"[\u4e00-\u9fa5]{1,5}(?:省|市|县|区|州|镇|乡|村|地区)")


@dataclass
class Duration:
    text: str
    start: int
    end: int
    days: float
    approximate: bool = False

    def as_dict(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end,
                "days": round(self.days, 3), "approximate": self.approximate}


@dataclass
class Finding:
    symptom: str
    text: str
    start: int
    end: int
    negated: bool = False
    uncertain: bool = False
    cue: str | None = None
    frequency: str | None = None
    severity: str | None = None
    body_site: str | None = None
    duration: dict | None = None

    @property
    def polarity(self) -> str:
        return "absent" if self.negated else ("possible" if self.uncertain else "present")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["polarity"] = self.polarity
        return d


@dataclass
class Extraction:
    text: str
    findings: list[Finding] = field(default_factory=list)
    temperatures: list[dict] = field(default_factory=list)
    durations: list[Duration] = field(default_factory=list)
    epidemiology: list[dict] = field(default_factory=list)
    conditions: list[dict] = field(default_factory=list)
    drugs: list[dict] = field(default_factory=list)
    note: dict[str, str] = field(default_factory=dict)

    @property
    def present(self) -> list[str]:
        return _unique(f.symptom for f in self.findings if f.polarity == "present")

    @property
    def absent(self) -> list[str]:
        present = set(self.present)
        return _unique(f.symptom for f in self.findings if f.negated and f.symptom not in present)

    @property
    def possible(self) -> list[str]:
        seen = set(self.present) | set(self.absent)
        return _unique(f.symptom for f in self.findings if f.uncertain and f.symptom not in seen)

    @property
    def max_temperature(self) -> float | None:
        values = [t["value"] for t in self.temperatures]
        return max(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "findings": [f.as_dict() for f in self.findings],
            "present": self.present,
            "absent": self.absent,
            "possible": self.possible,
            "temperatures": self.temperatures,
            "max_temperature": self.max_temperature,
            "durations": [d.as_dict() for d in self.durations],
            "epidemiology": self.epidemiology,
            "conditions": self.conditions,
            "drugs": self.drugs,
            "note": self.note,
        }


def _unique(items) -> list[str]:
    out, seen = [], set()
    for i in items:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


# --- the extractor -----------------------------------------------------------------------


class Extractor:
    """Built once per knowledge base (see `get_extractor`)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        lex = kb.lexicon or {}
        self.automaton = ahocorasick.Automaton()
        entries: dict[str, tuple[str, str]] = {}
        # order: weaker kinds first so that a symptom term wins a tie with a disease alias
        for term, name in kb.department_alias.items():
            entries[term] = ("department", name)
        for term, name in kb.drug_alias.items():
            entries[term] = ("drug", name)
        for term, name in kb.disease_alias.items():
            entries[term] = ("condition", name)
        for term, name in kb.symptom_alias.items():
            entries[term] = ("symptom", name)
        self.places = [str(p) for p in lex.get("places") or []]
        for p in self.places:
            entries.setdefault(p, ("place", p))
        for term, value in entries.items():
            if term:
                self.automaton.add_word(term, (len(term), value[0], value[1], term))
        if entries:
            self.automaton.make_automaton()
        self.empty = not entries
        self.site_pain: dict[str, str] = {}
        for site, target in (lex.get("site_pain") or {}).items():
            name = kb.first_symptom(target)
            if name:
                self.site_pain[str(site)] = name
        sites = sorted(self.site_pain, key=len, reverse=True)
        self.site_pain_re = (
            re.compile(r"(?P<site>" + "|".join(map(re.escape, sites)) + r")(?:部|子)?"
                       r"(?:有点儿?|有些|很|好|特别|非常|一直|总是|老是|经常|偶尔|也|还|又|就|有|阵阵|隐隐|一阵阵)?"
                       r"(?P<neg>不|没|没有|也不|都不|不怎么|不太)?"
                       r"(?:的)?(?:隐隐|阵阵|一阵一阵|胀|绞|刺|酸|闷|钝|剧|隐|撕裂样|针扎样)?(?P<pain>疼|痛)")
            if sites else None
        )
        # Context patterns (lexicon `patterns`) win over the words they overlap: 腿老抽筋 is a
        # cramp, not 抽筋 (a seizure); 嗓子哑得说不出话 is loss of voice, not a stroke's loss of
        # speech. The named group `m`, when present, is the finding's span.
        self.patterns: list[tuple[re.Pattern, str]] = []
        for item in lex.get("patterns") or []:
            if not isinstance(item, dict) or not item.get("re"):
                continue
            name = kb.first_symptom(item.get("symptom"))
            if name:
                self.patterns.append((re.compile(str(item["re"])), name))
        body_sites = sorted({str(s) for s in lex.get("body_sites") or []}, key=len, reverse=True)
        self.body_site_re = re.compile("|".join(map(re.escape, body_sites))) if body_sites else None
        self._jieba = None
        self._jieba_lock = threading.Lock()

    # jieba, loaded with the medical vocabulary, decides whether a one-character term is a word
    def _tokenizer(self):
        if self._jieba is None:
            with self._jieba_lock:
                if self._jieba is None:
                    import jieba

                    jieba.setLogLevel(60)
                    tok = jieba.Tokenizer()
                    for term in list(self.kb.symptom_alias) + list(self.kb.disease_alias) + list(self.kb.drug_alias):
                        if len(term) > 1:
                            tok.add_word(term, freq=20000)
                    self._jieba = tok
        return self._jieba

    def tokens(self, text: str) -> list[tuple[str, int, int]]:
        return list(self._tokenizer().tokenize(text))

    def _single_char_ok(self, text: str, start: int, tokens: list[tuple[str, int, int]]) -> bool:
        for word, s, e in tokens:
            if s <= start < e:
                if len(word) == 1:
                    return True
                rest = word[:start - s] + word[start - s + 1:]
                return all(c in "好很一得了死老就又也在" for c in rest)
        return False

    # --- matching ------------------------------------------------------------------------
    def _matches(self, text: str) -> list[tuple[int, int, str, str, str]]:
        if self.empty or not text:
            return []
        raw = []
        for end, (length, kind, name, term) in self.automaton.iter(text):
            raw.append((end - length + 1, end + 1, kind, name, term))
        raw.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
        taken = [False] * len(text)
        chosen = []
        for pattern, name in self.patterns:
            for mm in pattern.finditer(text):
                s, e = mm.span("m") if "m" in pattern.groupindex and mm.group("m") else mm.span()
                if e <= s or any(taken[s:e]):
                    continue
                for i in range(s, e):
                    taken[i] = True
                chosen.append((s, e, "symptom", name, text[s:e]))
        tokens = None
        for m in raw:
            s, e = m[0], m[1]
            if any(taken[s:e]):
                continue
            if e - s == 1 and m[2] == "symptom":
                if tokens is None:
                    tokens = self.tokens(text)
                if not self._single_char_ok(text, s, tokens):
                    continue
            for i in range(s, e):
                taken[i] = True
            chosen.append(m)
        if self.site_pain_re is not None:
            for mm in self.site_pain_re.finditer(text):
                s, e = mm.start(), mm.end()
                if any(taken[s:e]):
                    continue
                name = self.site_pain[mm.group("site")]
                for i in range(s, e):
                    taken[i] = True
                chosen.append((s, e, "symptom" if not mm.group("neg") else "symptom_negated", name, mm.group(0)))
        chosen.sort(key=lambda m: m[0])
        return chosen

    # --- cue scope -----------------------------------------------------------------------
    @staticmethod
    def _masked(text: str) -> str:
        masked = text
        for p in PSEUDO_NEGATIONS:
            if p in masked:
                masked = masked.replace(p, "#" * len(p))
        return masked

    @staticmethod
    def _clause_start(text: str, pos: int) -> int:
        i = pos - 1
        while i >= 0 and text[i] not in HARD_BOUNDARY:
            i -= 1
        base = start = i + 1
        window = text[base:pos]
        for c in CONTRAST:
            j = window.rfind(c)
            if j >= 0:
                start = max(start, base + j + len(c))
        return start

    @staticmethod
    def _clause_end(text: str, pos: int) -> int:
        i = pos
        while i < len(text) and text[i] not in HARD_BOUNDARY:
            i += 1
        return i

    @staticmethod
    def _gap_clear(gap: str) -> bool:
        return FILLER.sub("", gap).strip("#") == "" if "#" not in gap else False

    def _cue_before(self, masked: str, start: int, spans, cues, max_back: int = 14):
        """The nearest cue before `start` whose scope reaches it, or None."""
        lo = max(self._clause_start(masked, start), start - max_back)
        window = masked[lo:start]
        best = None
        for cue in cues:
            j = window.rfind(cue)
            while j >= 0:
                cue_end = lo + j + len(cue)
                gap = list(masked[cue_end:start])
                for s, e in spans:  # other findings inside the gap do not break the scope
                    for k in range(max(s, cue_end), min(e, start)):
                        gap[k - cue_end] = ""
                if self._gap_clear("".join(gap)):
                    if best is None or cue_end > best[1] or (cue_end == best[1] and len(cue) > len(best[0])):
                        best = (cue, cue_end)
                    break
                j = window.rfind(cue, 0, j)
        return best[0] if best else None

    @staticmethod
    def _negated_after(masked: str, end: int) -> str | None:
        m = re.match(r"(?:倒是|倒|也|都|就|则)?(没有|没|无|否认|否|阴性|（-）|\(-\))(?:了)?(?=[，,。.；;！!？?\s、]|$)",
                     masked[end:end + 8])
        return m.group(1) if m else None

    def _polarity(self, masked: str, start: int, end: int, spans) -> tuple[bool, bool, str | None]:
        uncertain = self._cue_before(masked, start, spans, UNCERTAIN_CUES)
        negation = self._cue_before(masked, start, spans, NEGATION_CUES)
        if uncertain and negation and uncertain.endswith(negation):
            negation = None
        if uncertain and negation:
            # the nearer cue decides: 可能没有发热 → absent (uncertainly); 不排除肺炎 → possible
            return True, False, negation
        if negation:
            return True, False, negation
        after = self._negated_after(masked, end)
        if after:
            return True, False, after
        if uncertain:
            return False, True, uncertain
        tail = masked[end:self._clause_end(masked, end)]
        if QUESTION_END.search(tail) and ("吗" in tail or "?" in tail or "？" in tail):
            return False, True, "吗"
        return False, False, None

    @staticmethod
    def _frequency(text: str, start: int) -> str | None:
        window = text[max(0, start - 6):start]
        best = None
        for cue, value in FREQUENCY_CUES.items():
            j = window.rfind(cue)
            if j >= 0 and (best is None or j > best[0]):
                best = (j, value)
        return best[1] if best else None

    @staticmethod
    def _severity(text: str, start: int, end: int) -> str | None:
        before = text[max(0, start - 5):start]
        after = text[end:end + 5]
        for cue in SEVERE_AFTER:
            if after.startswith(cue) or after[1:].startswith(cue):
                return "severe"
        best = None
        for cue in SEVERE_BEFORE:
            j = before.rfind(cue)
            if j >= 0 and (best is None or j > best[0]):
                best = (j, "severe")
        for cue in MILD_BEFORE:
            j = before.rfind(cue)
            if j >= 0 and (best is None or j >= best[0]):
                best = (j, "mild")
        return best[1] if best else None

    def _body_site(self, text: str, start: int, end: int, symptom: str) -> str | None:
        if self.body_site_re is None:
            return None
        window_lo = max(self._clause_start(text, start), start - 6)
        found = None
        for m in self.body_site_re.finditer(text, window_lo, end):
            found = m.group(0)
        if found:
            return found
        s = self.kb.symptoms.get(symptom)
        return s.body_site or None if s else None

    # --- values --------------------------------------------------------------------------
    @staticmethod
    def durations(text: str) -> list[Duration]:
        out: list[Duration] = []
        for m in DURATION.finditer(text):
            n = parse_number(m.group("num"))
            if n is None or n <= 0:
                continue
            # 三十九度 and 38.5度 are temperatures, 3次 is a count: the unit decides.
            value = n
            if m.group("half") or m.group("half2"):
                value += 0.5
            approx = bool(m.group("approx") or m.group("approx2") or m.group("approx3")) or \
                m.group("num") in ("几",) or "几" in m.group("num")
            if m.group("approx") == "来" or m.group("approx") in ("多", "余") or m.group("approx2"):
                value = value * 1.1 if value >= 10 else value + 0.3
            days = value * UNIT_DAYS[m.group("unit")]
            if days > 365 * 100:
                continue
            text_ = m.group(0)
            if m.group("ago") == "了":
                text_ = text_[:-1]
            out.append(Duration(text_, m.start(), m.start() + len(text_), days, approx))
        for word, days in RELATIVE_DAYS.items():
            for m in re.finditer(re.escape(word), text):
                if not any(d.start <= m.start() < d.end for d in out):
                    out.append(Duration(word, m.start(), m.end(), days, True))
        out.sort(key=lambda d: d.start)
        return out

    @staticmethod
    def temperatures(text: str) -> list[dict]:
        out = []
        for m in TEMPERATURE.finditer(text):
            num = m.group("num")
            if num[0] in "三四":
                whole, _, dec = num.partition("点")
                value = parse_number(whole)
                if value is None:
                    continue
                if dec:
                    value += (parse_number(dec) or 0) / 10
            else:
                value = float(num)
            if m.group("dec"):
                d = m.group("dec")
                value += (float(d) if d.isdigit() else (parse_number(d) or 0)) / 10
            if 34.0 <= value <= 43.5:
                out.append({"value": round(value, 2), "unit": "℃", "text": m.group(0),
                            "start": m.start(), "end": m.end()})
        for m in TEMPERATURE_BARE.finditer(text):
            value = float(m.group("num"))
            if 34.0 <= value <= 43.5 and not any(t["start"] <= m.start("num") < t["end"] for t in out):
                out.append({"value": value, "unit": "℃", "text": m.group(0), "start": m.start(), "end": m.end()})
        out.sort(key=lambda t: t["start"])
        return out

    # --- epidemiological history -----------------------------------------------------------
    def _epidemiology(self, text: str, masked: str, matches, spans) -> list[dict]:
        out: list[dict] = []
        places = [(s, e, name) for s, e, kind, name, _t in matches if kind == "place"]
        taken = [False] * len(text)
        for s, e, _n in places:
            for i in range(s, e):
                taken[i] = True
        for m in PLACE_SUFFIX.finditer(text):
            if not any(taken[m.start():m.end()]):
                places.append((m.start(), m.end(), m.group(0)))
        for s, e, name in sorted(places):
            lo = max(self._clause_start(text, s), s - 8)
            before = text[lo:s]
            after = text[e:e + 6]
            verb = next((v for v in TRAVEL_VERBS if v in before), None)
            after_hit = next((a for a in TRAVEL_AFTER if after.startswith(a) or after[1:].startswith(a)), None)
            history = "旅居史" in text[e:e + 8] or "旅行史" in text[e:e + 8] or "居住史" in text[e:e + 8]
            if not (verb or after_hit or history):
                continue
            anchor = lo + before.find(verb) if verb else s
            negated, uncertain, cue = self._polarity(masked, anchor, e, spans)
            out.append({"type": "travel", "place": name, "text": text[anchor:e], "start": anchor, "end": e,
                        "negated": negated, "uncertain": uncertain, "cue": cue})
        for m in CONTACT_TARGET.finditer(text):
            lo = self._clause_start(text, m.start())
            before = text[max(lo, m.start() - 14):m.start()]
            cue = next((c for c in CONTACT_CUES if c in before), None)
            self_positive = m.group(0) in ("阳了",) or re.search(r"(我|本人|自己|自测|测出)", before)
            if not cue:
                if self_positive or re.search(r"(核酸|抗原)", m.group(0)):
                    negated, uncertain, c = self._polarity(masked, m.start(), m.end(), spans)
                    out.append({"type": "self_positive", "text": m.group(0), "start": m.start(),
                                "end": m.end(), "negated": negated, "uncertain": uncertain, "cue": c})
                continue
            anchor = max(lo, m.start() - 14) + before.find(cue)
            negated, uncertain, c = self._polarity(masked, anchor, m.end(), spans)
            if not negated:
                negated, uncertain2, c2 = self._polarity(masked, m.start(), m.end(), spans)
                uncertain = uncertain or uncertain2
                c = c or c2
            out.append({"type": "contact", "with": m.group(0), "text": text[anchor:m.end()],
                        "start": anchor, "end": m.end(), "negated": negated, "uncertain": uncertain, "cue": c})
        # 否认疫区旅居史 / 无外出史 without a named place
        for m in re.finditer(r"(旅居史|旅行史|外出史|接触史)", text):
            if any(ep["start"] <= m.start() <= ep["end"] + 4 for ep in out):
                continue
            negated, uncertain, cue = self._polarity(masked, m.start(), m.end(), spans)
            out.append({"type": "travel" if m.group(0) != "接触史" else "contact", "text": m.group(0),
                        "start": m.start(), "end": m.end(), "negated": negated, "uncertain": uncertain,
                        "cue": cue})
        out.sort(key=lambda x: x["start"])
        return out

    # --- note sections ---------------------------------------------------------------------
    def structure_note(self, text: str) -> dict[str, str]:
        heads = list(SECTION_RE.finditer(text))
        sections: dict[str, str] = {}
        if heads:
            for i, h in enumerate(heads):
                end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
                key = SECTION_HEADINGS[h.group("h")]
                body = text[h.end():end].strip().strip("。；; \n")
                sections[key] = (sections.get(key, "") + ("；" if key in sections else "") + body).strip()
            preface = text[:heads[0].start()].strip()
            if preface and "chief_complaint" not in sections and len(preface) <= 40:
                sections["chief_complaint"] = preface
        else:
            sentences = [s for s in re.split(r"(?<=[。；;！!？?\n])", text) if s.strip()]
            present, past, epi = [], [], []
            for i, s in enumerate(sentences):
                body = s.strip()
                if EPI_HINTS.search(body):
                    epi.append(body)
                elif PAST_HINTS.search(body) and i > 0:
                    past.append(body)
                else:
                    present.append(body)
            if present:
                first = present[0].rstrip("。；;")
                if len(first) <= 30 and (DURATION.search(first) or any(k in first for k in ("天", "周", "月"))):
                    sections["chief_complaint"] = first
                elif len(first) <= 20:
                    sections["chief_complaint"] = first
            if present:
                sections["present_illness"] = "".join(present)
            if past:
                sections["past_history"] = "".join(past)
            if epi:
                sections["epidemiological_history"] = "".join(epi)
        for key in ("chief_complaint", "present_illness", "past_history", "epidemiological_history"):
            sections.setdefault(key, "")
        return sections

    # --- all together ----------------------------------------------------------------------
    def extract(self, text: str, *, structure: bool = True) -> Extraction:
        text = text or ""
        masked = self._masked(text)
        matches = self._matches(text)
        spans = [(s, e) for s, e, kind, _n, _t in matches if kind in ("symptom", "symptom_negated", "condition")]
        result = Extraction(text=text)
        result.durations = self.durations(text)
        result.temperatures = self.temperatures(text)
        for s, e, kind, name, term in matches:
            if kind == "place" or kind == "department":
                continue
            negated, uncertain, cue = self._polarity(masked, s, e, spans)
            if kind == "condition":
                before = text[max(0, s - 6):s]
                after = text[e:e + 4]
                history = bool(re.search(r"既往|以前|曾|病史|多年|老", before + after)) or after.startswith("史")
                result.conditions.append({"disease": name, "text": term, "start": s, "end": e,
                                          "negated": negated, "uncertain": uncertain, "cue": cue,
                                          "history": history})
                continue
            if kind == "drug":
                result.drugs.append({"drug": name, "text": term, "start": s, "end": e, "negated": negated})
                continue
            if kind == "symptom_negated":
                negated, uncertain, cue = True, False, "不"
            f = Finding(symptom=name, text=term, start=s, end=e, negated=negated, uncertain=uncertain, cue=cue)
            f.frequency = self._frequency(text, s)
            f.severity = self._severity(text, s, e)
            f.body_site = self._body_site(text, s, e, name)
            f.duration = None if negated else self._nearest_duration(text, s, e, result.durations)
            result.findings.append(f)
        self._fever_from_temperature(result)
        result.epidemiology = self._epidemiology(text, masked, matches, spans)
        if structure:
            result.note = self.structure_note(text)
        return result

    def _nearest_duration(self, text: str, s: int, e: int, durations: list[Duration]) -> dict | None:
        lo, hi = self._clause_start(text, s), self._clause_end(text, e)
        best = None
        for d in durations:
            if d.start < lo or d.end > hi:
                continue
            if d.start >= e:
                dist = d.start - e
            else:
                gap = text[d.end:s]
                ago = d.text.endswith(("前", "以来", "之前", "以前", "来"))
                if not (ago or re.fullmatch(r"(开始|出现|起|就|一直|反复|总是|老是|都|感到|觉得|感觉)*", gap)):
                    continue
                dist = s - d.end + 0.5
            if dist < 0 or dist > 15:
                continue
            if best is None or dist < best[0]:
                best = (dist, d)
        return best[1].as_dict() if best else None

    def _fever_from_temperature(self, result: Extraction) -> None:
        """≥37.3℃ is fever (《诊断学》第9版: 腋温 > 37.3℃); it adds the finding when not named."""
        fever = self.kb.first_symptom(["发热", "发烧"])
        t = result.max_temperature
        if not fever or t is None or t < 37.3:
            return
        if any(f.symptom == fever and not f.negated for f in result.findings):
            return
        first = next(x for x in result.temperatures if x["value"] == t)
        result.findings.append(Finding(symptom=fever, text=first["text"], start=first["start"], end=first["end"],
                                       severity="severe" if t >= 39.0 else None))
        result.findings.sort(key=lambda f: f.start)


_extractors: dict[int, Extractor] = {}
_lock = threading.Lock()


def get_extractor(kb: KnowledgeBase | None = None) -> Extractor:
    kb = kb or get_kb()
    return kb.cached("extractor", lambda: Extractor(kb))


def extract(text: str, kb: KnowledgeBase | None = None) -> dict[str, Any]:
    return get_extractor(kb).extract(text).as_dict()


def phrase_status(extractor: Extractor, text: str, phrase: str, masked: str | None = None) -> str | None:
    """'present', 'absent' or 'possible' for a literal phrase in text (None if not there)."""
    masked = masked if masked is not None else extractor._masked(text)
    best = None
    for m in re.finditer(re.escape(phrase), text):
        negated, uncertain, _ = extractor._polarity(masked, m.start(), m.end(), [])
        status = "absent" if negated else ("possible" if uncertain else "present")
        if status == "present":
            return status
        best = best or status
    return best
