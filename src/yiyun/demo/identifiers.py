"""Synthetic organisation and staff identifiers with real check characters."""

from __future__ import annotations

import random

__all__ = ["organization_code", "uscc", "uscc_check", "practising_certificate", "mobile_number"]

# GB 11714-1997 organisation code: 8 body characters, weights, MOD 11 check.
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
# GB 32100-2015 unified social credit code: 31 characters (no I, O, Z, S, V), MOD 31 check.
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

# Mobile number prefixes allocated to China Mobile, China Unicom, China Telecom and
# China Broadnet (工业和信息化部 numbering plan), all of the form 1[3-9]x.
MOBILE_PREFIXES = (
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139",
    "147", "150", "151", "152", "153", "155", "156", "157", "158", "159",
    "166", "172", "173", "175", "176", "177", "178", "180", "181", "182",
    "183", "184", "185", "186", "187", "188", "189", "191", "192", "193",
    "195", "196", "197", "198", "199",
)


def _value(ch: str) -> int:
    return int(ch) if ch.isdigit() else ord(ch) - ord("A") + 10


def organization_code(body8: str) -> str:
    """Nine-character organisation code (GB 11714) for an 8-character body."""
    total = sum(_value(c) * w for c, w in zip(body8, _ORG_WEIGHTS))
    check = 11 - total % 11
    return body8 + ("X" if check == 10 else "0" if check == 11 else str(check))


def uscc_check(first17: str) -> str:
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS))
    return _USCC_CHARS[(31 - total % 31) % 31]


def uscc(rng: random.Random, registrar: str, county_code: str) -> str:
    """An 18-character unified social credit code (GB 32100-2015).

    `registrar` is the two-character authority + category prefix: "12" for public
    institutions registered with 机构编制 (public hospitals, CDC), "91" for enterprises.
    """
    body = "".join(rng.choice("0123456789") for _ in range(8))
    first17 = registrar + county_code + organization_code(body)
    return first17 + uscc_check(first17)


def practising_certificate(rng: random.Random, profession: int, category: int, county_code: str, year: int) -> str:
    """A 15-digit practising-certificate number: profession, category, county, year, sequence.

    Modelled on the 医师执业证书编码 layout (kind of licence, category, registering
    authority's area code, year, serial); the demo uses one layout for physicians (1),
    nurses (2) and pharmacists (3).
    """
    return f"{profession}{category}{county_code}{year:04d}{rng.randrange(1000):03d}"


def mobile_number(rng: random.Random) -> str:
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(100_000_000):08d}"
