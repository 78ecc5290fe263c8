"""Two years of care for one synthetic patient at their home facility.

A patient's history is drawn from their age and sex: chronic conditions by published
prevalence, managed in regular follow-ups (online follow-ups where the department offers
them, as 《互联网诊疗管理办法（试行）》 allows only for patients already diagnosed
offline); acute problems by age and season; health check-ups; antenatal care. Every
encounter records what a Chinese outpatient or inpatient visit would: vital signs,
laboratory results consistent with the patient's conditions, and prescriptions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from yiyun.demo import physiology as phys
from yiyun.demo.catalogue import (
    ACUTE_MIX,
    CHRONIC_PREVALENCE,
    DEPARTMENTS,
    DIAGNOSES,
    HISTORY_DAYS,
    LAB_PANELS,
    REFERENCE_DATE,
    SEASONS,
    Diagnosis,
)
from yiyun.demo.facilities import Site, Staff
from yiyun.demo.fhirutil import CS, SID, THO, coding, concept, instant, quantity, ref
from yiyun.demo.observations import blood_pressure, lab_result, vital_sign
from yiyun.demo.people import Person
from yiyun.demo.prescribing import ALL_DRUGS, for_age, medication_request
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
# Length of stay in days (min, max) for admitted problems.
_STAY = {
    "cap": (7, 11), "bronchopneumonia": (5, 8), "appendicitis": (3, 6), "inguinal-hernia": (2, 4),
    "stroke": (10, 15), "forearm-fracture": (5, 9), "chd": (5, 8), "heart-failure": (7, 12),
}
# Mean number of acute episodes in two years by age group (outpatient visit rates per
# person in 中国卫生健康统计年鉴 are highest for young children and the elderly).
_EPISODE_MEAN = {"infant": 2.2, "child": 1.2, "adult": 0.45, "elderly": 0.6}
_EPISODE_LIMITS = {"acne": (12, 35), "vaginitis": (16, 120)}
_ONLINE_SHARE = 0.55
_CARDIOMETABOLIC = {"hypertension", "diabetes", "hyperlipidaemia", "chd", "stroke", "af", "heart-failure", "ckd3"}


def age_group(age: float) -> str:
    if age < 3:
        return "infant"
    if age < 14:
        return "child"
    if age < 60:
        return "adult"
    return "elderly"


def age_class(age: float) -> str:
    return "child" if age < 14 else "adult" if age < 60 else "elderly"


def prevalence(key_age_sex: tuple, age: int, sex: str) -> float:
    _, row_sex, bands = key_age_sex
    if row_sex is not None and row_sex != sex:
        return 0.0
    p = 0.0
    for min_age, value in bands:
        if age >= min_age:
            p = value
    return p


class Ids:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def next(self, prefix: str, width: int = 6) -> str:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        return f"{prefix}-{n:0{width}d}"


@dataclass
class Visit:
    start: datetime
    cls: str
    dept: str
    staff: Staff
    reasons: list[str] = field(default_factory=list)  # condition ids
    type_code: str = "first-visit"
    end: datetime | None = None
    id: str = ""


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class PatientCare:
    def __init__(self, person: Person, rng: random.Random, ids: Ids, emit):
        self.p = person
        self.site: Site = person.site
        self.rng = rng
        self.ids = ids
        self.emit = emit
        self.slug = person.site.slug
        self.age_now = person.age_on(REFERENCE_DATE)
        self.first_day = max(WINDOW_START, person.birth + timedelta(days=28))
        self.chronic: list[str] = []
        self.onset: dict[str, date] = {}
        self.regimen: dict[str, tuple[str, ...]] = {}
        self.claimed_classes: set[str] = set()
        self.condition_ids: dict[str, str] = {}
        self.first_recorded: dict[str, date] = {}
        self.prescriptions: dict[str, list[dict]] = {}
        self.weighed_years: set[int] = set()
        self.height_recorded = False
        self.base: phys.Baseline

    # ---- the plan ---------------------------------------------------------------------
    def run(self) -> None:
        self._choose_chronic()
        self.base = phys.baseline(self.rng, self.p.sex, self.age_now, set(self.chronic))
        if self.first_day >= LAST_DAY:
            return  # born in the last four weeks: no history yet
        self._chronic_care()
        self._admissions_for_chronic()
        self._acute_episodes()
        self._checkups()
        self._antenatal_care()
        self._settle_prescription_status()

    def _choose_chronic(self) -> None:
        rng, age = self.rng, self.age_now
        chosen: list[str] = []
        for row in CHRONIC_PREVALENCE:
            if row[0] in chosen:
                continue
            if rng.random() < prevalence(row, age, self.p.sex):
                chosen.append(row[0])
        if "gout" in chosen and "hyperuricaemia" in chosen:
            chosen.remove("hyperuricaemia")
        for key in chosen:
            if rng.random() < 0.15 and self.first_day + timedelta(days=30) < LAST_DAY - timedelta(days=20):
                onset = self._random_day(self.first_day + timedelta(days=30), LAST_DAY - timedelta(days=20))
            else:
                years = rng.randint(1, max(1, min(15, age - 1)))
                onset = WINDOW_START - timedelta(days=365 * years - rng.randint(0, 300))
            onset = max(onset, self.p.birth + timedelta(days=60))
            if onset <= LAST_DAY - timedelta(days=7):
                self.onset[key] = onset
        self.chronic = [k for k in chosen if k in self.onset]

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
                weigh: bool = False, measure_height: bool = False, severity: float = 1.0,
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
            self._anthropometry(v, when, by, age, measure_height)

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
                       measure_height: bool) -> None:
        rng, b, p = self.rng, self.base, self.p
        if age < 18:
            height = phys.child_height(p.sex, age, b.height_z)
            weight = phys.child_weight(p.sex, age, b.weight_z) * (1 + rng.gauss(0, 0.015))
        else:
            height = b.height
            weight = b.bmi * (height / 100) ** 2 * (1 + rng.gauss(0, 0.012))
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

    def _pick_regimen(self, key: str) -> tuple[str, ...]:
        if key in self.regimen:
            return self.regimen[key]
        options = DIAGNOSES[key].regimens
        if not options:
            self.regimen[key] = ()
            return ()
        if key == "asthma" and self.age_now < 12:
            options = (("D0504",),) if self.age_now < 6 else (("D0505",),)
        chosen = []
        for code in self.rng.choice(options):
            drug_class = ALL_DRUGS[code].drug_class
            if drug_class in self.claimed_classes:
                continue
            self.claimed_classes.add(drug_class)
            chosen.append(code)
        self.regimen[key] = tuple(chosen)
        return self.regimen[key]

    # ---- chronic care ---------------------------------------------------------------
    def _chronic_care(self) -> None:
        groups: dict[str, list[str]] = {}
        for key in self.chronic:
            diag = DIAGNOSES[key]
            if not diag.maintenance and self.onset[key] < self.first_day and self.rng.random() < 0.5:
                # A long-standing problem without regular treatment often brings no visit
                # in two years; it still shapes the patient's measurements.
                continue
            groups.setdefault(self._dept(diag), []).append(key)
        for dept, keys in groups.items():
            self._chronic_track(dept, keys)

    def _chronic_track(self, dept: str, keys: list[str]) -> None:
        rng = self.rng
        diags = [DIAGNOSES[k] for k in keys]
        maintenance = any(d.maintenance for d in diags)
        cadence = min(d.follow_up_days for d in diags)
        adherence = rng.uniform(0.4, 0.8)
        # When each condition is first seen in the window: at its onset if it began
        # inside the window, otherwise when the patient registered their care here,
        # more often early in the window than late.
        first_seen: dict[str, date] = {}
        span = max(0, (LAST_DAY - timedelta(days=14) - self.first_day).days)
        registration = self.first_day + timedelta(days=int(span * rng.random() ** 1.5))
        for k in keys:
            first_seen[k] = self.onset[k] if self.onset[k] >= self.first_day else registration
        days = set(first_seen.values())
        d = min(days)
        # Follow-ups are kept at the guideline cadence in the last half year and are
        # sparser before, as when a patient only recently moved their care here.
        busy_from = LAST_DAY - timedelta(days=180)
        while True:
            d += timedelta(days=round(cadence * rng.uniform(0.8, 1.3)))
            if d > LAST_DAY:
                break
            if maintenance and d < busy_from and rng.random() < 0.9:
                continue
            if not maintenance and rng.random() < 0.75:
                continue
            if rng.random() < adherence:
                days.add(d)
        online_ok = DEPARTMENTS[dept].online and self.site.facility.kind in ("hospital", "clinic")
        for d in sorted(days):
            new_keys = [k for k in keys if first_seen[k] == d]
            known = [k for k in keys if first_seen[k] <= d]
            if not known:
                continue
            if new_keys:
                if any(DIAGNOSES[k].admission and first_seen[k] == self.onset[k] for k in new_keys) \
                        and self.site.facility.kind == "hospital":
                    self._chronic_admission(dept, d, new_keys, known)
                    continue
                cls, type_code = "AMB", "first-visit"
            elif online_ok and rng.random() < _ONLINE_SHARE:
                cls, type_code = "VR", "online-follow-up"
            else:
                cls, type_code = "AMB", "follow-up"
            staff = self._track_doctor(dept)
            v = self._new_visit(d, cls, dept, type_code, staff)
            self._register(v, new_keys, known)
            self._emit_encounter(v)
            if cls == "AMB":
                respiratory = any(DIAGNOSES[k].respiratory for k in known)
                weigh = d.year not in self.weighed_years or any(k in ("diabetes", "heart-failure") for k in known)
                bp = True if _CARDIOMETABOLIC.intersection(known) else None
                self._vitals(v, temp=False, respiratory=respiratory, weigh=weigh, bp=bp)
                panels: list[str] = []
                for k in known:
                    diag = DIAGNOSES[k]
                    if k in new_keys:
                        # Work-up at diagnosis; a patient who brings a known condition
                        # often brings recent results from elsewhere.
                        rate = 1.0 if first_seen[k] == self.onset[k] else 0.25
                    else:
                        rate = diag.follow_up_lab_rate
                    if rng.random() < rate:
                        panels.extend(p for p in diag.labs if p not in panels)
                if panels:
                    self._labs(v, panels)
            self._chronic_prescriptions(v, known, new_keys)

    def _track_doctor(self, dept: str) -> Staff:
        # Patients keep seeing the same doctor for a chronic condition most of the time.
        key = f"doctor:{dept}"
        if key not in self.p.extra or self.rng.random() < 0.2:
            self.p.extra[key] = self._doctor(dept)
        return self.p.extra[key]

    def _register(self, v: Visit, new_keys: list[str], known: list[str]) -> None:
        for k in new_keys:
            self.condition_ids[k] = self._condition(k, v, onset=self.onset[k], problem_list=True)
            self.first_recorded[k] = v.start.date()
        v.reasons = [self.condition_ids[k] for k in known]

    def _chronic_prescriptions(self, v: Visit, known: list[str], new_keys: list[str]) -> None:
        for k in known:
            diag = DIAGNOSES[k]
            if not diag.maintenance and k not in new_keys and self.rng.random() < 0.5:
                continue
            regimen = self._pick_regimen(k)
            if regimen:
                days = 28 if diag.maintenance else 14
                self._prescribe(v, regimen, self.condition_ids[k], days=days, continuous=diag.maintenance)

    def _chronic_admission(self, dept: str, d: date, new_keys: list[str], known: list[str]) -> None:
        key = next(k for k in new_keys if DIAGNOSES[k].admission)
        emergency = "emergency" in self.site.department_ids
        v = self._new_visit(d, "IMP", dept, "admission")
        self._register(v, new_keys, known)
        v.reasons = [self.condition_ids[key]] + [c for c in v.reasons if c != self.condition_ids[key]]
        stay = self.rng.randint(*_STAY.get(key, (5, 10)))
        self._emit_encounter(v, stay_days=stay, admitted_from="emd" if emergency else "outp")
        self._inpatient_measurements(v, DIAGNOSES[key], stay)
        self._chronic_prescriptions(v, known, new_keys)

    def _admissions_for_chronic(self) -> None:
        """Decompensations that need a hospital stay (angina, heart failure)."""
        if self.site.facility.kind != "hospital":
            return
        for key in self.chronic:
            diag = DIAGNOSES[key]
            rate = diag.admission.get(age_class(self.age_now), 0.0)
            if key == "stroke" or not rate or key not in self.condition_ids:
                continue
            if self.rng.random() >= rate:
                continue
            first = self.first_recorded[key]
            if first >= LAST_DAY - timedelta(days=3):
                continue
            d = self._seasonal_day("respiratory", first + timedelta(days=1), LAST_DAY - timedelta(days=3))
            dept = self._dept(diag)
            v = self._new_visit(d, "IMP", dept, "admission")
            v.reasons = [self.condition_ids[key]]
            stay = self.rng.randint(*_STAY.get(key, (5, 10)))
            self._emit_encounter(v, stay_days=stay, admitted_from="emd")
            self._inpatient_measurements(v, diag, stay)

    def _inpatient_measurements(self, v: Visit, diag: Diagnosis, stay: int) -> None:
        self._vitals(v, temp=True, infection=diag.infection, respiratory=diag.respiratory, weigh=True,
                     severity=1.3, bp=True)
        panels = list(dict.fromkeys(list(diag.labs) + ["cbc", "renal"]))
        self._labs(v, panels, infection=diag.infection)
        if diag.infection and stay >= 3:
            again = v.start + timedelta(days=stay - 1)
            if again.date() < REFERENCE_DATE:
                self._labs(v, [p for p in ("cbc", "crp") if p in panels], infection=diag.infection,
                           recovering=True, collected=datetime.combine(again.date(), time(6, 30)))

    # ---- acute problems -----------------------------------------------------------------
    def _acute_episodes(self) -> None:
        rng, p = self.rng, self.p
        group_now = age_group(self.age_now)
        count = _poisson(rng, _EPISODE_MEAN[group_now])
        for _ in range(count):
            d0 = self._random_day(self.first_day, LAST_DAY)
            age = p.age_years_on(d0)
            key = self._acute_reason(age)
            if key is None:
                continue
            diag = DIAGNOSES[key]
            d = self._seasonal_day(diag.season, self.first_day, LAST_DAY)
            self._acute_episode(diag, d)
        self._current_admission()

    def _current_admission(self) -> None:
        """A few patients are on the wards on the reference date, so ward lists are not empty."""
        rng = self.rng
        if self.site.facility.kind != "hospital" or rng.random() >= 0.012:
            return
        key = {"child": "bronchopneumonia", "adult": rng.choice(("appendicitis", "cap")), "elderly": "cap"}[
            age_class(self.age_now)]
        if key == "bronchopneumonia" and "paediatrics" not in self.site.department_ids:
            key = "cap"
        self._acute_episode(DIAGNOSES[key], LAST_DAY - timedelta(days=rng.randint(0, 3)), force_admission=True)

    def _acute_reason(self, age: float) -> str | None:
        mix = ACUTE_MIX[age_group(age)]
        keys, weights = [], []
        for key, weight in mix:
            lo_hi = _EPISODE_LIMITS.get(key)
            if lo_hi and not lo_hi[0] <= age <= lo_hi[1]:
                continue
            if key == "vaginitis" and self.p.sex != "female":
                continue
            if key == "inguinal-hernia" and self.p.sex == "female":
                weight *= 0.15
            if key == "uti":
                weight *= 1.6 if self.p.sex == "female" else 0.4
            keys.append(key)
            weights.append(weight)
        return self.rng.choices(keys, weights)[0] if keys else None

    def _acute_episode(self, diag: Diagnosis, d: date, *, force_admission: bool = False) -> None:
        rng, p = self.rng, self.p
        age = p.age_years_on(d)
        dept = self._dept(diag)
        hospital = self.site.facility.kind == "hospital"
        admit = force_admission or (
            hospital and rng.random() < diag.admission.get(age_class(age), 0.0) and d < LAST_DAY)
        if admit:
            cls, type_code = "IMP", "admission"
        elif dept == "emergency" or (diag.key in ("forearm-fracture", "appendicitis", "ankle-sprain")
                                     and "emergency" in self.site.department_ids):
            cls, type_code, dept = "EMER", "emergency", "emergency"
        else:
            cls, type_code = "AMB", "first-visit"
        if admit and "emergency" in self.site.department_ids and diag.key != "inguinal-hernia":
            admitted_from = "emd"
        else:
            admitted_from = "outp"
        v = self._new_visit(d, cls, dept, type_code)
        onset = d - timedelta(days=rng.randint(0, 3))
        recovery = d + timedelta(days=rng.randint(5, 14))
        stay = rng.randint(*_STAY.get(diag.key, (3, 7))) if admit else 0
        if admit:
            recovery = max(recovery, d + timedelta(days=stay))
        abated = recovery if recovery < REFERENCE_DATE else None
        cid = self._condition(diag.key, v, onset=max(onset, p.birth), problem_list=False, abated=abated)
        v.reasons = [cid]
        self._emit_encounter(v, stay_days=stay if admit else None, admitted_from=admitted_from)
        if admit:
            self._inpatient_measurements(v, diag, stay)
        else:
            self._vitals(v, temp=True, infection=diag.infection, respiratory=diag.respiratory,
                         weigh=age < 18)
            if diag.labs and rng.random() < 0.4:
                self._labs(v, list(diag.labs), infection=diag.infection)
        if diag.regimens:
            regimen = rng.choice(diag.regimens)
            if admit and diag.infection == "bacterial":
                regimen = ("A0008",)
            days = stay if admit else 7
            self._prescribe(v, regimen, cid, days=max(1, days), continuous=False)

    # ---- check-ups and antenatal care ----------------------------------------------------
    def _checkups(self) -> None:
        rng, age = self.rng, self.age_now
        if age >= 18:
            count = int(rng.random() < (0.05 if age < 45 else 0.12))
            for _ in range(count):
                self._checkup(DIAGNOSES["checkup"], self._random_day(self.first_day, LAST_DAY))
        elif age < 7 and self.site.facility.kind in ("hospital", "clinic"):
            count = rng.randint(1, 3) if age < 3 else int(rng.random() < 0.5)
            for _ in range(count):
                self._checkup(DIAGNOSES["child-health-check"], self._random_day(self.first_day, LAST_DAY))

    def _checkup(self, diag: Diagnosis, d: date) -> None:
        dept = self._dept(diag)
        v = self._new_visit(d, "AMB", dept, "checkup")
        cid = self._condition(diag.key, v, onset=d, problem_list=False, abated=d)
        v.reasons = [cid]
        self._emit_encounter(v)
        age = self.p.age_years_on(d)
        self._vitals(v, temp=True, weigh=True, measure_height=True, bp=True)
        panels = list(diag.labs)
        if "diabetes" in self.chronic:
            panels.append("hba1c")
        if diag.key == "child-health-check" and 0.5 <= age < 3:
            panels = ["cbc"]  # anaemia screening in infancy (国家基本公共卫生服务规范 第三版)
        if panels:
            self._labs(v, panels)

    def _antenatal_care(self) -> None:
        rng, p = self.rng, self.p
        if p.sex != "female" or not 22 <= self.age_now <= 40 or rng.random() >= 0.06:
            return
        dept = self.site.department_for(DIAGNOSES["pregnancy"].departments)
        if dept not in ("obstetrics-gynaecology", "general-practice"):
            return
        lmp = self._random_day(WINDOW_START - timedelta(days=60), LAST_DAY - timedelta(days=75))
        due = lmp + timedelta(days=280)
        # Antenatal visits per 孕前和孕期保健指南（2018）: 6–13⁺⁶, 14–19⁺⁶, 20–24, 25–28,
        # 29–32, 33–36 weeks and weekly from 37 weeks.
        weeks = (10, 16, 22, 26, 30, 34, 37, 38, 39)
        days = [lmp + timedelta(weeks=w, days=rng.randint(-3, 3)) for w in weeks]
        days = [d for d in days if self.first_day <= d <= LAST_DAY]
        if not days:
            return
        cid = None
        for i, d in enumerate(days):
            v = self._new_visit(d, "AMB", dept, "antenatal" if i else "first-visit")
            if cid is None:
                abated = due + timedelta(days=rng.randint(-10, 7))
                cid = self._condition("pregnancy", v, onset=lmp, problem_list=True,
                                      abated=abated if abated < REFERENCE_DATE else None)
            v.reasons = [cid]
            self._emit_encounter(v)
            self._vitals(v, temp=False, weigh=True, measure_height=i == 0, bp=True)
            gestation = (d - lmp).days // 7
            panels = ["cbc"] if i == 0 else []
            if 24 <= gestation <= 28:
                panels += ["glucose", "cbc"]
            if panels:
                self._labs(v, list(dict.fromkeys(panels)))
            if i == 0:
                self._prescribe(v, ("D1901",), cid, days=28, continuous=True)


class CareBuilder:
    """Builds the care history of each patient from its own random stream.

    Each patient draws from ``Random(f"{seed}:care:{index}")`` so that one patient's
    history does not shift when another's logic changes.
    """

    def __init__(self, seed: int, emit):
        self.seed = seed
        self.emit = emit
        self.ids = Ids()

    def build(self, person: Person) -> None:
        rng = random.Random(f"{self.seed}:care:{person.index}")
        PatientCare(person, rng, self.ids, self.emit).run()

