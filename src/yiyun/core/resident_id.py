"""Chinese citizen identification numbers (公民身份号码), GB 11643-1999.

An 18-character number is, in order:

- a 6-digit address code (GB/T 2260 administrative division of the holder's registered
  residence when the number was issued),
- an 8-digit birth date ``YYYYMMDD``,
- a 3-digit sequence code; odd for men, even for women (GB 11643-1999 §4.3),
- a check character computed with ISO 7064:1983 MOD 11-2 over the first 17 digits;
  a value of 10 is written ``X`` (GB 11643-1999 §4.4 and annex).

The published worked examples of the standard are ``11010519491231002X`` and
``440524188001010014``.
"""

from __future__ import annotations

from datetime import date

__all__ = ["check_digit", "is_valid", "parse", "mask", "build", "normalize"]

# ISO 7064 MOD 11-2 weights W_i = 2^(i-1) mod 11, for positions 18..2 read left to right.
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_CHECK_CHARS = "10X98765432"
# The earliest birth year the standard's own example uses (1880); anything older is a typo.
_MIN_BIRTH_YEAR = 1800


def check_digit(first17: str) -> str:
    """The check character ('0'-'9' or 'X') for the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("the first 17 characters of a resident ID must be 17 digits")
    total = sum(int(ch) * w for ch, w in zip(first17, _WEIGHTS))
    return _CHECK_CHARS[total % 11]


def normalize(value: str) -> str:
    """Strip surrounding blanks and upper-case a trailing x, as people type them."""
    return value.strip().upper()


def _birth_date(id18: str) -> date | None:
    try:
        return date(int(id18[6:10]), int(id18[10:12]), int(id18[12:14]))
    except ValueError:
        return None


def is_valid(id18: str, *, today: date | None = None) -> bool:
    """True when `id18` is a well-formed 18-character resident ID.

    Checks length, characters, a non-zero address code, a real calendar birth date not
    after `today` (when given) and not before 1800, and the check character. A lower-case
    ``x`` is accepted; call :func:`normalize` to store the canonical form.
    """
    if not isinstance(id18, str) or len(id18) != 18 or not id18.isascii():
        return False
    id18 = id18.upper()
    body, last = id18[:17], id18[17]
    if not body.isdigit() or not (last.isdigit() or last == "X"):
        return False
    if body[0] == "0":
        return False
    born = _birth_date(id18)
    if born is None or born.year < _MIN_BIRTH_YEAR or (today is not None and born > today):
        return False
    return check_digit(body) == last


def parse(id18: str) -> tuple[str, date, str]:
    """(address code, birth date, FHIR administrative gender 'male'/'female').

    Raises ValueError when the number is not valid.
    """
    if not is_valid(id18):
        raise ValueError("not a valid resident ID number")
    born = _birth_date(id18)
    assert born is not None
    sex = "male" if int(id18[16]) % 2 == 1 else "female"
    return id18[:6], born, sex


def mask(id18: str) -> str:
    """Hide the birth date and the start of the sequence: ``110105********002X``.

    Keeps the address code and the last four characters, the form commonly printed on
    receipts and shown on screens.
    """
    if len(id18) != 18:
        raise ValueError("a resident ID has 18 characters")
    return id18[:6] + "*" * 8 + id18[14:]


def build(area_code: str, birth: date, sequence: int) -> str:
    """Compose a full number from its parts; `sequence` 0-999 carries the sex in its parity."""
    if len(area_code) != 6 or not area_code.isdigit():
        raise ValueError("the address code has 6 digits")
    if not 0 <= sequence <= 999:
        raise ValueError("the sequence code has 3 digits")
    first17 = f"{area_code}{birth:%Y%m%d}{sequence:03d}"
    return first17 + check_digit(first17)
