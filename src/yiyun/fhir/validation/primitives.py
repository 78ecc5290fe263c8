"""Checks for the FHIR R4 primitive types as they appear in JSON.

Each checker takes the raw JSON value and returns True when it is a valid value of
that type. Rules and regexes: https://hl7.org/fhir/R4/datatypes.html#primitive and
the JSON representation: https://hl7.org/fhir/R4/json.html#primitive

The published regexes were written for Java, where `\\s` is ASCII whitespace only;
re.ASCII gives Python the same meaning so that, e.g., a code may contain U+3000.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal

_A = re.ASCII

# https://hl7.org/fhir/R4/datatypes.html#string: "Strings SHALL NOT contain Unicode
# character points below 32, except for u0009, u000A and u000D"; max 1 MB.
_STRING_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]").search
_STRING_MAX = 1024 * 1024
_WHITESPACE = re.compile(r"\s", _A).search
_CODE = re.compile(r"[^\s]+(\s[^\s]+)*", _A).fullmatch
_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}", _A).fullmatch
_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+", _A).fullmatch
_UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", _A).fullmatch
_BASE64_CHARS = re.compile(r"[0-9a-zA-Z+/=]+", _A).fullmatch
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_TZ = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_DATE = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?", _A).fullmatch
_DATETIME = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_TZ})?)?)?", _A).fullmatch
_INSTANT = re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_TZ}", _A).fullmatch
_TIME_ONLY = re.compile(_TIME, _A).fullmatch

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _real_day(v: str) -> bool:
    """The regexes allow 31 days in every month; reject days the calendar lacks."""
    if len(v) < 10 or v[8] < "2" or (v[8] == "2" and v[9] < "9"):
        return True
    year, month, day = int(v[0:4]), int(v[5:7]), int(v[8:10])
    if day > _DAYS_IN_MONTH[month]:
        return False
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return True


def check_string(v: object) -> bool:
    if type(v) is not str or not v or len(v) > _STRING_MAX:
        return False
    return v.isprintable() or not _STRING_FORBIDDEN(v)


def check_markdown(v: object) -> bool:
    return type(v) is str and v != "" and (v.isprintable() or not _STRING_FORBIDDEN(v))


def check_xhtml(v: object) -> bool:
    # Narrative.div is an XHTML <div>: https://hl7.org/fhir/R4/narrative.html#xhtml
    return type(v) is str and v.lstrip().startswith("<div")


def check_boolean(v: object) -> bool:
    return v is True or v is False


def check_integer(v: object) -> bool:
    return type(v) is int and _INT_MIN <= v <= _INT_MAX


def check_positive_int(v: object) -> bool:
    return type(v) is int and 1 <= v <= _INT_MAX


def check_unsigned_int(v: object) -> bool:
    return type(v) is int and 0 <= v <= _INT_MAX


def check_decimal(v: object) -> bool:
    t = type(v)
    if t is int:
        return True
    if t is float:
        return math.isfinite(v)  # type: ignore[arg-type]
    return t is Decimal and v.is_finite()  # type: ignore[union-attr]


def check_uri(v: object) -> bool:
    return type(v) is str and v != "" and not _WHITESPACE(v)


def check_code(v: object) -> bool:
    return type(v) is str and _CODE(v) is not None


def check_id(v: object) -> bool:
    return type(v) is str and _ID(v) is not None


def check_oid(v: object) -> bool:
    return type(v) is str and _OID(v) is not None


def check_uuid(v: object) -> bool:
    return type(v) is str and _UUID(v) is not None


def check_base64(v: object) -> bool:
    # Same language as the spec regex (\s*([0-9a-zA-Z\+/=]){4}\s*)+ without its
    # exponential backtracking on long runs of whitespace.
    if type(v) is not str:
        return False
    s = "".join(v.split()) if _WHITESPACE(v) else v
    return s != "" and len(s) % 4 == 0 and _BASE64_CHARS(s) is not None


def check_date(v: object) -> bool:
    return type(v) is str and _DATE(v) is not None and _real_day(v)


def check_datetime(v: object) -> bool:
    return type(v) is str and _DATETIME(v) is not None and _real_day(v)


def check_instant(v: object) -> bool:
    return type(v) is str and _INSTANT(v) is not None and _real_day(v)


def check_time(v: object) -> bool:
    return type(v) is str and _TIME_ONLY(v) is not None


CHECKERS: dict[str, Callable[[object], bool]] = {
    "string": check_string,
    "markdown": check_markdown,
    "xhtml": check_xhtml,
    "boolean": check_boolean,
    "integer": check_integer,
    "positiveInt": check_positive_int,
    "unsignedInt": check_unsigned_int,
    "decimal": check_decimal,
    "uri": check_uri,
    "url": check_uri,
    "canonical": check_uri,
    "code": check_code,
    "id": check_id,
    "oid": check_oid,
    "uuid": check_uuid,
    "base64Binary": check_base64,
    "date": check_date,
    "dateTime": check_datetime,
    "instant": check_instant,
    "time": check_time,
}

# What each type expects, for diagnostics.
EXPECTED: dict[str, str] = {
    "string": "a non-empty string without control characters (max 1 MB)",
    "markdown": "a non-empty string without control characters",
    "xhtml": "an XHTML <div> element as a string",
    "boolean": "true or false",
    "integer": "a JSON integer in the 32-bit signed range",
    "positiveInt": "a JSON integer from 1 to 2147483647",
    "unsignedInt": "a JSON integer from 0 to 2147483647",
    "decimal": "a finite JSON number",
    "uri": "a non-empty string without whitespace",
    "url": "a non-empty string without whitespace",
    "canonical": "a non-empty string without whitespace",
    "code": "a non-empty string without leading, trailing or repeated whitespace",
    "id": "1-64 characters from A-Z a-z 0-9 - .",
    "oid": "urn:oid:<dotted numbers>",
    "uuid": "urn:uuid:<lower-case UUID>",
    "base64Binary": "base64-encoded data",
    "date": "YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date)",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)+zz:zz",
    "instant": "YYYY-MM-DDThh:mm:ss(.sss)+zz:zz",
    "time": "hh:mm:ss(.sss)",
}
