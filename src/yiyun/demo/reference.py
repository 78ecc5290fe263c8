"""Loaders for the reference lists shipped in ``yiyun/core/data`` (see its README.md).

Small, cached, read-only lookups: administrative divisions (NBS 2023 statistical codes),
GCJ-02 centre coordinates of divisions, and the ICD-10 national clinical edition 2.0.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

__all__ = [
    "Division",
    "ICD10_CLINICAL_SYSTEM",
    "province",
    "city",
    "counties",
    "townships",
    "county_centre_gcj02",
    "icd10_clinical",
]

# The code system of the 国家临床版 2.0 ICD-10 list, as the platform names it.
ICD10_CLINICAL_SYSTEM = "http://www.nhc.gov.cn/icd10/clinical-v2"

# The coordinate list is a 2016-17 snapshot; divisions renamed since then keep their
# centre under the old code. 宁乡县 (430124) became 宁乡市 (430182) in 2017
# (国务院 approval of 2017-04-10).
_RENAMED_SINCE_2017 = {"430182": "430124"}


@dataclass(frozen=True)
class Division:
    code: str
    name: str


def _read_csv(*parts: str) -> list[dict[str, str]]:
    resource = files("yiyun.core").joinpath("data", *parts)
    text = resource.read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@lru_cache(maxsize=1)
def _provinces() -> dict[str, str]:
    return {r["code"]: r["name"] for r in _read_csv("geo", "admin-divisions-2023", "provinces.csv")}


@lru_cache(maxsize=1)
def _cities() -> dict[str, str]:
    return {r["code"]: r["name"] for r in _read_csv("geo", "admin-divisions-2023", "cities.csv")}


@lru_cache(maxsize=1)
def _areas() -> list[dict[str, str]]:
    return _read_csv("geo", "admin-divisions-2023", "areas-43.csv")


@lru_cache(maxsize=1)
def _streets() -> list[dict[str, str]]:
    return _read_csv("geo", "admin-divisions-2023", "streets-43.csv")


def province(code: str) -> Division:
    return Division(code, _provinces()[code])


def city(code: str) -> Division:
    return Division(code, _cities()[code])


def counties(city_code: str) -> list[Division]:
    """County-level divisions of a prefecture (only 湖南省 is shipped), in code order."""
    rows = [r for r in _areas() if r["cityCode"] == city_code]
    if not rows:
        raise KeyError(f"no county data shipped for city {city_code}")
    return [Division(r["code"], r["name"]) for r in sorted(rows, key=lambda r: r["code"])]


def townships(county_code: str) -> list[Division]:
    """Streets (街道), towns (镇) and townships (乡) of a county, in code order.

    NBS codes 400 and above in the last three digits are development zones, farms and
    similar statistical units rather than places people give as an address; they are
    left out.
    """
    rows = [r for r in _streets() if r["areaCode"] == county_code and int(r["code"][6:]) < 400]
    return [Division(r["code"], r["name"]) for r in sorted(rows, key=lambda r: r["code"])]


@lru_cache(maxsize=1)
def _centres() -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for r in _read_csv("geo", "adcode-coords", "adcodes.csv"):
        if r["longitude"] and r["latitude"]:
            out[r["adcode"][:6]] = (float(r["longitude"]), float(r["latitude"]))
    return out


def county_centre_gcj02(code: str) -> tuple[float, float]:
    """(longitude, latitude) of a division's centre in GCJ-02, as published by AMap."""
    centres = _centres()
    key = _RENAMED_SINCE_2017.get(code, code)
    if key not in centres:
        raise KeyError(f"no centre coordinates for division {code}")
    return centres[key]


@lru_cache(maxsize=1)
def icd10_clinical() -> dict[str, str]:
    """code → name of the national clinical edition 2.0, stray blanks stripped."""
    rows = _read_csv("codes", "icd10-clinical-v2", "icd10_clinical_v2.csv")
    return {r["code"].strip(): r["name"].strip() for r in rows}
