"""Name lookup over every entry: exact names and aliases, pinyin and pinyin initials.

Used by the encyclopedia search box (gaoxueya, gxy, 高血压 all find 原发性高血压) and by
Q&A entity linking, where homophone typos (高血鸭) are matched through pinyin.
"""

from __future__ import annotations

from dataclasses import dataclass

import ahocorasick
from pypinyin import Style, lazy_pinyin

from yiyun.knowledge.kb import KnowledgeBase, get_kb

KIND_ORDER = {"disease": 0, "symptom": 1, "drug": 2, "firstaid": 3, "check": 4, "department": 5}
KIND_ZH = {"disease": "疾病", "symptom": "症状", "drug": "药品", "firstaid": "急救", "check": "检查",
           "department": "科室"}


@dataclass(frozen=True)
class Term:
    kind: str
    name: str
    term: str
    pinyin: str  # syllables joined without spaces
    initials: str


def _syllables(text: str) -> list[str]:
    return [p.lower() for p in lazy_pinyin(text, errors=lambda x: list(x))]


def _initials(text: str) -> str:
    return "".join(p[0] for p in lazy_pinyin(text, style=Style.FIRST_LETTER, errors=lambda x: list(x)) if p).lower()


class SearchIndex:
    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.terms: list[Term] = []
        pairs: list[tuple[str, str, list[str]]] = []
        pairs += [("disease", d.name, d.aliases) for d in kb.diseases.values()]
        pairs += [("symptom", s.name, s.synonyms) for s in kb.symptoms.values()]
        pairs += [("drug", g.name, g.aliases) for g in kb.drugs.values()]
        pairs += [("firstaid", f.name, f.aliases) for f in kb.firstaid.values()]
        pairs += [("department", d.name, d.aliases) for d in kb.departments.values()]
        pairs += [("check", c, [str(a) for a in (kb.checks.get(c) or {}).get("aliases") or [] if a])
                  for c in kb.all_checks()]
        seen = set()
        for kind, name, aliases in pairs:
            for term in [name, *aliases]:
                if not term or (kind, term) in seen:
                    continue
                seen.add((kind, term))
                self.terms.append(Term(kind, name, term, "".join(_syllables(term)), _initials(term)))
        self.automaton = ahocorasick.Automaton()
        by_term: dict[str, list[Term]] = {}
        for t in self.terms:
            by_term.setdefault(t.term, []).append(t)
        for term, ts in by_term.items():
            ts.sort(key=lambda t: (t.term != t.name, KIND_ORDER.get(t.kind, 9)))
            self.automaton.add_word(term, (term, tuple(ts)))
        if by_term:
            self.automaton.make_automaton()
        self.empty = not by_term
        self.by_pinyin: dict[str, list[Term]] = {}
        for t in self.terms:
            if len(t.term) >= 2:
                self.by_pinyin.setdefault(" ".join(_syllables(t.term)), []).append(t)

    # --- encyclopedia search --------------------------------------------------------------
    def search(self, query: str, limit: int = 20, kind: str | None = None) -> list[dict]:
        q = (query or "").strip()
        if not q:
            return []
        ql = q.lower().replace(" ", "")
        ascii_query = ql.isascii()
        results: dict[tuple[str, str], tuple[float, str]] = {}

        def hit(t: Term, score: float, how: str) -> None:
            key = (t.kind, t.name)
            if key not in results or results[key][0] < score:
                results[key] = (score, how if t.term == t.name else f"{how}：{t.term}")

        for t in self.terms:
            if kind and t.kind != kind:
                continue
            if ascii_query:
                if t.term.isascii() and t.term.lower().replace(" ", "") == ql:
                    hit(t, 95, "名称")  # an ASCII name or alias itself (HbA1c, CT)
                elif t.pinyin == ql or t.initials == ql:
                    hit(t, 90, "拼音")
                elif t.pinyin.startswith(ql) and len(ql) >= 2:
                    hit(t, 70, "拼音")
                elif t.initials.startswith(ql) and len(ql) >= 2:
                    hit(t, 60, "拼音首字母")
                elif q.lower() in t.term.lower():
                    hit(t, 50, "名称")
                continue
            if t.term == q:
                hit(t, 100 if t.term == t.name else 95, "名称" if t.term == t.name else "别名")
            elif t.term.startswith(q):
                hit(t, 80, "名称" if t.term == t.name else "别名")
            elif q in t.term:
                hit(t, 65, "名称" if t.term == t.name else "别名")
            elif len(q) >= 2 and t.term in q:
                hit(t, 55, "名称" if t.term == t.name else "别名")
            elif len(q) >= 2 and t.pinyin == "".join(_syllables(q)):
                hit(t, 75, "同音")
        ranked = sorted(results.items(), key=lambda kv: (-kv[1][0], KIND_ORDER.get(kv[0][0], 9), len(kv[0][1]), kv[0][1]))
        return [
            {"kind": k, "kind_zh": KIND_ZH.get(k, k), "name": n, "score": s, "matched": how}
            for (k, n), (s, how) in ranked[:limit]
        ]

    # --- entity linking -------------------------------------------------------------------
    def link(self, text: str) -> list[dict]:
        """Entities mentioned in text, leftmost-longest, then homophones for the rest."""
        out: list[dict] = []
        if not text or self.empty:
            return out
        raw = []
        for end, (term, ts) in self.automaton.iter(text):
            raw.append((end - len(term) + 1, end + 1, term, ts))
        raw.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
        taken = [False] * len(text)
        for s, e, term, ts in raw:
            if any(taken[s:e]):
                continue
            if len(term) == 1:
                continue
            if _inside_ascii_word(text, s, e):
                continue  # AS in ASC-US, CT in TCT
            for i in range(s, e):
                taken[i] = True
            t = ts[0]
            out.append({"kind": t.kind, "name": t.name, "mention": term, "start": s, "end": e,
                        "match": "name" if term == t.name else "alias"})
        # homophone typos, only when nothing was linked exactly: windows of 2–6 characters
        if out:
            out.sort(key=lambda x: x["start"])
            return out
        syl = [_syllables(c)[0] if c.strip() else "" for c in text]
        for size in range(6, 1, -1):
            for s in range(0, len(text) - size + 1):
                e = s + size
                if any(taken[s:e]) or not all(syl[s:e]):
                    continue
                ts = self.by_pinyin.get(" ".join(syl[s:e]))
                if ts:
                    t = sorted(ts, key=lambda t: KIND_ORDER.get(t.kind, 9))[0]
                    for i in range(s, e):
                        taken[i] = True
                    out.append({"kind": t.kind, "name": t.name, "mention": text[s:e], "start": s, "end": e,
                                "match": "pinyin"})
        out.sort(key=lambda x: x["start"])
        return out


def _inside_ascii_word(text: str, start: int, end: int) -> bool:
    def word(c: str) -> bool:
        return c.isascii() and c.isalnum()

    if not (word(text[start]) or word(text[end - 1])):
        return False
    return (start > 0 and word(text[start - 1]) and word(text[start])) or \
        (end < len(text) and word(text[end]) and word(text[end - 1]))


def get_index(kb: KnowledgeBase | None = None) -> SearchIndex:
    kb = kb or get_kb()
    return kb.cached("search_index", lambda: SearchIndex(kb))


def search(query: str, limit: int = 20, kb: KnowledgeBase | None = None) -> list[dict]:
    return get_index(kb).search(query, limit)
