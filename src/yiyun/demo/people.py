"""Synthetic residents of the demo region: who they are and where they live."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from yiyun.core import resident_id
from yiyun.demo import reference
from yiyun.demo.catalogue import REFERENCE_DATE, REGION
from yiyun.demo.facilities import Site, Staff
from yiyun.demo.fhirutil import RESIDENT_ID_SYSTEM, SID, THO, address, concept, ref, zh_cn
from yiyun.demo.identifiers import mobile_number
from yiyun.demo.names import person_name

# Age structure: share of the population in 5-year bands from 0–4 to 95+, China's seventh
# national census (2020), multiplied by how much more often each band uses health services
# (young children and the elderly visit far more often; 中国卫生健康统计年鉴 outpatient
# rates by age), so the patient list is older and younger than the population.
_AGE_BANDS = (
    (0, 5.4, 1.8), (5, 6.4, 1.1), (10, 6.1, 0.8), (15, 5.2, 0.6), (20, 5.3, 0.6), (25, 6.4, 0.8),
    (30, 8.8, 0.9), (35, 7.0, 0.9), (40, 6.6, 0.9), (45, 8.0, 1.0), (50, 8.7, 1.1), (55, 7.2, 1.2),
    (60, 5.2, 1.5), (65, 5.0, 1.7), (70, 3.4, 1.9), (75, 2.2, 2.0), (80, 1.5, 2.0), (85, 0.8, 1.8),
    (90, 0.3, 1.5), (95, 0.07, 1.2),
)

_MARITAL = {
    "M": ("Married", "已婚"),
    "S": ("Never Married", "未婚"),
    "W": ("Widowed", "丧偶"),
    "D": ("Divorced", "离婚"),
}

# Generic street names found in most Chinese cities; used with real township names.
_ROADS = (
    "人民路", "建设路", "解放路", "文化路", "新民路", "友谊路", "和平路", "光明路", "幸福路", "朝阳路",
    "长青路", "青年路", "育才路", "学院路", "工农路", "兴业路", "振兴路", "团结路", "民主路", "滨江路",
)
_VILLAGES = ("新华", "和平", "团结", "光明", "红星", "长岭", "石桥", "枫树", "桃园", "竹山", "双江", "白沙")


@dataclass
class Person:
    index: int
    id: str
    family: str
    given: str
    sex: str
    birth: date
    site: Site
    county_code: str
    phone: str
    family_doctor: Staff | None = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.family + self.given

    def age_on(self, when: date) -> int:
        years = when.year - self.birth.year
        if (when.month, when.day) < (self.birth.month, self.birth.day):
            years -= 1
        return years

    def age_years_on(self, when: date) -> float:
        return (when - self.birth).days / 365.25


def _birth_date(rng: random.Random) -> date:
    band = rng.choices(_AGE_BANDS, [share * use for _, share, use in _AGE_BANDS])[0][0]
    age_days = rng.randrange(band * 365, (band + 5) * 365)
    return REFERENCE_DATE - timedelta(days=age_days + 1)


def _home_site(rng: random.Random, age: int, sites: list[Site]) -> Site:
    by_slug = {s.slug: s for s in sites}
    if age < 14:
        weights = {"cs-childrens-hospital": 0.7, "wangyuehu-chc": 0.3}
    else:
        weights = {"cs-central-hospital": 0.45, "tianxin-district-hospital": 0.3, "wangyuehu-chc": 0.25}
    slug = rng.choices(list(weights), list(weights.values()))[0]
    return by_slug[slug]


def _home_county(rng: random.Random, site: Site) -> str:
    """Community health centres serve their own street; hospitals draw from the whole city."""
    if site.facility.kind == "clinic" and rng.random() < 0.85:
        return site.facility.county_code
    if site.facility.kind == "hospital" and site.facility.grade == "二级甲等" and rng.random() < 0.7:
        return site.facility.county_code
    codes = list(REGION.population)
    return rng.choices(codes, [REGION.population[c] for c in codes])[0]


def _marital_status(rng: random.Random, age: int, sex: str) -> str:
    # Legal marriage age is 22 for men and 20 for women (民法典 第一千零四十七条).
    if age < (22 if sex == "male" else 20):
        return "S"
    if age < 30:
        return rng.choices("MSD", (0.45, 0.53, 0.02))[0]
    if age < 60:
        return rng.choices("MSDW", (0.88, 0.05, 0.05, 0.02))[0]
    if age < 75:
        return rng.choices("MSDW", (0.80, 0.02, 0.03, 0.15))[0]
    return rng.choices("MSDW", (0.60, 0.01, 0.02, 0.37))[0]


def _street_line(rng: random.Random, township_name: str) -> str:
    if township_name.endswith("街道"):
        return (f"{rng.choice(_ROADS)}{rng.randint(1, 399)}号{rng.randint(1, 30)}栋"
                f"{rng.randint(1, 6)}单元{rng.randint(1, 33)}{rng.randint(1, 4):02d}室")
    return f"{rng.choice(_VILLAGES)}村{rng.randint(1, 15)}组{rng.randint(1, 80)}号"


class PeopleBuilder:
    def __init__(self, rng: random.Random, sites: list[Site], emit):
        self.rng = rng
        self.sites = sites
        self.emit = emit
        self.ids: set[str] = set()
        self.phones: set[str] = set()
        self.province = reference.province(REGION.province_code).name
        self.city = reference.city(REGION.city_code).name
        self.counties = {c.code: c for c in reference.counties(REGION.city_code)}
        self.townships = {code: reference.townships(code) for code in self.counties}
        self.mrn: dict[str, int] = {}

    def _unique_phone(self) -> str:
        while True:
            phone = mobile_number(self.rng)
            if phone not in self.phones:
                self.phones.add(phone)
                return phone

    def _resident_id(self, birth: date, sex: str, county_code: str) -> str:
        rng = self.rng
        # Most people keep the number issued where they were born or first registered;
        # one in five moved within the city since.
        area = county_code if rng.random() < 0.8 else rng.choice(sorted(self.counties))
        while True:
            seq = rng.randrange(500) * 2 + (1 if sex == "male" else 0)
            number = resident_id.build(area, birth, seq)
            if number not in self.ids:
                self.ids.add(number)
                return number

    def build(self, count: int) -> list[Person]:
        return [self._person(i) for i in range(1, count + 1)]

    def _person(self, index: int) -> Person:
        rng = self.rng
        birth = _birth_date(rng)
        age = REFERENCE_DATE.year - birth.year
        male_share = 0.51 if age < 60 else 0.47 if age < 80 else 0.42
        sex = "male" if rng.random() < male_share else "female"
        family, given = person_name(rng, sex, birth.year)
        site = _home_site(rng, age, self.sites)
        county_code = _home_county(rng, site)
        if site.facility.kind == "clinic" and county_code == site.facility.county_code and rng.random() < 0.7:
            township = next(t for t in self.townships[county_code] if t.code == site.facility.township_code)
        else:
            township = rng.choice(self.townships[county_code])
        person = Person(index, f"pat-{index:05d}", family, given, sex, birth, site, county_code, self._unique_phone())
        number = self._resident_id(birth, sex, county_code)
        self.mrn[site.slug] = self.mrn.get(site.slug, 0) + 1
        patient: dict = {
            "resourceType": "Patient",
            "id": person.id,
            "identifier": [
                {
                    "use": "official",
                    "type": concept(f"{THO}/v2-0203", "NI", "National unique individual identifier", "居民身份证"),
                    "system": RESIDENT_ID_SYSTEM,
                    "value": number,
                },
                {
                    "use": "usual",
                    "type": concept(f"{THO}/v2-0203", "MR", "Medical record number", "病案号"),
                    "system": f"{SID}/mrn/{site.slug}",
                    "value": f"{self.mrn[site.slug]:08d}",
                },
            ],
            "active": True,
            "name": [{"use": "official", "text": person.name, "family": family, "given": [given]}],
            "telecom": [{"system": "phone", "value": person.phone, "use": "mobile", "rank": 1}],
            "gender": sex,
            "birthDate": birth.isoformat(),
            "address": [address(
                use="home",
                province=self.province,
                city=self.city,
                county_code=county_code,
                county=self.counties[county_code].name,
                township_code=township.code,
                township=township.name,
                line=_street_line(rng, township.name),
            )],
            "maritalStatus": concept(f"{THO}/v3-MaritalStatus", (ms := _marital_status(rng, age, sex)), *_MARITAL[ms]),
        }
        if age < 18:
            patient["contact"] = [self._guardian(family, birth, person.phone)]
        patient["communication"] = [zh_cn()]
        if site.facility.kind == "clinic" and (age >= 65 or rng.random() < 0.4):
            # Contracted family doctor (家庭医生签约服务), prioritised for the elderly.
            gps = site.doctors["general-practice"]
            person.family_doctor = gps[index % len(gps)]
            patient["generalPractitioner"] = [ref("Practitioner", person.family_doctor.id, person.family_doctor.name)]
        patient["managingOrganization"] = ref("Organization", site.org_id, site.facility.name)
        self.emit(site.slug, patient)
        return person

    def _guardian(self, family: str, child_birth: date, phone: str) -> dict:
        rng = self.rng
        sex = "female" if rng.random() < 0.6 else "male"
        parent_birth_year = child_birth.year - rng.randint(24, 36)
        g_family = family if sex == "male" else person_name(rng, sex, parent_birth_year)[0]
        _, g_given = person_name(rng, sex, parent_birth_year)
        return {
            "relationship": [concept(f"{THO}/v2-0131", "N", "Next-of-Kin", "监护人")],
            "name": {"use": "official", "text": g_family + g_given, "family": g_family, "given": [g_given]},
            "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
            "gender": sex,
        }
