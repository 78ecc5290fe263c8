"""Tenants of the demo region: organisations, sites, departments, services and staff."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date

from yiyun.demo import reference
from yiyun.demo.catalogue import DEPARTMENTS, FACILITIES, REFERENCE_DATE, REGION, Facility
from yiyun.demo.fhirutil import (
    CS,
    EXT_DEPARTMENT,
    EXT_HOSPITAL_GRADE,
    SID,
    THO,
    address,
    coding,
    concept,
    ref,
)
from yiyun.demo.geo import gcj02_to_wgs84
from yiyun.demo.identifiers import mobile_number, practising_certificate, uscc
from yiyun.demo.names import person_name

KIND_DISPLAY = {"hospital": "医院", "clinic": "社区卫生服务中心", "pharmacy": "零售药店", "cdc": "疾病预防控制中心"}
PROFESSION_ROLE = {"doctor": ("doctor", "Doctor", "医师"), "nurse": ("nurse", "Nurse", "护士"),
                   "pharmacist": ("pharmacist", "Pharmacist", "药师")}

# Professional titles (卫生专业技术职务): (code, name, weight, min age, max age).
TITLES = {
    "doctor": (
        ("chief-physician", "主任医师", 0.15, 45, 62),
        ("associate-chief-physician", "副主任医师", 0.25, 38, 58),
        ("attending-physician", "主治医师", 0.35, 30, 50),
        ("resident-physician", "住院医师", 0.25, 25, 34),
    ),
    "nurse": (
        ("associate-chief-nurse", "副主任护师", 0.1, 40, 58),
        ("supervising-nurse", "主管护师", 0.35, 32, 50),
        ("senior-nurse", "护师", 0.4, 26, 40),
        ("nurse", "护士", 0.15, 22, 30),
    ),
    "pharmacist": (
        ("associate-chief-pharmacist", "副主任药师", 0.15, 40, 58),
        ("supervising-pharmacist", "主管药师", 0.45, 30, 55),
        ("pharmacist", "药师", 0.4, 24, 40),
    ),
}
_TITLE_SYSTEM = f"{CS}/professional-title"
_SUBJECT_SYSTEM = f"{CS}/clinical-subject"  # 《医疗机构诊疗科目名录》 codes
_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


@dataclass
class Staff:
    id: str
    role_id: str
    name: str
    sex: str
    profession: str
    department: str | None


@dataclass
class Site:
    """A tenant as built: its resources' ids and its staff by department."""

    facility: Facility
    org_id: str
    location_id: str
    department_ids: dict[str, str] = field(default_factory=dict)
    service_ids: dict[str, str] = field(default_factory=dict)
    doctors: dict[str, list[Staff]] = field(default_factory=dict)
    nurses: dict[str, list[Staff]] = field(default_factory=dict)
    pharmacists: list[Staff] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return self.facility.slug

    def department_for(self, candidates: tuple[str, ...]) -> str:
        """The first candidate department this site has, else its default department."""
        for key in candidates:
            if key in self.department_ids:
                return key
        assert self.facility.default_department is not None
        return self.facility.default_department


def _phone(rng: random.Random) -> str:
    # Changsha fixed-line numbers have 8 digits after the 0731 area code.
    return f"{REGION.phone_area_code}-8{rng.randrange(10_000_000):07d}"


def _site_address(facility: Facility, use: str = "work") -> dict:
    county = next(c for c in reference.counties(REGION.city_code) if c.code == facility.county_code)
    township = next(t for t in reference.townships(facility.county_code) if t.code == facility.township_code)
    return address(
        use=use,
        province=reference.province(REGION.province_code).name,
        city=reference.city(REGION.city_code).name,
        county_code=county.code,
        county=county.name,
        township_code=township.code,
        township=township.name,
        line=facility.street,
    )


def site_position(rng: random.Random, county_code: str) -> dict:
    """WGS-84 position near the county centre, jittered by up to about 1.5 km."""
    lon, lat = gcj02_to_wgs84(*reference.county_centre_gcj02(county_code))
    lon += rng.uniform(-0.015, 0.015)
    lat += rng.uniform(-0.012, 0.012)
    return {"longitude": round(lon, 6), "latitude": round(lat, 6)}


