"""Observation resources: vital signs (FHIR vital-signs profile codes) and laboratory results."""

from __future__ import annotations

from datetime import datetime

from yiyun.demo.catalogue import LAB_TESTS
from yiyun.demo.fhirutil import LOINC, THO, coding, instant, quantity, ref
from yiyun.demo.physiology import interpret

_CATEGORY = {
    "vital-signs": ("Vital Signs", "生命体征"),
    "laboratory": ("Laboratory", "检验"),
}
_INTERPRETATION = {"H": ("High", "偏高"), "L": ("Low", "偏低"), "N": ("Normal", "正常")}

# key: (LOINC code, LOINC display, Chinese name, UCUM code, unit shown, decimals)
# Codes of the FHIR R4 vital signs profile (http://hl7.org/fhir/R4/observation-vitalsigns.html).
VITALS = {
    "hr": ("8867-4", "Heart rate", "心率", "/min", "次/分", 0),
    "temp": ("8310-5", "Body temperature", "体温", "Cel", "℃", 1),
    "rr": ("9279-1", "Respiratory rate", "呼吸频率", "/min", "次/分", 0),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "血氧饱和度", "%", "%", 0),
    "weight": ("29463-7", "Body weight", "体重", "kg", "kg", 1),
    "height": ("8302-2", "Body height", "身高", "cm", "cm", 1),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "体重指数", "kg/m2", "kg/m²", 1),
}
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional", "血压")
SYSTOLIC = ("8480-6", "Systolic blood pressure", "收缩压")
DIASTOLIC = ("8462-4", "Diastolic blood pressure", "舒张压")
# Hypertension is ≥140/90 mmHg (中国高血压防治指南 2018年修订版); hypotension < 90/60.
SYSTOLIC_RANGE = (90, 139)
DIASTOLIC_RANGE = (60, 89)


def _category(kind: str) -> list[dict]:
    display, text = _CATEGORY[kind]
    return [{"coding": [coding(f"{THO}/observation-category", kind, display)], "text": text}]


def _interpretation(flag: str) -> list[dict]:
    display, text = _INTERPRETATION[flag]
    return [{"coding": [coding(f"{THO}/v3-ObservationInterpretation", flag, display)], "text": text}]


def _range(low: float | None, high: float | None, ucum: str, unit: str) -> list[dict]:
    rr: dict = {}
    if low is not None:
        rr["low"] = quantity(low, unit, ucum)
    if high is not None:
        rr["high"] = quantity(high, unit, ucum)
    if low is not None and high is not None:
        rr["text"] = f"{low}～{high} {unit}"
    elif high is not None:
        rr["text"] = f"≤{high} {unit}"
    else:
        rr["text"] = f"≥{low} {unit}"
    return [rr]


def _base(oid: str, kind: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": _category(kind),
    }


def vital_sign(oid: str, key: str, value: float, *, patient_id: str, enc_id: str, when: datetime,
               performer: tuple[str, str], low: float | None = None, high: float | None = None) -> dict:
    code, display, text, ucum, unit, _ = VITALS[key]
    codings = [coding(LOINC, code, display)]
    if key == "spo2":
        # The vital-signs profile requires 2708-6 alongside the pulse-oximetry code.
        codings.append(coding(LOINC, "2708-6", "Oxygen saturation in Arterial blood"))
    obs = _base(oid, "vital-signs")
    obs.update({
        "code": {"coding": codings, "text": text},
        "subject": ref("Patient", patient_id),
        "encounter": ref("Encounter", enc_id),
        "effectiveDateTime": instant(when),
        "performer": [ref("Practitioner", *performer)],
        "valueQuantity": quantity(value, unit, ucum),
    })
    if low is not None or high is not None:
        obs["interpretation"] = _interpretation(interpret(value, low, high))
        obs["referenceRange"] = _range(low, high, ucum, unit)
    return obs


def blood_pressure(oid: str, systolic: int, diastolic: int, *, patient_id: str, enc_id: str, when: datetime,
                   performer: tuple[str, str]) -> dict:
    obs = _base(oid, "vital-signs")
    components = []
    for (code, display, text), value, (low, high) in (
        (SYSTOLIC, systolic, SYSTOLIC_RANGE),
        (DIASTOLIC, diastolic, DIASTOLIC_RANGE),
    ):
        components.append({
            "code": {"coding": [coding(LOINC, code, display)], "text": text},
            "valueQuantity": quantity(value, "mmHg", "mm[Hg]"),
            "interpretation": _interpretation(interpret(value, low, high)),
            "referenceRange": _range(low, high, "mm[Hg]", "mmHg"),
        })
    obs.update({
        "code": {"coding": [coding(LOINC, BP_PANEL[0], BP_PANEL[1])], "text": BP_PANEL[2]},
        "subject": ref("Patient", patient_id),
        "encounter": ref("Encounter", enc_id),
        "effectiveDateTime": instant(when),
        "performer": [ref("Practitioner", *performer)],
        "component": components,
    })
    return obs


def lab_result(oid: str, key: str, value: float, *, patient_id: str, enc_id: str, collected: datetime,
               issued: datetime, laboratory: tuple[str, str], low: float | None, high: float | None) -> dict:
    test = LAB_TESTS[key]
    obs = _base(oid, "laboratory")
    obs.update({
        "code": {"coding": [coding(LOINC, test.loinc, test.display)], "text": test.text},
        "subject": ref("Patient", patient_id),
        "encounter": ref("Encounter", enc_id),
        "effectiveDateTime": instant(collected),
        "issued": instant(issued),
        "performer": [ref("Organization", *laboratory)],
        "valueQuantity": quantity(value, test.unit_display, test.unit),
        "interpretation": _interpretation(interpret(value, low, high)),
        "referenceRange": _range(low, high, test.unit, test.unit_display),
    })
    return obs
