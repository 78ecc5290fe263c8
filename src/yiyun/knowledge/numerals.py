"""Chinese and Arabic numerals as patients write them (三, 十五, 两三, 十来, 半, 2.5)."""

from __future__ import annotations

DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5,
          "六": 6, "七": 7, "八": 8, "九": 9}
UNITS = {"十": 10, "百": 100, "千": 1000}
NUM_CHARS = "零〇一二两俩三四五六七八九十百千几半"


def _simple(text: str) -> float | None:
    """一 .. 九千九百九十九 (no ranges)."""
    if not text:
        return None
    total, current = 0, 0
    for ch in text:
        if ch in DIGITS:
            current = DIGITS[ch]
        elif ch in UNITS:
            total += (current or 1) * UNITS[ch]
            current = 0
        else:
            return None
    return float(total + current)


def parse_number(text: str) -> float | None:
    """A number, a vague number (几 ≈ 3, 十几 ≈ 15) or a range (两三 → 2.5)."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    if text == "半":
        return 0.5
    if text == "几":
        return 3.0
    if text.endswith("几"):  # 十几, 二十几
        base = _simple(text[:-1])
        return base + 5 if base is not None else None
    if text.startswith("几十"):
        return 30.0
    # adjacent digits form a range: 两三, 三四, 七八, 十一二 is rare and ignored
    if len(text) == 2 and all(c in DIGITS for c in text) and DIGITS[text[1]] == DIGITS[text[0]] + 1:
        return (DIGITS[text[0]] + DIGITS[text[1]]) / 2
    return _simple(text)
