"""Value normalisation shared by index extraction and query parsing.

- strings: https://hl7.org/fhir/R4/search.html#string (case- and accent-insensitive)
- dates: https://hl7.org/fhir/R4/search.html#date — every date is an interval [low, high)
  in epoch seconds whose width is the precision written (`2020` = the whole year).
- numbers: https://hl7.org/fhir/R4/search.html#number — precision of the search value
  gives the implicit range.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from decimal import Decimal, InvalidOperation

from yiyun.fhir.search.tables import ID_LEN, STRING_LEN, URI_LEN

# Open ends of Periods; far outside any real date, finite so both engines store them.
DATE_MIN = -1.0e13
DATE_MAX = 1.0e13
# Upper bound appended to a prefix for a btree range scan: sorts after every real character.
PREFIX_END = "\U0010ffff"


def normalize(s: str) -> str:
    """Case- and accent-insensitive form: NFKD, combining marks dropped, casefolded.

    Chinese characters have no decomposition and pass through unchanged."""
    if s.isascii():
        return s.lower()[:STRING_LEN]
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    return s.casefold()[:STRING_LEN]


_DATE_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _days_in_month(y: int, m: int) -> int:
    return calendar.monthrange(y, m)[1]


def date_range(s: str) -> tuple[float, float] | None:
    """FHIR date / dateTime / instant (or a search date value) -> [low, high) epoch seconds.

    A time without a zone is taken as UTC (R4 leaves it to the server). None if malformed."""
    if type(s) is not str:
        return None
    m = _DATE_RE.match(s)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    y = int(y)
    if y < 1:
        return None
    if mo is None:
        # the end of the year from its last day: year 9999 has no following year in `datetime`
        return float(calendar.timegm((y, 1, 1, 0, 0, 0))), float(calendar.timegm((y, 12, 31, 0, 0, 0)) + 86400)
    mo = int(mo)
    if not 1 <= mo <= 12:
        return None
    if d is None:
        low = calendar.timegm((y, mo, 1, 0, 0, 0))
        return float(low), float(low + 86400 * _days_in_month(y, mo))
    d = int(d)
    if not 1 <= d <= _days_in_month(y, mo):
        return None
    if hh is None:
        low = calendar.timegm((y, mo, d, 0, 0, 0))
        return float(low), float(low + 86400)
    hh, mi = int(hh), int(mi)
    if hh > 24 or mi > 59:
        return None
    sec = int(ss) if ss is not None else 0
    if sec > 60:
        return None
    base = calendar.timegm((y, mo, d, hh, mi, sec))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        th, tm = int(tz[1:3]), int(tz[4:6])
        if th > 14 or tm > 59:
            return None
        base -= sign * (th * 3600 + tm * 60)
    if ss is None:
        return float(base), float(base + 60)
    if frac:
        f = float("0." + frac[:9])
        width = 10.0 ** -min(len(frac), 9)
        return base + f, base + f + width
    return float(base), float(base + 1)


_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def number_range(s: str) -> tuple[float, float, float] | None:
    """A search number -> (value, low, high) where [low, high) is the implicit range of its
    precision (https://hl7.org/fhir/R4/search.html#number: `100` = [99.5, 100.5))."""
    if not _NUMBER_RE.match(s):
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return None
    exp = d.as_tuple().exponent
    if not isinstance(exp, int) or abs(exp) > 300 or d.adjusted() > 300:
        return None
    half = Decimal(5).scaleb(exp - 1)
    return float(d), float(d - half), float(d + half)


def to_float(v) -> float | None:
    t = type(v)
    if t is float or t is int:
        return float(v)
    if t is str:
        try:
            return float(Decimal(v))
        except (InvalidOperation, ValueError):
            return None
    return None


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """Reference.reference -> (type, id, url). Relative `Type/id[/_history/v]` gives url None;
    an absolute URL or canonical keeps its url (version suffix dropped) and the Type/id of its tail."""
    if not ref or ref[0] == "#":
        return None, None, None
    if "://" in ref or ref.startswith("urn:"):
        url = ref.split("|", 1)[0]
        parts = url.split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2 and parts[-2][:1].isupper() and "://" in url:
            return parts[-2][:64], parts[-1][:ID_LEN], url[:URI_LEN]
        return None, None, url[:URI_LEN]
    parts = ref.split("/")
    if len(parts) >= 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 2 and parts[0][:1].isupper():
        return parts[0][:64], parts[1][:ID_LEN], None
    if len(parts) > 2 and parts[-2][:1].isupper():
        return parts[-2][:64], parts[-1][:ID_LEN], None
    return None, None, None


def reference_type(v) -> str | None:
    """The type a Reference points to, for `where(resolve() is X)` (treated as a type check)."""
    if type(v) is not dict:
        return None
    ref = v.get("reference")
    if type(ref) is str:
        t, _, _ = parse_reference(ref)
        if t:
            return t
    t = v.get("type")
    return t if type(t) is str else None


def split_escaped(s: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash (https://hl7.org/fhir/R4/search.html#escaping).
    Escapes are kept; `unescape` removes them once the value is fully split."""
    if "\\" not in s:
        return s.split(sep)
    out, cur, i = [], [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if c == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return re.sub(r"\\([\\,$|])", r"\1", s)
