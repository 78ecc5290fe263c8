"""Small builders for FHIR R4 JSON fragments and the code systems the demo data uses."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from yiyun.demo.catalogue import BASE

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
THO = "http://terminology.hl7.org/CodeSystem"
# OID of the national resident identity card number (居民身份证号码) in Chinese health IT.
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"

SID = f"{BASE}/sid"
CS = f"{BASE}/CodeSystem"
SD = f"{BASE}/StructureDefinition"

EXT_COUNTY_CODE = f"{SD}/county-code"
EXT_TOWNSHIP_CODE = f"{SD}/township-code"
EXT_HOSPITAL_GRADE = f"{SD}/hospital-grade"
EXT_DEPARTMENT = f"{SD}/department"

CHINA_TZ = timezone(timedelta(hours=8))


def ref(resource_type: str, rid: str, display: str | None = None) -> dict:
    out: dict = {"reference": f"{resource_type}/{rid}"}
    if display:
        out["display"] = display
    return out


def coding(system: str, code: str, display: str | None = None) -> dict:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str | None = None, text: str | None = None) -> dict:
    out: dict = {"coding": [coding(system, code, display)]}
    if text:
        out["text"] = text
    return out


def quantity(value: float | int, unit: str, code: str | None = None) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": code or unit}


def instant(moment: datetime) -> str:
    """An instant in China Standard Time, seconds precision: 2026-03-04T09:15:00+08:00."""
    return moment.replace(tzinfo=CHINA_TZ).isoformat(timespec="seconds")


def day(d: date) -> str:
    return d.isoformat()


def zh_cn() -> dict:
    return {
        "language": concept("urn:ietf:bcp:47", "zh-CN", "Chinese (China)", "中文（中国）"),
        "preferred": True,
    }


def address(
    *,
    use: str,
    province: str,
    city: str,
    county_code: str,
    county: str,
    township_code: str,
    township: str,
    line: str,
) -> dict:
    return {
        "extension": [
            {"url": EXT_COUNTY_CODE, "valueCode": county_code},
            {"url": EXT_TOWNSHIP_CODE, "valueCode": township_code},
        ],
        "use": use,
        "type": "both",
        "text": f"{province}{city}{county}{township}{line}",
        "line": [township, line],
        "city": city,
        "district": county,
        "state": province,
        "country": "CN",
    }
