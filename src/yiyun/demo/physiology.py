"""Measured values that agree with a patient's age, sex and conditions.

Each patient gets baseline values (their "true" blood pressure, glucose, lipids …)
derived from their diagnoses; each measurement adds the usual within-person variation.
Reference ranges and the thresholds behind H/L flags are cited where they are defined.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from yiyun.demo.catalogue import LAB_TESTS

# Median height (cm) and weight (kg) by age in years, from 《中国0～18岁儿童、青少年身高、
# 体重的标准化生长曲线》 (李辉 et al., 2009), read at the listed ages.
_AGES = (0, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_HEIGHT = {
    "male": (50.4, 68.4, 76.5, 82.7, 88.5, 97.5, 104.1, 111.3, 117.7, 124.0, 130.0, 135.4, 140.2, 145.3,
             151.9, 159.5, 165.9, 169.8, 171.6, 172.3, 172.7),
    "female": (49.7, 66.8, 75.0, 81.5, 87.2, 96.3, 103.1, 110.2, 116.6, 122.5, 128.5, 134.1, 140.1, 146.6,
               152.4, 156.3, 158.6, 159.8, 160.1, 160.3, 160.6),
}
_WEIGHT = {
    "male": (3.3, 8.4, 10.0, 11.3, 12.5, 14.7, 16.6, 18.9, 21.3, 24.1, 27.3, 30.5, 34.0, 38.0, 42.5, 48.1,
             53.4, 57.1, 59.4, 61.0, 62.0),
    "female": (3.2, 7.8, 9.4, 10.7, 11.9, 14.1, 16.2, 18.3, 20.4, 22.6, 25.3, 28.2, 31.8, 36.1, 40.8, 44.1,
               47.0, 48.9, 50.1, 50.7, 51.2),
}


def _interpolate(table: tuple[float, ...], age: float) -> float:
    if age <= _AGES[0]:
        return table[0]
    for i in range(1, len(_AGES)):
        if age <= _AGES[i]:
            a0, a1 = _AGES[i - 1], _AGES[i]
            return table[i - 1] + (table[i] - table[i - 1]) * (age - a0) / (a1 - a0)
    return table[-1]


def ckd_epi_2009(creatinine_umol: float, age: float, female: bool) -> float:
    """eGFR (mL/min/1.73 m²), CKD-EPI creatinine equation (Levey AS et al., Ann Intern Med 2009;150:604)."""
    scr = creatinine_umol / 88.4
    kappa, alpha = (0.7, -0.329) if female else (0.9, -0.411)
    egfr = 141 * min(scr / kappa, 1) ** alpha * max(scr / kappa, 1) ** -1.209 * 0.993 ** age
    return egfr * (1.018 if female else 1.0)


def _clamp(value: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, value))


@dataclass
class Baseline:
    sbp: float
    dbp: float
    hr: float
    fpg: float
    hba1c: float
    tc: float
    tg: float
    ldl: float
    hdl: float
    alt: float
    creatinine: float
    urate: float
    hb: float
    tsh: float
    wbc: float
    spo2: float
    bmi: float
    height: float  # adults; children follow the growth table
    height_z: float
    weight_z: float


def baseline(rng: random.Random, sex: str, age: int, conditions: set[str]) -> Baseline:
    male = sex == "male"
    g = rng.gauss
    has = conditions.__contains__
    if has("hypertension"):
        # Treated hypertension: about half controlled below 140/90 (China Hypertension Survey).
        sbp = _clamp(g(140, 9), 122, 178)
        dbp = _clamp(g(86, 6) - (6 if age > 65 else 0), 62, 110)
    else:
        sbp = _clamp(105 + 0.4 * max(0, age - 20) + (5 if male else 0) + g(0, 6), 95, 130)
        dbp = _clamp(68 + 0.2 * max(0, min(age, 60) - 20) + g(0, 5), 58, 84)
    hr = _clamp(g(74, 6), 58, 92)
    if has("af"):
        hr = _clamp(g(90, 8), 70, 120)
    elif has("heart-failure"):
        hr = _clamp(g(82, 6), 65, 100)
    if has("diabetes"):
        fpg = _clamp(g(7.9, 1.3), 6.2, 13.0)
    else:
        fpg = _clamp(g(5.0, 0.4) + (0.2 if age > 60 else 0), 4.0, 5.9)
    # HbA1c from mean glucose (ADAG: eAG mg/dL = 28.7 × A1c − 46.7); fasting glucose is
    # about 10 % below the daily mean.
    hba1c = _clamp((fpg * 18 * 1.1 + 46.7) / 28.7 + g(0, 0.25), 4.2, 12.5)
    if not has("diabetes"):
        hba1c = min(hba1c, 5.9)
    if has("hyperlipidaemia"):
        tc = _clamp(g(6.0, 0.6), 5.2, 8.0)
        tg = _clamp(g(2.3, 0.6), 1.2, 5.0)
        ldl = _clamp(tc * 0.62 + g(0, 0.2), 3.0, 5.8)
    else:
        tc = _clamp(g(4.5, 0.45), 3.2, 5.4)
        tg = _clamp(g(1.2, 0.35), 0.5, 2.2)
        ldl = _clamp(tc * 0.58 + g(0, 0.15), 1.6, 3.5)
    if has("diabetes") or has("fatty-liver"):
        tg += 0.4
    hdl = _clamp(g(1.15, 0.2) if male else g(1.38, 0.25), 0.7, 2.2)
    alt = _clamp(g(20, 6), 8, 45)
    if has("fatty-liver"):
        alt = _clamp(g(55, 14), 30, 110)
    elif has("hepatitis-b"):
        alt = _clamp(g(42, 15), 15, 120)
    creatinine = _clamp(g(78, 9) if male else g(58, 7), 45, 100) + (6 if age > 70 else 0)
    if has("ckd3"):
        # Chosen so that CKD-EPI gives stage G3 (eGFR 30–59) at the ages CKD is assigned.
        creatinine = _clamp(g(155, 18), 135, 230) if male else _clamp(g(128, 14), 110, 200)
    if has("heart-failure"):
        creatinine += 8
    urate = _clamp(g(345, 45) if male else g(265, 40), 180, 410)
    if has("hyperuricaemia") or has("gout"):
        urate = _clamp(g(495, 45) if male else g(440, 35), 421, 650)
    if has("ckd3"):
        urate += 60
    if age < 6:
        hb = g(122, 7)
    elif age < 13:
        hb = g(130, 7)
    else:
        hb = g(148, 8) if male else g(130, 8)
    if has("iron-deficiency-anaemia"):
        hb = g(98, 7) if age < 13 else g(95, 8)
    if has("ckd3"):
        hb -= 15
    tsh = _clamp(g(2.0, 0.7), 0.5, 4.0)
    if has("hypothyroidism"):
        tsh = _clamp(g(3.5, 2.0), 0.4, 12.0)
    wbc = _clamp(g(8.0, 1.5), 5.0, 11.0) if age < 13 else _clamp(g(6.2, 1.0), 4.0, 9.0)
    spo2 = 94.0 if has("copd") else 98.0
    bmi = g(23.0, 2.8)
    bmi += (1.8 * has("diabetes") + 1.0 * has("hypertension") + 1.5 * has("fatty-liver")
            + 0.8 * has("hyperlipidaemia") + 0.8 * has("knee-oa") - 1.0 * has("copd"))
    bmi = _clamp(bmi, 16.5, 38.0)
    shrink = 0.1 * max(0, age - 35)
    height = g(170 - shrink, 6) if male else g(158.5 - shrink, 5.5)
    return Baseline(sbp, dbp, hr, fpg, hba1c, tc, tg, ldl, hdl, alt, creatinine, urate, hb, tsh, wbc, spo2,
                    bmi, _clamp(height, 140, 195), _clamp(g(0, 1), -2.5, 2.5), _clamp(g(0, 1), -2.5, 2.5))


# ---- vital signs --------------------------------------------------------------------------

def child_heart_rate(age: float) -> tuple[float, float, float]:
    """(typical, low, high) awake heart rate by age (PALS 2020 normal ranges)."""
    if age < 1:
        return 128, 100, 160
    if age < 3:
        return 112, 90, 150
    if age < 6:
        return 100, 80, 140
    if age < 12:
        return 88, 70, 120
    return 78, 60, 100


def respiratory_rate_typical(age: float) -> float:
    if age < 1:
        return 38
    if age < 3:
        return 30
    if age < 6:
        return 25
    if age < 12:
        return 21
    return 16


def child_height(sex: str, age: float, z: float) -> float:
    return _interpolate(_HEIGHT[sex], age) * (1 + 0.04 * z)


def child_weight(sex: str, age: float, z: float) -> float:
    return _interpolate(_WEIGHT[sex], age) * (1 + 0.1 * z)


# ---- reference ranges ---------------------------------------------------------------------

def lab_range(key: str, sex: str, age: float) -> tuple[float | None, float | None]:
    """(low, high) reference limits; a value above high is H, below low is L.

    Adult haematology from WS/T 405-2012, children's from WS/T 779-2021; liver enzymes
    WS/T 404.1-2012; creatinine (enzymatic) and urate WS/T 404.5-2015 / common Chinese lab
    practice; lipids per 中国成人血脂异常防治指南（2016年修订版） "合适水平"; fasting
    glucose per 中国2型糖尿病防治指南（2020年版）; eGFR per KDIGO 2012 G1.
    """
    male = sex == "male"
    if key == "glucose":
        return 3.9, 6.1
    if key == "hba1c":
        return 4.0, 6.0
    if key == "tc":
        return None, 5.19
    if key == "tg":
        return None, 1.69
    if key == "ldl":
        return None, 3.39
    if key == "hdl":
        return 1.0, None
    if key == "alt":
        return (9, 50) if male else (7, 40)
    if key == "creatinine":
        if age >= 60:
            return (57, 111) if male else (41, 81)
        return (57, 97) if male else (41, 73)
    if key == "egfr":
        return 90, None
    if key == "urate":
        return (208, 428) if male else (155, 357)
    if key == "wbc":
        if age < 0.5:
            return 4.3, 14.2
        if age < 1:
            return 4.8, 14.6
        if age < 2:
            return 5.1, 14.1
        if age < 6:
            return 4.4, 11.9
        if age < 13:
            return 4.3, 11.3
        if age < 18:
            return 4.1, 11.0
        return 3.5, 9.5
    if key == "hb":
        if age < 1:
            return 97, 141
        if age < 2:
            return 107, 141
        if age < 6:
            return 112, 149
        if age < 13:
            return 118, 156
        if age < 18:
            return (129, 172) if male else (114, 158)
        return (130, 175) if male else (115, 150)
    if key == "crp":
        return 0, 10
    if key == "tsh":
        return 0.27, 4.2
    raise KeyError(key)


def lab_value(rng: random.Random, key: str, b: Baseline, *, sex: str, age: float,
              infection: str | None, recovering: bool = False) -> float:
    g = rng.gauss
    if key == "glucose":
        v = _clamp(b.fpg + g(0, 0.35 if b.fpg > 6.1 else 0.25), 3.4, 20)
    elif key == "hba1c":
        v = _clamp(b.hba1c + g(0, 0.2), 4.0, 14)
    elif key == "tc":
        v = _clamp(b.tc + g(0, 0.25), 2.5, 9.5)
    elif key == "tg":
        v = _clamp(b.tg * (1 + g(0, 0.12)), 0.3, 8)
    elif key == "ldl":
        v = _clamp(b.ldl + g(0, 0.2), 0.8, 6.5)
    elif key == "hdl":
        v = _clamp(b.hdl + g(0, 0.08), 0.5, 2.6)
    elif key == "alt":
        v = _clamp(b.alt * (1 + g(0, 0.15)), 5, 300)
    elif key == "creatinine":
        v = _clamp(b.creatinine * (1 + g(0, 0.05)), 30, 400)
    elif key == "urate":
        v = _clamp(b.urate + g(0, 25), 120, 750)
    elif key == "wbc":
        if infection == "bacterial" and not recovering:
            v = _clamp(g(12.5, 2.8), 6.0, 25)
        elif infection == "viral" and not recovering:
            v = _clamp(g(5.8, 1.5), 2.6, 11)
        else:
            v = _clamp(b.wbc + g(0, 0.8), 3.6, 11)
    elif key == "hb":
        v = _clamp(b.hb + g(0, 4), 60, 190)
    elif key == "crp":
        if infection == "bacterial" and not recovering:
            v = _clamp(math.exp(g(math.log(45), 0.6)), 11, 200)
        elif infection == "viral" and not recovering:
            v = _clamp(math.exp(g(math.log(5), 0.7)), 0.5, 40)
        else:
            v = _clamp(math.exp(g(math.log(1.5), 0.6)), 0.2, 9.5)
    elif key == "tsh":
        v = _clamp(b.tsh * (1 + g(0, 0.15)), 0.1, 20)
    else:
        raise KeyError(key)
    return round_value(key, v)


def round_value(key: str, value: float) -> float | int:
    decimals = LAB_TESTS[key].decimals
    return int(round(value)) if decimals == 0 else round(value, decimals)


def egfr_value(creatinine: float, sex: str, age: float) -> int:
    return int(round(ckd_epi_2009(creatinine, age, sex == "female")))


def interpret(value: float, low: float | None, high: float | None) -> str:
    if high is not None and value > high:
        return "H"
    if low is not None and value < low:
        return "L"
    return "N"