class FacilityBuilder:
    def __init__(self, rng: random.Random, emit):
        self.rng = rng
        self.emit = emit  # emit(tenant_slug, resource)
        self.sites: list[Site] = []
        self._staff_seq = 0

    def build(self) -> list[Site]:
        for facility in FACILITIES:
            self.sites.append(self._organization(facility))
        for site in self.sites:
            self._location(site)
        for site in self.sites:
            self._departments(site)
        for site in self.sites:
            self._staff(site)
        return self.sites

    # -- organisations -------------------------------------------------------------------
    def _organization(self, f: Facility) -> Site:
        rng = self.rng
        site = Site(f, org_id=f"org-{f.slug}", location_id=f"loc-{f.slug}")
        types = [
            concept(f"{THO}/organization-type", *(("govt", "Government") if f.kind == "cdc" else ("prov", "Healthcare Provider"))),
            concept(f"{CS}/organization-kind", f.kind, KIND_DISPLAY[f.kind], KIND_DISPLAY[f.kind]),
        ]
        registrar = "91" if f.kind == "pharmacy" else "12"
        org: dict = {
            "resourceType": "Organization",
            "id": site.org_id,
            "identifier": [{
                "use": "official",
                "type": {"text": "统一社会信用代码"},
                "system": f"{SID}/uscc",
                "value": uscc(rng, registrar, f.county_code),
            }],
            "active": True,
            "type": types,
            "name": f.name,
            "alias": [f.alias],
            "telecom": [
                {"system": "phone", "value": _phone(rng), "use": "work"},
                {"system": "url", "value": f"https://{f.slug}.yiyun.example.cn", "use": "work"},
            ],
            "address": [_site_address(f)],
        }
        if f.grade:
            org["extension"] = [{
                "url": EXT_HOSPITAL_GRADE,
                "valueCoding": coding(f"{CS}/hospital-grade", {"三级甲等": "3A", "二级甲等": "2A"}[f.grade], f.grade),
            }]
        self.emit(f.slug, org)
        return site

    def _location(self, site: Site) -> None:
        f = site.facility
        loc_type = {"hospital": ("HOSP", "Hospital"), "pharmacy": ("PHARM", "Pharmacy")}.get(f.kind)
        location = {
            "resourceType": "Location",
            "id": site.location_id,
            "status": "active",
            "name": f.name,
            "mode": "instance",
        }
        if loc_type:
            location["type"] = [concept("http://terminology.hl7.org/CodeSystem/v3-RoleCode", *loc_type, KIND_DISPLAY[f.kind])]
        else:
            location["type"] = [{"text": KIND_DISPLAY[f.kind]}]
        location.update({
            "telecom": [{"system": "phone", "value": _phone(self.rng), "use": "work"}],
            "address": _site_address(f),
            "physicalType": concept(f"{THO}/location-physical-type", "bu", "Building", "建筑"),
            "position": site_position(self.rng, f.county_code),
            "managingOrganization": ref("Organization", site.org_id, f.name),
        })
        self.emit(f.slug, location)

    def _departments(self, site: Site) -> None:
        f = site.facility
        short = f.slug.split("-")[1] if f.slug.startswith("cs-") else f.slug.split("-")[0]
        for key in f.departments:
            dept = DEPARTMENTS[key]
            dept_id = f"dept-{short}-{key}"
            hs_id = f"hs-{short}-{key}"
            site.department_ids[key] = dept_id
            site.service_ids[key] = hs_id
            subject = coding(_SUBJECT_SYSTEM, dept.subject_code, dept.name)
            self.emit(f.slug, {
                "resourceType": "Organization",
                "id": dept_id,
                "identifier": [{"system": f"{SID}/department/{f.slug}", "value": key}],
                "active": True,
                "type": [
                    concept(f"{THO}/organization-type", "dept", "Hospital Department", "科室"),
                    {"coding": [subject], "text": dept.name},
                ],
                "name": dept.name,
                "telecom": [{"system": "phone", "value": _phone(self.rng), "use": "work"}],
                "partOf": ref("Organization", site.org_id, f.name),
            })
            service: dict = {
                "resourceType": "HealthcareService",
                "id": hs_id,
                "extension": [{"url": EXT_DEPARTMENT, "valueReference": ref("Organization", dept_id, dept.name)}],
                "active": True,
                "providedBy": ref("Organization", site.org_id, f.name),
                "category": [{"text": "门诊"}],
                "type": [{"coding": [subject], "text": dept.name}],
                "specialty": [{"coding": [subject], "text": dept.name}],
                "location": [ref("Location", site.location_id, f.name)],
                "name": f"{dept.name}门诊",
                "telecom": [{"system": "phone", "value": _phone(self.rng), "use": "work"}],
                "communication": [concept("urn:ietf:bcp:47", "zh-CN", "Chinese (China)", "中文（中国）")],
                "appointmentRequired": key not in ("emergency", "infectious"),
                "availableTime": self._opening_hours(key),
            }
            if dept.online:
                service["characteristic"] = [
                    concept(f"{CS}/service-characteristic", "online-follow-up", "互联网诊疗（复诊）", "互联网诊疗（复诊）")
                ]
            self.emit(f.slug, service)

    @staticmethod
    def _opening_hours(key: str) -> list[dict]:
        if key in ("emergency", "infectious"):
            return [{"allDay": True}]
        return [
            {"daysOfWeek": _WEEKDAYS, "availableStartTime": "08:00:00", "availableEndTime": "17:30:00"},
            {"daysOfWeek": ["sat"], "availableStartTime": "08:00:00", "availableEndTime": "12:00:00"},
        ]

    # -- staff ---------------------------------------------------------------------------
    def _staff(self, site: Site) -> None:
        for dept_key, profession, count in site.facility.staff:
            for i in range(count):
                staff = self._practitioner(site, dept_key, profession, head=i == 0)
                if profession == "doctor":
                    site.doctors.setdefault(dept_key, []).append(staff)
                elif profession == "nurse":
                    site.nurses.setdefault(dept_key, []).append(staff)
                else:
                    site.pharmacists.append(staff)

    def _title(self, site: Site, profession: str, head: bool) -> tuple[str, str, int, int]:
        options = TITLES[profession]
        if site.facility.kind != "hospital":
            options = options[1:]  # primary care and pharmacies have no chief titles here
        if head and profession == "doctor" and site.facility.kind == "hospital":
            # A department is headed by a chief physician in a tertiary hospital and by an
            # associate chief physician in a secondary one.
            senior = options[0] if site.facility.grade == "三级甲等" else options[1]
            return senior[0], senior[1], senior[3], senior[4]
        code, name, _, lo, hi = self.rng.choices(options, [o[2] for o in options])[0]
        return code, name, lo, hi

    def _practitioner(self, site: Site, dept_key: str | None, profession: str, head: bool) -> Staff:
        rng = self.rng
        self._staff_seq += 1
        seq = self._staff_seq
        f = site.facility
        female_share = {"doctor": 0.85 if dept_key == "obstetrics-gynaecology" else 0.5,
                        "nurse": 0.95, "pharmacist": 0.7}[profession]
        sex = "female" if rng.random() < female_share else "male"
        title_code, title_name, lo, hi = self._title(site, profession, head)
        age = rng.randint(lo, hi)
        born = date(REFERENCE_DATE.year - age, rng.randint(1, 12), rng.randint(1, 28))
        family, given = person_name(rng, sex, born.year)
        name = family + given
        first_licensed = min(born.year + 24 + rng.randint(0, 3), REFERENCE_DATE.year - 1)
        category = 2 if dept_key == "tcm" else 3 if dept_key == "stomatology" else 1
        profession_digit = {"doctor": 1, "nurse": 2, "pharmacist": 3}[profession]
        cert = practising_certificate(rng, profession_digit, category, f.county_code, first_licensed)
        pid, role_id = f"prac-{seq:03d}", f"role-{seq:03d}"
        cert_system = f"{SID}/practising-certificate/{profession}"
        practitioner = {
            "resourceType": "Practitioner",
            "id": pid,
            "identifier": [
                {"use": "official", "type": {"text": "执业证书编码"}, "system": cert_system, "value": cert},
                {"use": "usual", "type": {"text": "工号"}, "system": f"{SID}/staff/{f.slug}", "value": f"E{seq:04d}"},
            ],
            "active": True,
            "name": [{"use": "official", "text": name, "family": family, "given": [given]}],
            "telecom": [
                {"system": "phone", "value": mobile_number(rng), "use": "mobile"},
                {"system": "email", "value": f"e{seq:04d}@{f.slug}.yiyun.example.cn", "use": "work"},
            ],
            "gender": sex,
            "birthDate": born.isoformat(),
            "qualification": [{
                "identifier": [{"system": cert_system, "value": cert}],
                "code": {"coding": [coding(_TITLE_SYSTEM, title_code, title_name)], "text": title_name},
                "period": {"start": f"{first_licensed}-07-01"},
            }],
            "communication": [concept("urn:ietf:bcp:47", "zh-CN", "Chinese (China)", "中文（中国）")],
        }
        self.emit(f.slug, practitioner)
        role_code, role_display, role_text = PROFESSION_ROLE[profession]
        role: dict = {
            "resourceType": "PractitionerRole",
            "id": role_id,
            "active": True,
            "practitioner": ref("Practitioner", pid, name),
            "organization": ref("Organization", site.org_id, f.name),
            "code": [concept(f"{THO}/practitioner-role", role_code, role_display, role_text)],
        }
        if dept_key:
            dept = DEPARTMENTS[dept_key]
            role["specialty"] = [{"coding": [coding(_SUBJECT_SYSTEM, dept.subject_code, dept.name)], "text": dept.name}]
            role["location"] = [ref("Location", site.location_id, f.name)]
            role["healthcareService"] = [ref("HealthcareService", site.service_ids[dept_key], f"{dept.name}门诊")]
        else:
            role["specialty"] = [{"text": "药剂科" if f.kind != "pharmacy" else "药品零售"}]
            role["location"] = [ref("Location", site.location_id, f.name)]
        role["telecom"] = [{"system": "phone", "value": _phone(rng), "use": "work"}]
        if profession == "doctor":
            role["availableTime"] = [{"daysOfWeek": _WEEKDAYS, "availableStartTime": "08:00:00",
                                      "availableEndTime": "17:30:00"}]
        self.emit(f.slug, role)
        return Staff(pid, role_id, name, sex, profession, dept_key)
