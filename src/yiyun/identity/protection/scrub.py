"""Scrubbing identifiers out of free text (notes, narratives, descriptions, comments).

Two passes, both replacing what they find with a bracketed category (``[NAME]``,
``[ID]``, ``[PHONE]``, ``[EMAIL]``, ``[ADDRESS]``, ``[URL]``, ``[IP]``):

1. *Known values*: the names, identifiers, telecoms and address parts the data set itself
   holds (collected by `KnownValues`), matched literally (Aho-Corasick; Latin terms only
   at word boundaries, ASCII case ignored).
2. *Patterns* for what no structured field mentions: resident ID numbers (GB 11643-1999,
   18 and 15 characters), US SSNs, mainland mobiles and landlines, US phone numbers,
   e-mail, URLs, IPv4 addresses, Chinese street and community addresses, English street
   addresses, and names in the contexts where clinical Chinese and English text put them
   (``患者张三，``, ``李医生``, ``姓名：王五``, ``Mr. Smith``).

Dates written in the text are shifted with the patient's offset; stated ages of 90 and over
become "90岁以上" / "90+" (HIPAA Safe Harbor, 45 CFR §164.514(b)(2)(i)(C)).

Limits (also in docs/security.md): a Chinese name that appears without a known value and
outside those contexts is not recognised — pattern matching of bare two- or three-
character names would destroy clinical words (高血压 starts with the surname 高). Free text
from outside the data set's own people should be reviewed before release
(GB/T 37964-2019 个人信息去标识化指南 §6: assess re-identification risk after the
technical step).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, timedelta

import ahocorasick

NAME, ID, PHONE, EMAIL, ADDRESS, URL, IP = "[NAME]", "[ID]", "[PHONE]", "[EMAIL]", "[ADDRESS]", "[URL]", "[IP]"

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_HAN = "\u3400-\u9fff\uf900-\ufaff"

# The most frequent single-character surnames (第七次全国人口普查 surname ranking, top ~130)
# and the compound ones; used only inside name contexts, never alone.
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜"
    "崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施"
    "文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗"
    "谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费"
    "卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)
_COMPOUND = (
    "欧阳|司马|上官|诸葛|东方|皇甫|尉迟|公孙|慕容|长孙|宇文|司徒|夏侯|令狐|澹台|轩辕|端木|独孤|南宫|西门|钟离|闻人|"
    "申屠|太史|赫连|万俟|呼延|司空|东郭|百里|濮阳|淳于|单于|拓跋|第五|梁丘|左丘|宗政|鲜于|闾丘"
)
_CN_NAME = rf"(?:(?:{_COMPOUND})[{_HAN}]{{1,2}}|[{SURNAMES}][{_HAN}]{{1,2}})"
_CN_NUM = "0-9０-９一二三四五六七八九十百千零〇两"

_PATTERNS: list[tuple[re.Pattern, Callable[[re.Match], str] | str]] = [
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), EMAIL),
    (re.compile(r"\b(?:https?|ftp)://[^\s<>\"'，。；、）)]+", re.I), URL),
    (re.compile(r"\bwww\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+[^\s<>\"'，。；、）)]*", re.I), URL),
    # GB 11643-1999: 17 digits and a check digit or X; first-generation numbers have 15 digits.
    (re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
                r"(?![0-9A-Za-z])"), ID),
    (re.compile(r"(?<![0-9A-Za-z])[1-9]\d{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}(?![0-9A-Za-z])"), ID),
    (re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), ID),  # US SSN
    (re.compile(r"(?<!\d)(?:(?:\+|00)?86[\s-]?)?1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)"), PHONE),
    (re.compile(r"(?<![\d-])(?:\(0\d{2,3}\)|0\d{2,3}-)\s?\d{7,8}(?:-\d{1,5})?(?!\d)"), PHONE),
    (re.compile(r"(?<![\d-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\d)"), PHONE),
    (re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"), IP),
    # Chinese addresses: a road and a house number, or a residential compound and a building.
    (re.compile(
        rf"(?:[{_HAN}]{{2,6}}?(?:省|自治区|市|自治州|区|县|旗|镇|乡|街道))*[{_HAN}]{{1,8}}"
        rf"(?:路|街|大道|大街|巷|弄|胡同)[{_CN_NUM}甲乙丙之-]+号(?:院)?"
        rf"(?:[{_HAN}]{{0,8}}?[{_CN_NUM}A-Za-z-]+(?:栋|幢|座|号楼|单元|层|楼|室|户|号))*"
    ), ADDRESS),
    (re.compile(
        rf"(?:[{_HAN}]{{2,6}}?(?:省|自治区|市|自治州|区|县|旗|镇|乡|街道))*[{_HAN}]{{2,10}}"
        rf"(?:小区|社区|花园|公寓|大厦|新村|家园|苑|村)[{_CN_NUM}A-Za-z-]*(?:栋|幢|座|号楼|单元|组)"
        rf"(?:[{_CN_NUM}A-Za-z-]+(?:栋|幢|座|号楼|单元|层|楼|室|户|组))*"
    ), ADDRESS),
    (re.compile(
        r"\b\d{1,6}\s+(?:[A-Z][A-Za-z'-]+\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Boulevard|Blvd|"
        r"Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Trl|Village|"
        r"Rapid|Rapids|Crossing|Loop|Run|Path|Ridge|Heights|Hills|Park|Gardens|Manor|Station|Junction|Mall|"
        r"Walk|Row|Port|Harbor|Center|Estate|Estates|Landing|Light|Lights|Mill|Mills|Orchard|Pass|Plaza|Point|"
        r"Shore|Shores|Spring|Springs|Summit|Valley|View|Vista|Well|Wells)\b\.?"
        r"(?:,?\s+(?:Unit|Apt|Apartment|Suite|Ste|#)\s*[\w-]+)?"
    ), ADDRESS),
    # Names in context: a label and a colon, a title before, an honorific after.
    (re.compile(rf"(姓名|患者姓名|病人姓名|联系人|家属|监护人|签名|医师签名|报告医师|审核医师|记录者|患者|病人)(\s*[:：]\s*)([{_HAN}·]{{2,6}})"),
     lambda m: f"{m.group(1)}{m.group(2)}{NAME}"),
    (re.compile(rf"(患者|病人|病员|患儿|产妇|家属)({_CN_NAME})(?=[，,。；;\s（(、]|[男女]|$)"), lambda m: f"{m.group(1)}{NAME}"),
    (re.compile(rf"(?:(?:{_COMPOUND})|[{SURNAMES}])[{_HAN}]{{0,2}}?(先生|女士|小姐|医生|大夫|医师|护士长|护士|主任|教授|老师|阿姨|叔叔|同志)"),
     lambda m: f"{NAME}{m.group(1)}"),
    (re.compile(r"\b(Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sr|Sra)\.?\s+[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+)?"),
     lambda m: f"{m.group(1)}. {NAME}"),
    (re.compile(r"\b(?i:name|patient name|pt name)\s*[:：]\s*[A-Z][A-Za-z'-]+(?:[ ,]+[A-Z][A-Za-z'-]+){0,3}"),
     lambda m: m.group(0).split(":")[0].split("：")[0] + ": " + NAME),
]

_AGE_PATTERNS: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"(?<!\d)(9\d|1[0-4]\d)\s*(?:周岁|岁)"), lambda m: "90岁以上"),
    (re.compile(r"(?<!\d)(9\d|1[0-4]\d)([\s-]*)(year|yr)s?(?:[\s-]*old)?", re.I), lambda m: f"90+{m.group(2)}{m.group(3)}s old"),
    (re.compile(r"\b(aged?)\s+(9\d|1[0-4]\d)(?!\d)", re.I), lambda m: f"{m.group(1)} 90+"),
]

_DATE_ISO = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_DATE_CN = re.compile(r"(?<!\d)(\d{4})年(\d{1,2})月(\d{1,2})日")
_DATE_SLASH = re.compile(r"(?<![\d/])(\d{4})/(\d{1,2})/(\d{1,2})(?![\d/])")
_DATE_US = re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})/(\d{4})(?![\d/])")


def _shift(y: str, m: str, d: str, days: int) -> date | None:
    try:
        return date(int(y), int(m), int(d)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None


def shift_text_dates(text: str, days: int) -> str:
    """Shift every full date written in `text` (ISO, 2019年5月1日, 2019/5/1, 5/1/2019)."""

    def iso(m):
        d = _shift(m[1], m[2], m[3], days)
        return d.isoformat() if d else "[DATE]"

    def cn(m):
        d = _shift(m[1], m[2], m[3], days)
        return f"{d.year}年{d.month}月{d.day}日" if d else "[DATE]"

    def slash(m):
        d = _shift(m[1], m[2], m[3], days)
        return f"{d.year}/{d.month}/{d.day}" if d else "[DATE]"

    def us(m):
        d = _shift(m[3], m[1], m[2], days)
        return f"{d.month}/{d.day}/{d.year}" if d else "[DATE]"

    text = _DATE_ISO.sub(iso, text)
    text = _DATE_CN.sub(cn, text)
    text = _DATE_SLASH.sub(slash, text)
    return _DATE_US.sub(us, text)


class KnownValues:
    """Literal values that identify someone in this data set, each with its category."""

    def __init__(self) -> None:
        self._terms: dict[str, str] = {}
        self._automaton: ahocorasick.Automaton | None = None

    def add(self, value: str | None, category: str) -> None:
        if not isinstance(value, str):
            return
        v = value.strip()
        if not _worth_matching(v):
            return
        key = v.translate(_ASCII_LOWER)
        self._terms.setdefault(key, category)
        self._automaton = None

    def add_all(self, values: Iterable[str | None], category: str) -> None:
        for v in values:
            self.add(v, category)

    def __len__(self) -> int:
        return len(self._terms)

    def __iter__(self):
        return iter(self._terms)

    def _built(self) -> ahocorasick.Automaton | None:
        if self._automaton is None and self._terms:
            a = ahocorasick.Automaton()
            for term, cat in self._terms.items():
                a.add_word(term, (len(term), cat))
            a.make_automaton()
            self._automaton = a
        return self._automaton

    def replace(self, text: str) -> str:
        a = self._built()
        if a is None:
            return text
        low = text.translate(_ASCII_LOWER)
        spans = []
        for end, (length, cat) in a.iter(low):
            start = end - length + 1
            if _bounded(low, start, end):
                spans.append((start, end + 1, cat))
        if not spans:
            return text
        # Longest match first, then left to right; overlapping shorter matches are dropped.
        spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        taken: list[tuple[int, int, str]] = []
        for s in spans:
            if all(s[1] <= t[0] or s[0] >= t[1] for t in taken):
                taken.append(s)
        taken.sort()
        out, pos = [], 0
        for start, end, cat in taken:
            out.append(text[pos:start])
            out.append(cat)
            pos = end
        out.append(text[pos:])
        return "".join(out)


def _worth_matching(v: str) -> bool:
    if len(v) < 2:
        return False
    if re.fullmatch(rf"[{_HAN}]", v[:1]) and len(v) < 2:
        return False
    if v.isdigit() and len(v) < 4:
        return False
    return bool(re.search(rf"[0-9A-Za-z{_HAN}]", v))


def _is_word(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _bounded(low: str, start: int, end: int) -> bool:
    """Latin/digit terms must not continue a word on either side ("Ali" is not in "Alice")."""
    if _is_word(low[start]) and start > 0 and _is_word(low[start - 1]):
        return False
    if _is_word(low[end]) and end + 1 < len(low) and _is_word(low[end + 1]):
        return False
    return True


class TextScrubber:
    def __init__(self, known: KnownValues | None = None) -> None:
        self.known = known or KnownValues()

    def scrub(self, text: str, *, shift_days: int | None = None) -> str:
        if not text:
            return text
        out = self.known.replace(text)
        if shift_days is not None:
            out = shift_text_dates(out, shift_days)
        for pattern, repl in _PATTERNS:
            out = pattern.sub(repl, out)
        for pattern, repl in _AGE_PATTERNS:
            out = pattern.sub(repl, out)
        return out
