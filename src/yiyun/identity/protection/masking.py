"""Masked display of identifiers for people who do not need the full value.

The forms follow common Chinese practice (GB/T 35273-2020 个人信息安全规范 §6.2 on
de-identified display; the receipt form of resident IDs keeps the address code and the
last four characters): ``110105********1234``, ``138****5678``, ``张*``, ``欧阳**``.
"""

from __future__ import annotations

import re
import unicodedata

from yiyun.core import resident_id as _rid

STAR = "*"

# Compound surnames (复姓) of the Hundred Family Surnames and current usage; the whole
# surname stays visible so that 欧阳娜娜 reads 欧阳** rather than 欧***.
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 夏侯 令狐 澹台 轩辕 端木 独孤 "
    "南宫 西门 钟离 闻人 申屠 太史 赫连 万俟 呼延 公羊 司空 东郭 百里 濮阳 淳于 单于 拓跋 "
    "第五 梁丘 左丘 谷梁 宗政 巫马 乐正 段干 司寇 亓官 羊舌 微生 公冶 漆雕 壤驷 鲜于 闾丘 "
    "仲孙 叔孙 太叔 颛孙 子车 公西 夹谷 宰父 东门 公良".split()
)

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def mask_resident_id(value: str) -> str:
    """``110105********1234`` for 18-character numbers; 15-character (1st generation)
    numbers keep the address code and last three; anything else keeps its last four."""
    v = re.sub(r"\s", "", unicodedata.normalize("NFKC", value or "")).upper()
    if len(v) == 18:
        return _rid.mask(v)
    if len(v) == 15:
        return v[:6] + STAR * 6 + v[12:]
    return _keep_tail(v, 4)


def mask_phone(value: str) -> str:
    """``138****5678`` for mainland mobiles (a +86 prefix is kept); landlines keep the area
    code and the last four digits (``0731-****5678``)."""
    v = unicodedata.normalize("NFKC", value or "").strip()
    digits = re.sub(r"\D", "", v)
    prefix = ""
    if len(digits) == 13 and digits.startswith("86") and digits[2] == "1":
        prefix, digits = "+86 ", digits[2:]
    if len(digits) == 11 and digits[0] == "1":
        return prefix + digits[:3] + STAR * 4 + digits[7:]
    m = re.match(r"^\(?(0\d{2,3})\)?[\s-]?(\d{7,8})$", v)
    if m:
        local = m.group(2)
        return f"{m.group(1)}-{STAR * (len(local) - 4)}{local[-4:]}"
    if len(digits) >= 8:
        return digits[:3] + STAR * (len(digits) - 7) + digits[-4:]
    return _keep_tail(digits, 2)


def mask_name(value: str) -> str:
    """Chinese names keep the surname (compound surnames whole): ``张*``, ``欧阳**``;
    names written in Latin letters keep each word's initial: ``J*** S****``."""
    v = (value or "").strip()
    if not v:
        return v
    if _HAN.match(v):
        if "·" in v or "•" in v:  # transliterated names (阿沛·阿旺晋美): keep the first character
            return v[0] + re.sub(r"[^·•]", STAR, v[1:])
        if len(v) == 1:
            return STAR
        keep = 2 if len(v) > 2 and v[:2] in COMPOUND_SURNAMES else 1
        return v[:keep] + STAR * (len(v) - keep)
    return " ".join(w[0] + STAR * (len(w) - 1) if w else w for w in v.split(" "))


def mask_email(value: str) -> str:
    """``z***@example.com``: the first character of the local part and the domain."""
    local, sep, domain = (value or "").partition("@")
    if not sep:
        return _keep_tail(value or "", 0)
    return (local[:1] + STAR * 3 if local else STAR) + "@" + domain


def _keep_tail(v: str, n: int) -> str:
    if len(v) <= n:
        return STAR * len(v)
    return STAR * (len(v) - n) + (v[-n:] if n else "")
