"""Writing one patient's records: encounters, conditions, measurements, prescriptions.

:class:`PatientRecord` turns decisions made by the care plan (``clinical.py``) into FHIR
resources of the patient's home tenant, keeping their identifiers, times and values
consistent with each other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from yiyun.demo import physiology as phys
from yiyun.demo.catalogue import DEPARTMENTS, DIAGNOSES, HISTORY_DAYS, LAB_PANELS, REFERENCE_DATE, SEASONS, Diagnosis
from yiyun.demo.facilities import Site, Staff
from yiyun.demo.fhirutil import CS, SID, THO, coding, concept, instant, quantity, ref
from yiyun.demo.observations import blood_pressure, lab_result, vital_sign
from yiyun.demo.people import Person
from yiyun.demo.prescribing import for_age, medication_request
from yiyun.demo.reference import ICD10_CLINICAL_SYSTEM

WINDOW_START = REFERENCE_DATE - timedelta(days=HISTORY_DAYS)
LAST_DAY = REFERENCE_DATE - timedelta(days=1)

_CLASS = {
    "AMB": ("ambulatory", "门诊"),
    "IMP": ("inpatient encounter", "住院"),
    "VR": ("virtual", "互联网诊疗"),
    "EMER": ("emergency", "急诊"),
}
_ENCOUNTER_TYPE = {
    "first-visit": "初诊",
    "follow-up": "复诊",
    "online-follow-up": "互联网复诊",
    "admission": "住院",
    "emergency": "急诊",
    "checkup": "健康体检",
    "antenatal": "产前检查",
}


class Ids:
    """Sequential, zero-padded ids per prefix: enc-000001, obs-000001 …"""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def next(self, prefix: str, width: int = 6) -> str:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        return f"{prefix}-{n:0{width}d}"


@dataclass
class Visit:
    """An encounter being written; its id is allocated before its conditions refer to it."""

    start: datetime
    cls: str
    dept: str
    staff: Staff
    reasons: list[str] = field(default_factory=list)  # condition ids
    type_code: str = "first-visit"
    end: datetime | None = None
    id: str = ""


class PatientRecord:
    """Emits one patient's resources into their home tenant."""

    def __init__(self, person: Person, rng: random.Random, ids: Ids, emit):
        self.p = person
        self.site: Site = person.site
        self.rng = rng
        self.ids = ids
        self.emit = emit
        self.slug = person.site.slug
        self.age_now = person.age_on(REFERENCE_DATE)
        self.first_day = max(WINDOW_START, person.birth + timedelta(days=28))
        self.prescriptions: dict[str, list[dict]] = {}
        self.weighed_years: set[int] = set()
        self.height_recorded = False
        self.base: phys.Baseline

    # ---- helpers: dates, staff -------------------------------------------------------
    def _random_day(self, lo: date, hi: date) -> date:
        return lo + timedelta(days=self.rng.randint(0, max(0, (hi - lo).days)))

    def _seasonal_day(self, season: str | None, lo: date, hi: date) -> date:
        if not season:
            return self._random_day(lo, hi)
        weights = SEASONS[season]
        top = max(weights)
        for _ in range(50):
            d = self._random_day(lo, hi)
            if self.rng.random() < weights[d.month - 1] / top:
                return d
        return d

    def _clinic_time(self, d: date, cls: str) -> datetime:
        rng = self.rng
        if cls == "VR":
            minutes = rng.randint(8 * 60, 21 * 60 + 30)
        elif cls == "EMER":
            minutes = rng.randint(0, 24 * 60 - 10)
        elif rng.random() < 0.65:
            minutes = rng.randint(8 * 60, 11 * 60 + 30)
        else:
            minutes = rng.randint(14 * 60, 17 * 60)
        minutes -= minutes % 5
        return datetime.combine(d, time(minutes // 60, minutes % 60))

    def _doctor(self, dept: str) -> Staff:
        doctors = self.site.doctors.get(dept) or [s for group in self.site.doctors.values() for s in group]
        if dept == "general-practice" and self.p.family_doctor and self.rng.random() < 0.8:
            return self.p.family_doctor
        return self.rng.choice(doctors)

    def _nurse(self, dept: str, doctor: Staff) -> Staff:
        nurses = self.site.nurses.get(dept)
        if not nurses:
            return doctor
        return self.rng.choice(nurses)

    def _dept(self, diag: Diagnosis) -> str:
        return self.site.department_for(diag.departments)

    # ---- resources --------------------------------------------------------------------
    def _condition(self, key: str, visit: Visit, *, onset: date, problem_list: bool,
                   abated: date | None = None) -> str:
        diag = DIAGNOSES[key]
        cid = self.ids.next("cond")
        category = ("problem-list-item", "Problem List Item", "问题列表") if problem_list else \
            ("encounter-diagnosis", "Encounter Diagnosis", "就诊诊断")
        status = "resolved" if abated else "active"
        resource: dict = {
            "resourceType": "Condition",
            "id": cid,
            "clinicalStatus": concept(f"{THO}/condition-clinical", status, status.capitalize()),
            "verificationStatus": concept(f"{THO}/condition-ver-status", "confirmed", "Confirmed"),
            "category": [{"coding": [coding(f"{THO}/condition-category", category[0], category[1])],
                          "text": category[2]}],
            "code": {"coding": [coding(ICD10_CLINICAL_SYSTEM, diag.code, diag.name)], "text": diag.name},
            "subject": ref("Patient", self.p.id, self.p.name),
            "encounter": ref("Encounter", visit.id),
            "onsetDateTime": onset.isoformat(),
        }
        if abated:
            resource["abatementDateTime"] = abated.isoformat()
        resource["recordedDate"] = instant(visit.start + timedelta(minutes=5))
        resource["recorder"] = ref("Practitioner", visit.staff.id, visit.staff.name)
        resource["asserter"] = ref("Practitioner", visit.staff.id, visit.staff.name)
        self.emit(self.slug, resource)
        return cid

    def _new_visit(self, d: date, cls: str, dept: str, type_code: str, staff: Staff | None = None) -> Visit:
        start = self._clinic_time(d, cls)
        visit = Visit(start, cls, dept, staff or self._doctor(dept), type_code=type_code)
        visit.id = self.ids.next("enc")
        return visit

    def _emit_encounter(self, v: Visit, *, stay_days: int | None = None, admitted_from: str = "outp") -> None:
        rng = self.rng
        dept = DEPARTMENTS[v.dept]
        in_progress = False
        if v.cls == "IMP":
            assert stay_days is not None
            discharge = v.start.date() + timedelta(days=stay_days)
            if discharge >= REFERENCE_DATE:
                in_progress = True
            else:
                v.end = datetime.combine(discharge, time(rng.randint(9, 11), rng.choice((0, 15, 30, 45))))
        else:
            minutes = {"AMB": rng.randint(8, 30), "VR": rng.randint(6, 20), "EMER": rng.randint(60, 240)}[v.cls]
            v.end = v.start + timedelta(minutes=minutes)
        if v.end and v.end >= datetime.combine(REFERENCE_DATE, time()):
            v.end, in_progress = None, True
        cls_display, cls_text = _CLASS[v.cls]
        prefix = "ZY" if v.cls == "IMP" else "MZ"
        enc: dict = {
            "resourceType": "Encounter",
            "id": v.id,
            "identifier": [{"system": f"{SID}/visit/{self.slug}", "value": f"{prefix}{v.id[4:]}"}],
            "status": "in-progress" if in_progress else "finished",
            "class": coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", v.cls, cls_display),
            "type": [concept(f"{CS}/encounter-type", v.type_code, _ENCOUNTER_TYPE[v.type_code],
                             _ENCOUNTER_TYPE[v.type_code])],
            "serviceType": {"coding": [coding(f"{CS}/clinical-subject", dept.subject_code, dept.name)],
                            "text": dept.name},
        }
        if v.cls == "EMER":
            enc["priority"] = concept("http://terminology.hl7.org/CodeSystem/v3-ActPriority", "EM", "emergency", "急")
        enc["subject"] = ref("Patient", self.p.id, self.p.name)
        enc["participant"] = [{
            "type": [concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "ATND", "attender",
                             "接诊医师")],
            "individual": ref("Practitioner", v.staff.id, v.staff.name),
        }]
        period = {"start": instant(v.start)}
        if v.end:
            period["end"] = instant(v.end)
        enc["period"] = period
        if v.cls == "IMP" and v.end:
            enc["length"] = quantity((v.end.date() - v.start.date()).days, "天", "d")
        enc["reasonReference"] = [ref("Condition", cid) for cid in v.reasons]
        if v.cls == "IMP":
            enc["diagnosis"] = [{"condition": ref("Condition", v.reasons[0]),
                                 "use": concept(f"{THO}/diagnosis-role", "AD", "Admission diagnosis", "入院诊断"),
                                 "rank": 1}]
            if v.end:
                enc["diagnosis"].append({"condition": ref("Condition", v.reasons[0]),
                                         "use": concept(f"{THO}/diagnosis-role", "DD", "Discharge diagnosis",
                                                        "出院诊断"),
                                         "rank": 1})
            hosp: dict = {"admitSource": concept(f"{THO}/admit-source", admitted_from,
                                                 {"emd": "From accident/emergency department",
                                                  "outp": "From outpatient department"}[admitted_from])}
            if v.end:
                hosp["dischargeDisposition"] = concept(f"{THO}/discharge-disposition", "home", "Home", "离院回家")
            enc["hospitalization"] = hosp
        if v.cls != "VR":
            enc["location"] = [{"location": ref("Location", self.site.location_id, self.site.facility.name),
                                "status": "active" if in_progress else "completed"}]
        enc["serviceProvider"] = ref("Organization", self.site.org_id, self.site.facility.name)
        self.emit(self.slug, enc)

    # ---- measurements -----------------------------------------------------------------
    def _vitals(self, v: Visit, *, temp: bool, infection: str | None = None, respiratory: bool = False,
                weigh: bool = False, measure_height: bool = False, severity: float = 1.0, weight_gain: float = 0.0,
                bp: bool | None = None) -> None:
        rng, b, p = self.rng, self.base, self.p
        when = v.start + timedelta(minutes=rng.randint(1, 4))
        nurse = self._nurse(v.dept, v.staff)
        by = (nurse.id, nurse.name)
        age = p.age_years_on(v.start.date())
        t = None
        if temp:
            if infection == "bacterial":
                t = min(40.6, 37.4 + abs(rng.gauss(1.0, 0.6)) * severity)
            elif infection == "viral":
                t = min(40.3, 37.0 + abs(rng.gauss(0.9, 0.6)) * severity)
            else:
                t = phys._clamp(rng.gauss(36.5, 0.25), 35.9, 37.2)
            t = round(t, 1)
            self.emit(self.slug, vital_sign(self.ids.next("obs"), "temp", t, patient_id=p.id, enc_id=v.id,
                                            when=when, performer=by, low=36.0, high=37.3))
        if bp is None:
            # Blood pressure at first contact for everyone aged 35 and over (首诊测血压,
            # 国家基本公共卫生服务规范 第三版), and often for younger adults.
            bp = age >= 35 or (age >= 18 and rng.random() < 0.3)
        bp = bp and age >= 18
        if t or bp or age < 14:
            # The pulse comes with the thermometer round or from the blood pressure monitor.
            self._heart_rate(v, when, by, age, fever=max(0.0, (t or 36.5) - 37.0))
        if bp:
            sbp = int(round(phys._clamp(b.sbp + rng.gauss(0, 7), 85, 210)))
            dbp = int(round(phys._clamp(b.dbp + rng.gauss(0, 5), 45, min(125, sbp - 20))))
            self.emit(self.slug, blood_pressure(self.ids.next("obs"), sbp, dbp, patient_id=p.id, enc_id=v.id,
                                                when=when, performer=by))
        if respiratory:
            rr = phys.respiratory_rate_typical(age) + rng.gauss(0, 2) + (3 if infection else 0)
            low_rr, high_rr = (12, 20) if age >= 12 else (None, None)
            self.emit(self.slug, vital_sign(self.ids.next("obs"), "rr", int(round(rr)), patient_id=p.id,
                                            enc_id=v.id, when=when, performer=by, low=low_rr, high=high_rr))
            spo2 = b.spo2 + rng.gauss(0, 1)
            if infection == "bacterial":
                spo2 -= 3 * severity
            self.emit(self.slug, vital_sign(self.ids.next("obs"), "spo2", int(round(phys._clamp(spo2, 85, 100))),
                                            patient_id=p.id, enc_id=v.id, when=when, performer=by, low=95, high=100))
        if weigh or age < 18:  # children are weighed at every visit: doses depend on it
            self._anthropometry(v, when, by, age, measure_height, weight_gain)

    def _heart_rate(self, v: Visit, when: datetime, by: tuple[str, str], age: float, fever: float) -> None:
        rng = self.rng
        if age < 14:
            typical, low, high = phys.child_heart_rate(age)
            hr = typical + rng.gauss(0, 7) + 10 * fever
        else:
            typical, low, high = self.base.hr, 60, 100
            hr = typical + rng.gauss(0, 5) + 10 * fever
        self.emit(self.slug, vital_sign(self.ids.next("obs"), "hr", int(round(phys._clamp(hr, 45, 200))),
                                        patient_id=self.p.id, enc_id=v.id, when=when, performer=by, low=low,
                                        high=high))

    def _anthropometry(self, v: Visit, when: datetime, by: tuple[str, str], age: float,
                       measure_height: bool, weight_gain: float = 0.0) -> None:
        rng, b, p = self.rng, self.base, self.p
        if age < 18:
            height = phys.child_height(p.sex, age, b.height_z)
            weight = phys.child_weight(p.sex, age, b.weight_z) * (1 + rng.gauss(0, 0.015))
        else:
            height = b.height
            weight = b.bmi * (height / 100) ** 2 * (1 + rng.gauss(0, 0.012)) + weight_gain
        weight = round(weight, 1)
        height = round(height, 1)
        self.emit(self.slug, vital_sign(self.ids.next("obs"), "weight", weight, patient_id=p.id, enc_id=v.id,
                                        when=when, performer=by))
        first_this_year = v.start.year not in self.weighed_years
        self.weighed_years.add(v.start.year)
        if measure_height or (age >= 18 and not self.height_recorded):
            self.emit(self.slug, vital_sign(self.ids.next("obs"), "height", height, patient_id=p.id,
                                            enc_id=v.id, when=when, performer=by))
            self.height_recorded = True
        if age >= 18 and (measure_height or first_this_year):
            bmi = round(weight / (height / 100) ** 2, 1)
            # 中国成人超重和肥胖的体重指数切点 (WS/T 428-2013): 18.5 ≤ BMI < 24.0 is normal.
            self.emit(self.slug, vital_sign(self.ids.next("obs"), "bmi", bmi, patient_id=p.id, enc_id=v.id,
                                            when=when, performer=by, low=18.5, high=23.9))

    def _labs(self, v: Visit, panels: list[str], *, infection: str | None = None, recovering: bool = False,
              collected: datetime | None = None) -> None:
        rng, p = self.rng, self.p
        collected = collected or v.start + timedelta(minutes=rng.randint(10, 40))
        issued = collected + timedelta(minutes=rng.randint(45, 180))
        age = p.age_years_on(collected.date())
        lab = (self.site.org_id, self.site.facility.name)
        keys: list[str] = []
        for panel in panels:
            for key in LAB_PANELS[panel]:
                if key not in keys:
                    keys.append(key)
        creatinine = None
        for key in keys:
            if key == "egfr":
                if creatinine is None or age < 18:
                    continue
                value = phys.egfr_value(creatinine, p.sex, age)
            else:
                value = phys.lab_value(rng, key, self.base, sex=p.sex, age=age, infection=infection,
                                       recovering=recovering)
            if key == "creatinine":
                creatinine = value
            low, high = phys.lab_range(key, p.sex, age)
            self.emit(self.slug, lab_result(self.ids.next("obs"), key, value, patient_id=p.id, enc_id=v.id,
                                            collected=collected, issued=issued, laboratory=lab, low=low, high=high))

    def _prescribe(self, v: Visit, drug_codes: tuple[str, ...], reason_id: str, *, days: int, continuous: bool) -> None:
        age = self.p.age_years_on(v.start.date())
        category = "inpatient" if v.cls == "IMP" else "community" if self.site.facility.kind == "clinic" \
            else "outpatient"
        for code in drug_codes:
            actual = for_age(code, age)
            if actual is None:
                continue
            if actual in ("A0002",) and age < 0.5:
                continue  # ibuprofen is not licensed under 6 months
            mr = medication_request(
                self.ids.next("mr"), actual, patient_id=self.p.id, enc_id=v.id,
                authored=v.start + timedelta(minutes=self.rng.randint(5, 20)),
                requester=(v.staff.id, v.staff.name), reason_id=reason_id, days=days, category=category,
                continuous=continuous,
            )
            self.prescriptions.setdefault(actual, []).append(mr)
            self.emit(self.slug, mr)

    def _settle_prescription_status(self) -> None:
        """Only the latest order of a drug still being taken stays active; the rest are completed."""
        for orders in self.prescriptions.values():
            for i, mr in enumerate(orders):
                authored = date.fromisoformat(mr["authoredOn"][:10])
                days = mr["dispenseRequest"]["expectedSupplyDuration"]["value"]
                continuous = mr["courseOfTherapyType"]["coding"][0]["code"] == "continuous"
                last = i == len(orders) - 1
                still_running = authored + timedelta(days=days) >= REFERENCE_DATE
                recent_continuous = continuous and authored >= REFERENCE_DATE - timedelta(days=120)
                mr["status"] = "active" if last and (still_running or recent_continuous) else "completed"
