"""MedicationRequest resources from the demo drug catalogue."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from yiyun.demo.catalogue import DRUG_CATALOGUE_SYSTEM, DRUGS, ROUTES, Drug
from yiyun.demo.fhirutil import SNOMED, THO, coding, concept, instant, quantity, ref

# Children under 12 get a paediatric form or nothing (no quinolones, no adult-only NSAIDs
# or antivirals); doses follow the package inserts of the listed products.
PAEDIATRIC_FORM: dict[str, str | None] = {
    "A0001": "A0002",
    "A0003": "A0004",
    "A0005": "A0004",
    "A0007": None,
    "A0008": "A0026",
    "A0011": "A0024",
    "A0012": "A0013",
    "A0014": "A0023",
    "A0017": None,
    "A0020": None,
    "D1001": None,
    "D1003": None,
    "D1501": "A0025",
    "D1601": "A0027",
    "D1702": None,
}

PAEDIATRIC_DRUGS = {
    d.code: d
    for d in (
        Drug("A0023", "盐酸氨溴索口服溶液 100ml:0.3g", "mucolytic", "oral", 5, "mL", "一次5ml，一日2次", 2,
             timing_code="BID", units_per_dose=None, pack_unit=("瓶", "{bottle}"), pack_quantity=1, max_days=7),
        Drug("A0024", "磷酸奥司他韦颗粒 15mg", "neuraminidase", "oral", 30, "mg", "一次30mg（2袋），一日2次，连用5日", 2,
             timing_code="BID", units_per_dose=2, pack_unit=("袋", "{sachet}"), max_days=5),
        Drug("A0025", "氯雷他定糖浆 60ml:60mg", "antihistamine", "oral", 5, "mL", "一次5ml，一日1次", 1,
             units_per_dose=None, pack_unit=("瓶", "{bottle}"), pack_quantity=1, max_days=14),
        Drug("A0026", "注射用头孢曲松钠 0.5g", "cephalosporin", "iv", 0.5, "g", "一次0.5g，一日1次", 1,
             pack_unit=("瓶", "{vial}"), max_days=7),
        Drug("A0027", "右旋糖酐铁口服溶液 5ml:25mg", "iron", "oral", 5, "mL", "一次5ml，一日2次", 2,
             timing_code="BID", pack_unit=("支", "{ampule}"), advice="餐后服用"),
    )
}
ALL_DRUGS = {**DRUGS, **PAEDIATRIC_DRUGS}

_CATEGORY = {
    "outpatient": ("Outpatient", "门诊处方"),
    "inpatient": ("Inpatient", "住院医嘱"),
    "community": ("Community", "社区处方"),
}
_COURSE = {
    "continuous": ("Continuous long term therapy", "长期用药"),
    "acute": ("Short course (acute) therapy", "短期用药"),
}
_PERIOD_DAYS = {"h": 1 / 24, "d": 1, "wk": 7}


def for_age(code: str, age: float) -> str | None:
    if age >= 12 or code not in PAEDIATRIC_FORM:
        return code
    return PAEDIATRIC_FORM[code]


def _timing(drug: Drug) -> dict:
    if drug.as_needed:
        return {"repeat": {"frequency": 1, "period": 4, "periodMax": 6, "periodUnit": "h"}}
    repeat: dict = {"frequency": drug.frequency, "period": drug.period, "periodUnit": drug.period_unit}
    timing: dict = {"repeat": repeat}
    if drug.timing_code == "HS":
        repeat["when"] = ["HS"]  # v3-TimingEvent: before sleep
    elif drug.timing_code:
        timing["code"] = concept("http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", drug.timing_code)
    elif drug.period_unit == "wk":
        timing["code"] = concept("http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "WK")
    return timing


def dispense_quantity(drug: Drug, days: int) -> tuple[int, str, str]:
    unit_text, ucum = drug.pack_unit
    if drug.units_per_dose is None:
        return drug.pack_quantity or 1, unit_text, ucum
    per_day = drug.units_per_dose * drug.frequency / _PERIOD_DAYS[drug.period_unit] / drug.period
    return max(1, math.ceil(per_day * days - 1e-9)), unit_text, ucum


def medication_request(
    mid: str,
    code: str,
    *,
    patient_id: str,
    enc_id: str,
    authored: datetime,
    requester: tuple[str, str],
    reason_id: str,
    days: int,
    category: str,
    continuous: bool,
) -> dict:
    drug = ALL_DRUGS[code]
    days = min(days, drug.max_days)
    route_code, route_display, route_text = ROUTES[drug.route]
    amount, unit_text, unit_code = dispense_quantity(drug, days)
    dose_unit = {"ug": "μg", "{puff}": "吸", "{spray}": "揿", "{drop}": "滴", "{application}": "次"}.get(
        drug.dose_unit, drug.dose_unit)
    dosage: dict = {
        "sequence": 1,
        "text": (drug.dose_text if drug.dose_text.startswith(route_text) else f"{route_text}，{drug.dose_text}")
        + (f"，{drug.advice}" if drug.advice else ""),
        "timing": _timing(drug),
    }
    if drug.as_needed:
        dosage["asNeededBoolean"] = True
    dosage["route"] = {"coding": [coding(SNOMED, route_code, route_display)], "text": route_text}
    dosage["doseAndRate"] = [{
        "type": concept(f"{THO}/dose-rate-type", "ordered", "Ordered"),
        "doseQuantity": quantity(drug.dose, dose_unit, drug.dose_unit),
    }]
    if drug.as_needed:
        dosage["maxDosePerPeriod"] = {
            "numerator": quantity(round(drug.dose * drug.frequency, 3), dose_unit, drug.dose_unit),
            "denominator": quantity(1, "天", "d"),
        }
    cat_display, cat_text = _CATEGORY[category]
    course = "continuous" if continuous else "acute"
    course_display, course_text = _COURSE[course]
    start = authored.date()
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "category": [{"coding": [coding(f"{THO}/medicationrequest-category", category, cat_display)],
                      "text": cat_text}],
        "medicationCodeableConcept": {"coding": [coding(DRUG_CATALOGUE_SYSTEM, drug.code, drug.name)],
                                      "text": drug.name},
        "subject": ref("Patient", patient_id),
        "encounter": ref("Encounter", enc_id),
        "authoredOn": instant(authored),
        "requester": ref("Practitioner", *requester),
        "reasonReference": [ref("Condition", reason_id)],
        "courseOfTherapyType": {"coding": [coding(f"{THO}/medicationrequest-course-of-therapy", course,
                                                  course_display)], "text": course_text},
        "dosageInstruction": [dosage],
        "dispenseRequest": {
            # A prescription is valid on the day it is written, at most 3 days when the
            # prescriber says so (《处方管理办法》 第十八条).
            "validityPeriod": {"start": start.isoformat(), "end": (start + timedelta(days=3)).isoformat()},
            "numberOfRepeatsAllowed": 0,
            "quantity": quantity(amount, unit_text, unit_code),
            "expectedSupplyDuration": quantity(days, "天", "d"),
        },
    }
