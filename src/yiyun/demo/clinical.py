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
from datetime import date, datetime, time, timedelta

from yiyun.demo import physiology as phys
from yiyun.demo.catalogue import ACUTE_MIX, CHRONIC_PREVALENCE, DEPARTMENTS, DIAGNOSES, REFERENCE_DATE, Diagnosis
from yiyun.demo.facilities import Staff
from yiyun.demo.people import Person
from yiyun.demo.prescribing import ALL_DRUGS
from yiyun.demo.records import LAST_DAY, WINDOW_START, Ids, PatientRecord, Visit

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


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class PatientCare(PatientRecord):
    """The care plan of one patient; see the module docstring."""

    def __init__(self, person: Person, rng: random.Random, ids: Ids, emit):
        super().__init__(person, rng, ids, emit)
        self.chronic: list[str] = []
        self.onset: dict[str, date] = {}
        self.regimen: dict[str, tuple[str, ...]] = {}
        self.claimed_classes: set[str] = set()
        self.condition_ids: dict[str, str] = {}
        self.first_recorded: dict[str, date] = {}

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
        youngest: dict[str, int] = {}  # age from which the condition occurs at all
        for row in CHRONIC_PREVALENCE:
            if row[0] in chosen:
                continue
            if rng.random() < prevalence(row, age, self.p.sex):
                chosen.append(row[0])
                youngest[row[0]] = min(a for a, share in row[2] if share > 0)
        if "gout" in chosen and "hyperuricaemia" in chosen:
            chosen.remove("hyperuricaemia")
        for key in chosen:
            if rng.random() < 0.15 and self.first_day + timedelta(days=30) < LAST_DAY - timedelta(days=20):
                onset = self._random_day(self.first_day + timedelta(days=30), LAST_DAY - timedelta(days=20))
            else:
                years = rng.randint(1, max(1, min(15, age - 1)))
                onset = WINDOW_START - timedelta(days=365 * years - rng.randint(0, 300))
            onset = max(onset, self.p.birth + timedelta(days=max(60, 365 * youngest[key])))
            if onset <= LAST_DAY - timedelta(days=7):
                self.onset[key] = onset
        self.chronic = [k for k in chosen if k in self.onset]

    def _pick_regimen(self, key: str) -> tuple[str, ...]:
        if key in self.regimen:
            return self.regimen[key]
        options = DIAGNOSES[key].regimens
        if not options:
            self.regimen[key] = ()
            return ()
        if key == "asthma" and self.age_now < 12:
            # Montelukast chewable tablets: 4 mg for ages 2–5, 5 mg for 6–14 (package insert);
            # inhaled ICS/LABA combinations are licensed from 12 years.
            options = (("D0504",),) if self.age_now < 6 else (("D0506",),)
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
        # Admission bloods: blood count for everyone, renal function for adolescents and
        # adults (children's creatinine needs age-specific intervals not modelled here).
        routine = ["cbc", "renal"] if self.p.age_years_on(v.start.date()) >= 14 else ["cbc"]
        panels = list(dict.fromkeys(list(diag.labs) + routine))
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
            gestation = (d - lmp).days // 7
            # About 0.4 kg a week from the second trimester (IOM 2009 for a normal BMI).
            gain = round(max(0, gestation - 13) * 0.4, 1)
            self._vitals(v, temp=False, weigh=True, measure_height=i == 0, bp=True, weight_gain=gain)
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

