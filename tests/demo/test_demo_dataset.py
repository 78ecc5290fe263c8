"""What the demo data set promises: counts, identifiers, references, codes, places, values."""

import csv
import re
from collections import Counter, defaultdict
from datetime import date, datetime

import pytest

from yiyun.core import resident_id
from yiyun.demo import REFERENCE_DATE
from yiyun.demo.catalogue import DRUG_CATALOGUE_SYSTEM, REGION
from yiyun.demo.reference import ICD10_CLINICAL_SYSTEM, counties

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INSTANT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+08:00$")
RESIDENT_ID_OID = "urn:oid:2.16.156.10011.1.3"
CHANGSHA_COUNTIES = {c.code for c in counties("4301")}


def of_type(demo, resource_type):
    return [r for _, r in demo.resources if r["resourceType"] == resource_type]


def walk(value, path=""):
    """Yield (path, key, value) for every key in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, path)


# ---- tenants and counts ---------------------------------------------------------------

def test_tenants_are_three_hospitals_a_clinic_a_pharmacy_and_the_cdc(demo, by_id):
    kinds = Counter(t.kind for t in demo.tenants)
    assert kinds == {"hospital": 3, "clinic": 1, "pharmacy": 1, "cdc": 1}
    assert len({t.slug for t in demo.tenants}) == 6
    for tenant in demo.tenants:
        slug, org = by_id[("Organization", tenant.organization_id)]
        assert slug == tenant.slug and org["name"] == tenant.name
        assert "partOf" not in org


def test_counts(demo):
    counts = demo.counts()
    orgs = of_type(demo, "Organization")
    departments = [o for o in orgs if "partOf" in o]
    assert len(orgs) - len(departments) == 6
    assert len(departments) == 20
    assert counts["HealthcareService"] == 20
    assert counts["Practitioner"] == 60
    assert counts["PractitionerRole"] == 60
    assert counts["Patient"] == 2000
    assert counts["Location"] == 6
    assert 20_000 <= sum(counts.values()) <= 50_000
    for clinical in ("Encounter", "Condition", "Observation", "MedicationRequest"):
        assert counts[clinical] > 1000


def test_cdc_and_pharmacy_have_no_patients(demo):
    patient_tenants = {slug for slug, r in demo.resources if r["resourceType"] == "Patient"}
    kinds = {t.slug: t.kind for t in demo.tenants}
    assert {kinds[s] for s in patient_tenants} == {"hospital", "clinic"}


def test_every_department_has_a_service_and_staff(demo):
    departments = {o["id"] for o in of_type(demo, "Organization") if "partOf" in o}
    for dept in departments:
        assert any(o["type"][0]["coding"][0]["code"] == "dept" for o in of_type(demo, "Organization")
                   if o["id"] == dept)
    served = {hs["extension"][0]["valueReference"]["reference"].split("/")[1]
              for hs in of_type(demo, "HealthcareService")}
    assert served == departments
    roles = of_type(demo, "PractitionerRole")
    services_with_staff = {s["reference"] for r in roles for s in r.get("healthcareService", [])}
    assert len(services_with_staff) == 20
    codes = Counter(r["code"][0]["coding"][0]["code"] for r in roles)
    assert set(codes) == {"doctor", "nurse", "pharmacist"}
    assert codes["pharmacist"] >= 5 and codes["nurse"] >= 10


def test_practitioners_have_certificate_and_title(demo):
    titles = Counter()
    for p in of_type(demo, "Practitioner"):
        cert = p["identifier"][0]["value"]
        assert re.fullmatch(r"\d{15}", cert)
        assert cert[2:8] in CHANGSHA_COUNTIES
        titles[p["qualification"][0]["code"]["text"]] += 1
        assert p["gender"] in ("male", "female") and DATE_RE.match(p["birthDate"])
        assert re.fullmatch(r"1[3-9]\d{9}", p["telecom"][0]["value"])
    assert {"主任医师", "副主任医师", "主治医师", "住院医师"} <= set(titles)
    assert titles.keys() & {"药师", "主管药师"} and titles.keys() & {"护士", "护师", "主管护师"}


# ---- patients ------------------------------------------------------------------------------

def test_resident_ids_are_valid_unique_and_match_sex_and_birth_date(demo):
    seen = set()
    for p in of_type(demo, "Patient"):
        ident = next(i for i in p["identifier"] if i["system"] == RESIDENT_ID_OID)
        number = ident["value"]
        assert resident_id.is_valid(number, today=REFERENCE_DATE), number
        area, born, sex = resident_id.parse(number)
        assert area in CHANGSHA_COUNTIES
        assert born.isoformat() == p["birthDate"]
        assert sex == p["gender"]
        assert number not in seen
        seen.add(number)
    assert len(seen) == 2000


def test_patients_look_like_a_real_population(demo):
    patients = of_type(demo, "Patient")
    ages = [REFERENCE_DATE.year - int(p["birthDate"][:4]) for p in patients]
    children = sum(a < 14 for a in ages) / len(ages)
    elderly = sum(a >= 60 for a in ages) / len(ages)
    assert 0.12 < children < 0.35 and 0.18 < elderly < 0.45
    sexes = Counter(p["gender"] for p in patients)
    assert 0.4 < sexes["male"] / len(patients) < 0.6
    surnames = Counter(p["name"][0]["family"] for p in patients)
    assert {s for s, _ in surnames.most_common(5)} & {"王", "李", "张", "刘", "陈"}
    phones = [p["telecom"][0]["value"] for p in patients]
    assert all(re.fullmatch(r"1[3-9]\d{9}", ph) for ph in phones)
    assert len(set(phones)) == len(phones)
    for p in patients:
        given = p["name"][0]["given"][0]
        assert 1 <= len(given) <= 2
        assert p["name"][0]["text"] == p["name"][0]["family"] + given
        assert p["communication"][0]["language"]["coding"][0]["code"] == "zh-CN"
        assert p["maritalStatus"]["coding"][0]["code"] in {"M", "S", "W", "D"}


def test_patient_addresses_use_real_divisions(demo, shared_data):
    with open(shared_data / "geo" / "admin-divisions-2023" / "streets.csv", encoding="utf-8") as f:
        townships = {r["code"]: r for r in csv.DictReader(f)}
    for p in of_type(demo, "Patient"):
        addr = p["address"][0]
        ext = {e["url"].rsplit("/", 1)[1]: e["valueCode"] for e in addr["extension"]}
        county, township = ext["county-code"], ext["township-code"]
        assert county in CHANGSHA_COUNTIES
        assert townships[township]["areaCode"] == county
        assert townships[township]["name"] == addr["line"][0]
        assert addr["state"] == "湖南省" and addr["city"] == "长沙市"
        assert addr["text"].startswith("湖南省长沙市" + addr["district"] + addr["line"][0])
        assert re.search(r"\d+号", addr["text"])


# ---- references, ids, dates ---------------------------------------------------------------

def test_ids_are_unique_and_url_safe(demo):
    keys = [(r["resourceType"], r["id"]) for _, r in demo.resources]
    assert len(keys) == len(set(keys))
    assert all(ID_RE.match(rid) for _, rid in keys)
    assert len({rid for _, rid in keys}) == len(keys)  # unique across types as well


def test_every_reference_resolves_inside_its_own_tenant(demo, by_id):
    """Relative references only, and never across tenants, so each tenant loads on its own."""
    count = 0
    for slug, resource in demo.resources:
        for _, key, value in walk(resource):
            if key != "reference":
                continue
            count += 1
            rtype, _, rid = value.partition("/")
            assert (rtype, rid) in by_id, value
            assert by_id[(rtype, rid)][0] == slug, (resource["id"], value)
    assert count > 50_000


def test_dates_and_instants_are_well_formed_and_before_the_reference_date(demo):
    cutoff = datetime.fromisoformat(f"{REFERENCE_DATE.isoformat()}T00:00:00+08:00")
    date_keys = {"birthDate", "onsetDateTime", "abatementDateTime", "start", "end"}
    instant_keys = {"effectiveDateTime", "issued", "recordedDate", "authoredOn"}
    for _, resource in demo.resources:
        for path, key, value in walk(resource):
            encounter_period = resource["resourceType"] == "Encounter" and path.endswith("period")
            if key in instant_keys or (key in ("start", "end") and encounter_period):
                assert INSTANT_RE.match(value), (resource["id"], key, value)
                assert datetime.fromisoformat(value) < cutoff, (resource["id"], key, value)
            elif key in date_keys and isinstance(value, str):
                assert DATE_RE.match(value) or INSTANT_RE.match(value), (resource["id"], key, value)
                if key in ("birthDate", "onsetDateTime", "abatementDateTime"):
                    assert date.fromisoformat(value[:10]) < REFERENCE_DATE


def test_resources_are_valid_fhir_r4(demo):
    validation = pytest.importorskip("yiyun.fhir.validation")
    problems = []
    for _, resource in demo.resources:
        for issue in validation.validate_resource(resource):
            if issue.severity in ("error", "fatal"):
                problems.append((resource["id"], issue.diagnostics, issue.expression))
    assert problems[:10] == []


# ---- places --------------------------------------------------------------------------------

def test_locations_lie_in_the_region_near_their_district(demo):
    west, south, east, north = REGION.bbox
    for loc in of_type(demo, "Location"):
        pos = loc["position"]
        assert west <= pos["longitude"] <= east and south <= pos["latitude"] <= north
        assert loc["managingOrganization"]["reference"].startswith("Organization/org-")
        assert loc["address"]["extension"][0]["valueCode"] in CHANGSHA_COUNTIES


def test_location_positions_are_wgs84_not_gcj02(demo, shared_data):
    """Positions sit within the jitter of the converted centre, not of the GCJ-02 one."""
    from yiyun.demo.geo import gcj02_to_wgs84

    with open(shared_data / "geo" / "adcode-coords" / "adcodes.csv", encoding="utf-8", newline="") as f:
        centres = {r["adcode"][:6]: (float(r["longitude"]), float(r["latitude"]))
                   for r in csv.DictReader(f) if r["longitude"]}
    centres["430182"] = centres["430124"]
    for loc in of_type(demo, "Location"):
        county = loc["address"]["extension"][0]["valueCode"]
        lon, lat = gcj02_to_wgs84(*centres[county])
        pos = loc["position"]
        assert abs(pos["longitude"] - lon) <= 0.0151 and abs(pos["latitude"] - lat) <= 0.0121


# ---- clinical content ----------------------------------------------------------------------

def test_every_diagnosis_is_in_the_national_clinical_edition(demo, shared_data):
    with open(shared_data / "codes" / "icd10-clinical-v2" / "icd10_clinical_v2.csv", encoding="utf-8") as f:
        icd = {r["code"].strip(): r["name"].strip() for r in csv.DictReader(f)}
    used = Counter()
    for cond in of_type(demo, "Condition"):
        coding = cond["code"]["coding"][0]
        assert coding["system"] == ICD10_CLINICAL_SYSTEM
        assert icd[coding["code"]] == coding["display"] == cond["code"]["text"]
        used[coding["code"]] += 1
        assert cond["clinicalStatus"]["coding"][0]["code"] in ("active", "resolved")
        if "abatementDateTime" in cond:
            assert cond["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert len(used) >= 50
    assert used.most_common(1)[0][0] in {"I10.x09", "J06.900", "Z00.001"}


def test_encounters(demo, by_id):
    classes = Counter()
    for enc in of_type(demo, "Encounter"):
        classes[enc["class"]["code"]] += 1
        assert enc["participant"][0]["individual"]["reference"].startswith("Practitioner/")
        assert enc["reasonReference"]
        provider = by_id[("Organization", enc["serviceProvider"]["reference"].split("/")[1])][1]
        assert provider["type"][1]["coding"][0]["code"] in ("hospital", "clinic")
        if enc["status"] == "finished":
            assert enc["period"]["end"] > enc["period"]["start"]
        else:
            assert enc["status"] == "in-progress" and "end" not in enc["period"]
    assert {"AMB", "IMP", "VR"} <= set(classes)


def test_virtual_encounters_are_follow_ups_of_known_conditions(demo, by_id):
    for enc in of_type(demo, "Encounter"):
        if enc["class"]["code"] != "VR":
            continue
        for reason in enc["reasonReference"]:
            cond = by_id[("Condition", reason["reference"].split("/")[1])][1]
            assert cond["encounter"]["reference"] != f"Encounter/{enc['id']}"


def test_chronic_prescriptions(demo):
    requests = of_type(demo, "MedicationRequest")
    statuses = Counter(m["status"] for m in requests)
    assert statuses["active"] > 100 and statuses["completed"] > 1000
    for m in requests:
        coding = m["medicationCodeableConcept"]["coding"][0]
        assert coding["system"] == DRUG_CATALOGUE_SYSTEM
        supply = m["dispenseRequest"]["expectedSupplyDuration"]
        assert supply["code"] == "d" and 1 <= supply["value"] <= 28
        dosage = m["dosageInstruction"][0]
        assert dosage["text"] and dosage["timing"]["repeat"]
        assert m["dispenseRequest"]["quantity"]["value"] >= 1
    continuous = [m for m in requests if m["courseOfTherapyType"]["coding"][0]["code"] == "continuous"]
    assert len(continuous) > 1000


LIMITS = {
    # LOINC: (lowest, highest) physiologically plausible value in the unit used
    "8867-4": (40, 210), "8310-5": (35.5, 41.0), "9279-1": (8, 70), "59408-5": (80, 100),
    "29463-7": (2.0, 160), "8302-2": (45, 200), "39156-5": (14, 45), "14771-0": (3.0, 25),
    "4548-4": (3.5, 15), "14647-2": (2.0, 10), "14927-8": (0.2, 10), "22748-8": (0.5, 7),
    "14646-4": (0.4, 3), "1742-6": (3, 400), "14682-9": (20, 600), "62238-1": (10, 160),
    "14933-6": (100, 800), "6690-2": (1.5, 30), "718-7": (50, 200), "1988-5": (0, 250), "3016-3": (0.05, 25),
}


def test_observation_values_are_plausible(demo):
    seen = Counter()
    for obs in of_type(demo, "Observation"):
        code = obs["code"]["coding"][0]["code"]
        seen[code] += 1
        assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
        assert obs["category"][0]["coding"][0]["code"] in ("vital-signs", "laboratory")
        if code == "85354-9":
            sbp, dbp = (c["valueQuantity"]["value"] for c in obs["component"])
            assert 80 <= sbp <= 220 and 40 <= dbp <= 130 and dbp < sbp
            continue
        quantity = obs["valueQuantity"]
        assert quantity["system"] == "http://unitsofmeasure.org"
        lo, hi = LIMITS[code]
        assert lo <= quantity["value"] <= hi, (code, quantity)
        for rr in obs.get("referenceRange", []):
            flag = obs["interpretation"][0]["coding"][0]["code"]
            value = quantity["value"]
            if "high" in rr and value > rr["high"]["value"]:
                assert flag == "H"
            elif "low" in rr and value < rr["low"]["value"]:
                assert flag == "L"
            else:
                assert flag == "N"
    for required in ("85354-9", "8867-4", "8310-5", "29463-7", "8302-2", "39156-5", "4548-4", "14647-2"):
        assert seen[required] > 0, required


def _patient_values(demo, code):
    values = defaultdict(list)
    for obs in of_type(demo, "Observation"):
        if obs["code"]["coding"][0]["code"] == code:
            pid = obs["subject"]["reference"].split("/")[1]
            if code == "85354-9":
                values[pid].append(obs["component"][0]["valueQuantity"]["value"])
            else:
                values[pid].append(obs["valueQuantity"]["value"])
    return values


def _patients_with(demo, icd_code):
    return {c["subject"]["reference"].split("/")[1] for c in of_type(demo, "Condition")
            if c["code"]["coding"][0]["code"] == icd_code}


def _mean(values):
    return sum(values) / len(values)


def test_values_agree_with_diagnoses(demo):
    diabetic = _patients_with(demo, "E11.900")
    hba1c = _patient_values(demo, "4548-4")
    with_dm = [v for p, vs in hba1c.items() if p in diabetic for v in vs]
    without = [v for p, vs in hba1c.items() if p not in diabetic for v in vs]
    assert with_dm and _mean(with_dm) > 6.5
    assert all(v < 6.5 for v in without)
    glucose = _patient_values(demo, "14771-0")
    assert all(v < 7.0 for p, vs in glucose.items() if p not in diabetic for v in vs)

    hypertensive = _patients_with(demo, "I10.x09")
    sbp = _patient_values(demo, "85354-9")
    high = [v for p, vs in sbp.items() if p in hypertensive for v in vs]
    normal = [v for p, vs in sbp.items() if p not in hypertensive for v in vs]
    assert _mean(high) > _mean(normal) + 10

    ckd = _patients_with(demo, "N18.803")
    egfr = _patient_values(demo, "62238-1")
    ckd_values = [v for p, vs in egfr.items() if p in ckd for v in vs]
    assert ckd_values and _mean(ckd_values) < 60

    febrile = Counter()
    for obs in of_type(demo, "Observation"):
        if obs["code"]["coding"][0]["code"] == "8310-5":
            febrile[obs["interpretation"][0]["coding"][0]["code"]] += 1
    assert febrile["H"] > 200 and febrile["N"] > 200


def test_prescriptions_match_their_diagnosis(demo, by_id):
    expected = {"I10.x09": {"D0101", "D0102", "D0103", "D0104", "D0107"}, "E11.900": {"D0201", "D0202", "D0203", "D0204"}}
    for m in of_type(demo, "MedicationRequest"):
        cond = by_id[("Condition", m["reasonReference"][0]["reference"].split("/")[1])][1]
        icd = cond["code"]["coding"][0]["code"]
        if icd in expected:
            assert m["medicationCodeableConcept"]["coding"][0]["code"] in expected[icd]
        assert m["subject"] == {"reference": cond["subject"]["reference"]}
