"""The knowledge base: data files loaded into an in-memory index.

The YAML formats are described in `data/SCHEMA.md`. Entries cross-reference each other by
their canonical Chinese name; `validate()` reports every dangling reference, missing
source, duplicate name and ICD-10 code absent from the national clinical edition 2.0.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yiyun.knowledge import icd10

PACKAGE_DATA = Path(__file__).parent / "data"
KINDS = ("diseases", "symptoms", "drugs", "interactions", "firstaid")
# Files owned by the engine itself; looked up in the data folder first, then in the package
# (so are the described checks, `checks/*.yaml`).
OWN_FILES = ("departments.yaml", "redflags.yaml", "lexicon.yaml")

CHECK_CATEGORIES = ("检验", "影像", "内镜", "功能检查", "穿刺", "其他")

PREVALENCE = ("very_common", "common", "uncommon", "rare")
SYMPTOM_WEIGHTS = ("very_common", "common", "occasional", "rare")
PREGNANCY = ("safe", "caution", "avoid", "contraindicated")
SEVERITIES = ("contraindicated", "major", "moderate", "minor")


def _list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


@dataclass
class Department:
    name: str
    parent: str | None = None
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)


@dataclass
class Symptom:
    name: str
    synonyms: list[str] = field(default_factory=list)
    body_site: str = ""
    departments: list[str] = field(default_factory=list)
    kind: str = "symptom"
    red_flag: bool = False
    description: str = ""
    sources: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)


@dataclass
class DiseaseSymptom:
    name: str
    weight: str = "common"


@dataclass
class Disease:
    name: str
    aliases: list[str] = field(default_factory=list)
    icd10: str = ""
    icd10_name: str = ""
    category: str = ""
    departments: list[str] = field(default_factory=list)
    prevalence: str = "uncommon"
    sex: str = "any"
    age: tuple[float, float] = (0, 120)
    acute: bool = False
    symptoms: list[DiseaseSymptom] = field(default_factory=list)
    red_flags: list[str] = field(default_factory=list)
    drugs: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    complications: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    def text(self, key: str) -> str:
        return _str(self.raw.get(key))


@dataclass
class Drug:
    name: str
    aliases: list[str] = field(default_factory=list)
    drug_class: str = ""
    ingredients: list[str] = field(default_factory=list)
    allergy_class: str | None = None
    indications: list[str] = field(default_factory=list)
    contraindications: list[str] = field(default_factory=list)
    pregnancy: str = "caution"
    lactation: str = "caution"
    min_age_years: float | None = None
    max_daily_dose: dict | None = None
    otc: bool = False
    controlled: bool = False
    sources: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)


@dataclass
class Interaction:
    drugs: list[str]
    classes: list[str]
    severity: str
    mechanism: str
    effect: str
    advice: str
    sources: list[str]
    raw: dict = field(default_factory=dict)


@dataclass
class FirstAid:
    name: str
    aliases: list[str] = field(default_factory=list)
    when: str = ""
    steps: list[str] = field(default_factory=list)
    do_not: list[str] = field(default_factory=list)
    call_120: bool = False
    sources: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)


@dataclass
class LoadProblem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


class KnowledgeBase:
    """All entries plus the lookup indexes the engines need."""

    def __init__(self) -> None:
        self.departments: dict[str, Department] = {}
        self.symptoms: dict[str, Symptom] = {}
        self.diseases: dict[str, Disease] = {}
        self.drugs: dict[str, Drug] = {}
        self.interactions: list[Interaction] = []
        self.firstaid: dict[str, FirstAid] = {}
        self.redflags: list[dict] = []
        self.lexicon: dict = {}
        self.checks: dict[str, dict] = {}
        self.problems: list[LoadProblem] = []
        self.duplicates: list[LoadProblem] = []
        self.sources_dir: Path | None = None
        # indexes
        self.symptom_alias: dict[str, str] = {}
        self.disease_alias: dict[str, str] = {}
        self.drug_alias: dict[str, str] = {}
        self.department_alias: dict[str, str] = {}
        self.firstaid_alias: dict[str, str] = {}
        self.check_alias: dict[str, str] = {}
        self.diseases_by_symptom: dict[str, list[tuple[str, str]]] = {}
        self.diseases_by_check: dict[str, list[str]] = {}
        self.diseases_by_drug: dict[str, list[str]] = {}
        self.drugs_by_class: dict[str, list[str]] = {}
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- lookups -------------------------------------------------------------------------
    def symptom(self, term: str) -> Symptom | None:
        name = self.symptom_alias.get(_str(term))
        return self.symptoms.get(name) if name else None

    def first_symptom(self, target: Any) -> str | None:
        """The first of one or more candidate symptom names that is defined."""
        for t in _list(target):
            if _str(t) in self.symptoms:
                return _str(t)
        return None

    def disease(self, term: str) -> Disease | None:
        name = self.disease_alias.get(_str(term))
        return self.diseases.get(name) if name else None

    def drug(self, term: str) -> Drug | None:
        name = self.drug_alias.get(_str(term))
        return self.drugs.get(name) if name else None

    def department(self, term: str) -> Department | None:
        name = self.department_alias.get(_str(term))
        return self.departments.get(name) if name else None

    def first_aid(self, term: str) -> FirstAid | None:
        name = self.firstaid_alias.get(_str(term))
        return self.firstaid.get(name) if name else None

    def check(self, term: str) -> dict | None:
        """The described check (checks/*.yaml) a name or alias refers to, if any."""
        name = self.check_alias.get(_str(term))
        return self.checks.get(name) if name else None

    def check_name(self, term: str) -> str:
        """Canonical name of a check: the described entry's name, else the plain text itself."""
        term = _str(term)
        return self.check_alias.get(term, term)

    def cached(self, key: str, build):
        """A derived structure (automaton, model matrix) built once per knowledge base."""
        value = self._cache.get(key)
        if value is None:
            with self._lock:
                value = self._cache.get(key)
                if value is None:
                    value = build()
                    self._cache[key] = value
        return value

    def counts(self) -> dict[str, int]:
        return {
            "departments": len(self.departments),
            "symptoms": len(self.symptoms),
            "diseases": len(self.diseases),
            "drugs": len(self.drugs),
            "interactions": len(self.interactions),
            "firstaid": len(self.firstaid),
            "redflags": len(self.redflags),
            "checks": len(self.all_checks()),
        }

    def all_checks(self) -> list[str]:
        """Described checks plus every other check a disease names in plain text."""
        names = set(self.checks) | set(self.diseases_by_check)
        return sorted(names)

    # --- building ------------------------------------------------------------------------
    def add_entry(self, kind: str, entry: dict, origin: str = "") -> None:
        """Add or replace one entry (used by loading and by approved edits)."""
        if kind == "diseases":
            d = _disease(entry)
            if d.name in self.diseases and origin:
                self.duplicates.append(LoadProblem(origin, f"重复的疾病名称：{d.name}"))
            self.diseases[d.name] = d
        elif kind == "symptoms":
            s = _symptom(entry)
            if s.name in self.symptoms and origin:
                self.duplicates.append(LoadProblem(origin, f"重复的症状名称：{s.name}"))
            self.symptoms[s.name] = s
        elif kind == "drugs":
            g = _drug(entry)
            if g.name in self.drugs and origin:
                self.duplicates.append(LoadProblem(origin, f"重复的药品名称：{g.name}"))
            self.drugs[g.name] = g
        elif kind == "interactions":
            self.interactions.append(_interaction(entry))
        elif kind == "firstaid":
            f = _firstaid(entry)
            if f.name in self.firstaid and origin:
                self.duplicates.append(LoadProblem(origin, f"重复的急救条目：{f.name}"))
            self.firstaid[f.name] = f
        elif kind == "departments":
            dep = Department(
                name=_str(entry.get("name")),
                parent=entry.get("parent"),
                aliases=[_str(a) for a in _list(entry.get("aliases"))],
                description=_str(entry.get("description")),
                keywords=[_str(k) for k in _list(entry.get("keywords"))],
                raw=entry,
            )
            if dep.name in self.departments and origin:
                self.duplicates.append(LoadProblem(origin, f"重复的科室名称：{dep.name}"))
            self.departments[dep.name] = dep
        else:
            raise ValueError(f"unknown kind {kind}")

    def build_indexes(self) -> None:
        self._cache.clear()
        self.symptom_alias = _alias_index(
            (s.name, s.synonyms) for s in self.symptoms.values()
        )
        # Colloquial words and common typos from the engine's own lexicon, only where the
        # target symptom exists (the data files stay the source of truth).
        for word, target in (self.lexicon.get("symptom_synonyms") or {}).items():
            name = self.first_symptom(target)
            if name and str(word) not in self.symptom_alias:
                self.symptom_alias[str(word)] = name
        self.disease_alias = _alias_index((d.name, d.aliases) for d in self.diseases.values())
        self.drug_alias = _alias_index((g.name, g.aliases) for g in self.drugs.values())
        self.department_alias = _alias_index(
            (d.name, d.aliases) for d in self.departments.values()
        )
        self.firstaid_alias = _alias_index((f.name, f.aliases) for f in self.firstaid.values())
        self.check_alias = _alias_index(
            (name, [_str(a) for a in _list(c.get("aliases")) if a]) for name, c in self.checks.items()
        )
        self.diseases_by_symptom = {}
        self.diseases_by_check = {}
        self.diseases_by_drug = {}
        for d in self.diseases.values():
            for s in d.symptoms:
                self.diseases_by_symptom.setdefault(s.name, []).append((d.name, s.weight))
            for c in d.checks:
                users = self.diseases_by_check.setdefault(self.check_name(c), [])
                if d.name not in users:
                    users.append(d.name)
            for g in d.drugs:
                self.diseases_by_drug.setdefault(g, []).append(d.name)
        order = {w: i for i, w in enumerate(SYMPTOM_WEIGHTS)}
        for lst in self.diseases_by_symptom.values():
            lst.sort(key=lambda t: (order.get(t[1], 9), t[0]))
        self.drugs_by_class = {}
        for g in self.drugs.values():
            if g.drug_class:
                self.drugs_by_class.setdefault(g.drug_class, []).append(g.name)


def _alias_index(pairs) -> dict[str, str]:
    index: dict[str, str] = {}
    deferred: list[tuple[str, str]] = []
    for name, aliases in pairs:
        if name:
            index[name] = name
        for a in aliases:
            if a:
                deferred.append((a, name))
    for alias, name in deferred:
        index.setdefault(alias, name)  # a canonical name always wins over someone's alias
    return index


def _age(value: Any) -> tuple[float, float]:
    try:
        lo, hi = value
        return (float(lo), float(hi))
    except (TypeError, ValueError):
        return (0.0, 120.0)


def _disease(e: dict) -> Disease:
    symptoms = []
    for s in _list(e.get("symptoms")):
        if isinstance(s, dict):
            symptoms.append(DiseaseSymptom(_str(s.get("name")), _str(s.get("weight")) or "common"))
        elif s:
            symptoms.append(DiseaseSymptom(_str(s), "common"))
    return Disease(
        name=_str(e.get("name")),
        aliases=[_str(a) for a in _list(e.get("aliases")) if a],
        icd10=_str(e.get("icd10")),
        icd10_name=_str(e.get("icd10_name")),
        category=_str(e.get("category")),
        departments=[_str(d) for d in _list(e.get("departments"))],
        prevalence=_str(e.get("prevalence")) or "uncommon",
        sex=_str(e.get("sex")) or "any",
        age=_age(e.get("age")),
        acute=bool(e.get("acute")),
        symptoms=symptoms,
        red_flags=[_str(r) for r in _list(e.get("red_flags"))],
        drugs=[_str(g) for g in _list(e.get("drugs"))],
        checks=[_str(c) for c in _list(e.get("checks"))],
        complications=[_str(c) for c in _list(e.get("complications"))],
        sources=[_str(s) for s in _list(e.get("sources")) if s],
        raw=e,
    )


def _symptom(e: dict) -> Symptom:
    return Symptom(
        name=_str(e.get("name")),
        synonyms=[_str(a) for a in _list(e.get("synonyms")) if a],
        body_site=_str(e.get("body_site")),
        departments=[_str(d) for d in _list(e.get("departments"))],
        kind=_str(e.get("kind")) or "symptom",
        red_flag=bool(e.get("red_flag")),
        description=_str(e.get("description")),
        sources=[_str(s) for s in _list(e.get("sources")) if s],
        raw=e,
    )


def _drug(e: dict) -> Drug:
    age = e.get("min_age_years")
    try:
        min_age = float(age) if age is not None else None
    except (TypeError, ValueError):
        min_age = None
    return Drug(
        name=_str(e.get("name")),
        aliases=[_str(a) for a in _list(e.get("aliases")) if a],
        drug_class=_str(e.get("class")),
        ingredients=[_str(i) for i in _list(e.get("ingredients"))] or [_str(e.get("name"))],
        allergy_class=_str(e.get("allergy_class")) or None,
        indications=[_str(i) for i in _list(e.get("indications"))],
        contraindications=[_str(c) for c in _list(e.get("contraindications"))],
        pregnancy=_str(e.get("pregnancy")) or "caution",
        lactation=_str(e.get("lactation")) or "caution",
        min_age_years=min_age,
        max_daily_dose=e.get("max_daily_dose") if isinstance(e.get("max_daily_dose"), dict) else None,
        otc=bool(e.get("otc")),
        controlled=bool(e.get("controlled")),
        sources=[_str(s) for s in _list(e.get("sources")) if s],
        raw=e,
    )


def _interaction(e: dict) -> Interaction:
    return Interaction(
        drugs=[_str(d) for d in _list(e.get("drugs"))],
        classes=[_str(c) for c in _list(e.get("classes"))],
        severity=_str(e.get("severity")) or "moderate",
        mechanism=_str(e.get("mechanism")),
        effect=_str(e.get("effect")),
        advice=_str(e.get("advice")),
        sources=[_str(s) for s in _list(e.get("sources")) if s],
        raw=e,
    )


def _firstaid(e: dict) -> FirstAid:
    return FirstAid(
        name=_str(e.get("name")),
        aliases=[_str(a) for a in _list(e.get("aliases")) if a],
        when=_str(e.get("when")),
        steps=[_str(s) for s in _list(e.get("steps"))],
        do_not=[_str(s) for s in _list(e.get("do_not"))],
        call_120=bool(e.get("call_120")),
        sources=[_str(s) for s in _list(e.get("sources")) if s],
        raw=e,
    )


def _read_yaml_list(path: Path, problems: list[LoadProblem]) -> list[dict]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        problems.append(LoadProblem(str(path), f"无法读取 YAML：{exc}"))
        return []
    if data is None:
        return []
    if not isinstance(data, list):
        problems.append(LoadProblem(str(path), "文件应为条目列表"))
        return []
    out = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            out.append(item)
        else:
            problems.append(LoadProblem(str(path), f"第{i + 1}个条目不是映射"))
    return out


def _own_file(name: str, data_dir: Path) -> Path | None:
    for folder in (data_dir, PACKAGE_DATA):
        p = folder / name
        if p.exists():
            return p
    return None


def load(data_dir: Path | str | None = None) -> KnowledgeBase:
    """Load every data file under `data_dir` (default: the packaged data)."""
    data_dir = Path(data_dir) if data_dir else PACKAGE_DATA
    kb = KnowledgeBase()
    kb.sources_dir = data_dir
    dep_file = _own_file("departments.yaml", data_dir)
    if dep_file:
        for e in _read_yaml_list(dep_file, kb.problems):
            kb.add_entry("departments", e, str(dep_file))
    for kind in KINDS:
        folder = data_dir / kind
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.y*ml")):
            for e in _read_yaml_list(path, kb.problems):
                kb.add_entry(kind, e, f"{path.relative_to(data_dir)}")
    rf = _own_file("redflags.yaml", data_dir)
    if rf:
        kb.redflags = _read_yaml_list(rf, kb.problems)
    lex = _own_file("lexicon.yaml", data_dir)
    if lex:
        try:
            kb.lexicon = yaml.safe_load(lex.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            kb.problems.append(LoadProblem(str(lex), f"无法读取 YAML：{exc}"))
    check_files = sorted((data_dir / "checks").glob("*.y*ml")) if (data_dir / "checks").is_dir() else []
    if not check_files and (legacy := _own_file("checks.yaml", data_dir)):
        check_files = [legacy]
    if not check_files and data_dir != PACKAGE_DATA and (PACKAGE_DATA / "checks").is_dir():
        check_files = sorted((PACKAGE_DATA / "checks").glob("*.y*ml"))
    for path in check_files:
        for e in _read_yaml_list(path, kb.problems):
            name = _str(e.get("name"))
            if not name:
                kb.problems.append(LoadProblem(str(path), "存在没有名称的检查条目"))
                continue
            if name in kb.checks:
                kb.duplicates.append(LoadProblem(str(path), f"重复的检查名称：{name}"))
            kb.checks[name] = e
    kb.build_indexes()
    return kb


_default: dict[str, KnowledgeBase] = {}
_default_lock = threading.Lock()


def data_dir_from_env() -> Path:
    env = os.environ.get("YIYUN_KNOWLEDGE_DATA_DIR")
    return Path(env) if env else PACKAGE_DATA


def get_kb(data_dir: Path | str | None = None) -> KnowledgeBase:
    """The cached knowledge base for a data folder (built at first use)."""
    key = str(Path(data_dir) if data_dir else data_dir_from_env())
    kb = _default.get(key)
    if kb is None:
        with _default_lock:
            kb = _default.get(key)
            if kb is None:
                kb = load(key)
                _default[key] = kb
    return kb


def reset_cache() -> None:
    with _default_lock:
        _default.clear()


# --- validation ------------------------------------------------------------------------


def warnings(kb: KnowledgeBase) -> list[str]:
    """Not fatal, but worth a look: an alias shared by two diseases is ambiguous in Q&A."""
    out, seen = [], {}
    for d in kb.diseases.values():
        for a in d.aliases:
            if a in seen and seen[a] != d.name:
                out.append(f"疾病别名「{a}」同时属于「{seen[a]}」和「{d.name}」")
            seen.setdefault(a, d.name)
    return out


def validate(kb: KnowledgeBase, *, check_icd10: bool = True) -> list[str]:
    """Every problem that makes the data unfit to ship, as readable Chinese messages."""
    errors: list[str] = [str(p) for p in kb.problems] + [str(p) for p in kb.duplicates]
    deps = set(kb.departments)

    def need_sources(kind: str, name: str, sources: list[str]) -> None:
        if not sources:
            errors.append(f"{kind}「{name}」缺少来源 sources")

    def need_dep(kind: str, name: str, dep: str) -> None:
        if dep not in deps:
            errors.append(f"{kind}「{name}」引用了未定义的科室「{dep}」")

    # names must be unique across aliases of the same kind too
    for label, index, entries in (
        ("疾病", kb.disease_alias, kb.diseases),
        ("症状", kb.symptom_alias, kb.symptoms),
        ("药品", kb.drug_alias, kb.drugs),
    ):
        seen: dict[str, str] = {}
        for entry in entries.values():
            aliases = getattr(entry, "aliases", None) or getattr(entry, "synonyms", [])
            for a in aliases:
                if a in entries and a != entry.name:
                    errors.append(f"{label}「{entry.name}」的别名「{a}」与另一条目名称重复")
                seen.setdefault(a, entry.name)

    for d in kb.departments.values():
        if d.parent and d.parent not in deps:
            errors.append(f"科室「{d.name}」的上级科室「{d.parent}」未定义")

    codes = icd10.codes() if check_icd10 and kb.diseases else None
    for d in kb.diseases.values():
        if not d.name:
            errors.append("存在没有名称的疾病条目")
            continue
        need_sources("疾病", d.name, d.sources)
        if not d.departments:
            errors.append(f"疾病「{d.name}」没有科室")
        for dep in d.departments:
            need_dep("疾病", d.name, dep)
        for s in d.symptoms:
            if s.name not in kb.symptoms:
                errors.append(f"疾病「{d.name}」引用了未定义的症状「{s.name}」")
            if s.weight not in SYMPTOM_WEIGHTS:
                errors.append(f"疾病「{d.name}」症状「{s.name}」的权重「{s.weight}」无效")
        for r in d.red_flags:
            if r not in kb.symptoms:
                errors.append(f"疾病「{d.name}」的危险信号「{r}」不是已定义的症状")
        for g in d.drugs:
            if g not in kb.drugs:
                errors.append(f"疾病「{d.name}」引用了未定义的药品「{g}」")
        if d.prevalence not in PREVALENCE:
            errors.append(f"疾病「{d.name}」的 prevalence「{d.prevalence}」无效")
        if d.sex not in ("any", "male", "female"):
            errors.append(f"疾病「{d.name}」的 sex「{d.sex}」无效")
        if not d.icd10:
            errors.append(f"疾病「{d.name}」缺少 ICD-10 编码")
        elif codes is not None and d.icd10 not in codes:
            errors.append(f"疾病「{d.name}」的 ICD-10 编码「{d.icd10}」不在国家临床版2.0中")
        elif d.category and not d.icd10.startswith(d.category):
            errors.append(f"疾病「{d.name}」的类目「{d.category}」与编码「{d.icd10}」不符")
    for s in kb.symptoms.values():
        need_sources("症状", s.name, s.sources)
        for dep in s.departments:
            need_dep("症状", s.name, dep)
    for g in kb.drugs.values():
        need_sources("药品", g.name, g.sources)
        if g.pregnancy not in PREGNANCY:
            errors.append(f"药品「{g.name}」的 pregnancy「{g.pregnancy}」无效")
        if g.lactation not in PREGNANCY:
            errors.append(f"药品「{g.name}」的 lactation「{g.lactation}」无效")
    classes = set(kb.drugs_by_class) | {g.allergy_class for g in kb.drugs.values() if g.allergy_class}
    for i, it in enumerate(kb.interactions):
        label = "、".join(it.drugs or it.classes) or f"#{i + 1}"
        need_sources("相互作用", label, it.sources)
        if it.severity not in SEVERITIES:
            errors.append(f"相互作用「{label}」的 severity「{it.severity}」无效")
        if len(it.drugs) + len(it.classes) != 2:
            errors.append(f"相互作用「{label}」应恰好涉及两种药品或两类药品")
        for g in it.drugs:
            if g not in kb.drugs:
                errors.append(f"相互作用「{label}」引用了未定义的药品「{g}」")
        for c in it.classes:
            if c not in classes:
                errors.append(f"相互作用「{label}」引用了未定义的药物类别「{c}」")
    for f in kb.firstaid.values():
        need_sources("急救", f.name, f.sources)
    # Checks: a disease may name any check in plain text (no entry needed); a described
    # check must say what it is and what it is for, and cite its sources.
    check_terms: dict[str, str] = {}
    for name, c in kb.checks.items():
        need_sources("检查", name, [s for s in _list(c.get("sources")) if s])
        for key in ("what", "purpose"):
            if not _str(c.get(key)):
                errors.append(f"检查「{name}」缺少 {key}")
        category = _str(c.get("category"))
        if category and category not in CHECK_CATEGORIES:
            errors.append(f"检查「{name}」的 category「{category}」无效")
        for term in [name, *(_str(a) for a in _list(c.get("aliases")) if a)]:
            other = check_terms.get(term)
            if other and other != name:
                errors.append(f"检查「{name}」的名称或别名「{term}」与检查「{other}」重复")
            check_terms.setdefault(term, name)
    for rule in kb.redflags:
        rid = rule.get("id", "?")
        if not rule.get("sources"):
            errors.append(f"危险信号规则「{rid}」缺少来源 sources")
        dep = rule.get("department")
        if dep and dep not in deps:
            errors.append(f"危险信号规则「{rid}」引用了未定义的科室「{dep}」")
    return errors
