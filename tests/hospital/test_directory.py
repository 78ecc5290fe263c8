"""The demo region's hospital services and the public directory on them: hospitals,
departments, doctors with fees and next free slots, search by name, department or disease,
fever clinics by distance."""

from __future__ import annotations

import pytest_asyncio

API = "/api/hospital/directory"
DIRECTORY_TYPES = ("Organization", "Location", "HealthcareService", "Practitioner", "PractitionerRole")


_regions: dict[str, tuple] = {}


@pytest_asyncio.fixture
async def region(engine, client, db_url):
    """The demo's organisations and staff (no patients) under tenant slugs of their own,
    then the hospital services; built once per database."""
    import uuid

    from yiyun.core.db import unit_of_work
    from yiyun.demo import generate_demo
    from yiyun.demo.hospital import create_demo_services
    from yiyun.fhir.model import RequestContext
    from yiyun.fhir.repository import FhirRepository
    from yiyun.hospital import catalogue
    from yiyun.identity.accounts import create_tenant

    if db_url not in _regions:
        prefix = f"r{uuid.uuid4().hex[:6]}-"
        data = generate_demo(patients=1)
        for t in data.tenants:
            t.slug = prefix + t.slug
        data.resources = [(prefix + t, r) for t, r in data.resources if r["resourceType"] in DIRECTORY_TYPES]
        async with unit_of_work(engine) as conn:
            for t in data.tenants:
                await create_tenant(conn, t.slug, name=t.name, kind=t.kind)
            for slug, r in data.resources:
                await FhirRepository(conn, RequestContext(tenant=slug)).update(r["resourceType"], r["id"], r)
        catalogue.invalidate()
        counts = await create_demo_services(engine, data)
        _regions[db_url] = (prefix, counts)
    catalogue.invalidate()
    return _regions[db_url]


async def test_demo_services_are_created(region):
    _, counts = region
    assert counts["schedules"] > 40
    assert counts["slots"] > 1000
    assert counts["fever_clinics"] == 4


async def test_hospitals_and_departments(client, region):
    r = await client.get(f"{API}/hospitals", headers={"Authorization": ""})  # public
    assert r.status_code == 200, r.text
    p, _ = region
    by_slug = {h["slug"]: h for h in r.json()["hospitals"]}
    assert {p + s for s in ("cs-central-hospital", "cs-childrens-hospital", "tianxin-district-hospital",
                            "wangyuehu-chc")} <= set(by_slug)
    central = by_slug[p + "cs-central-hospital"]
    assert central["grade"] == "三级甲等" and central["fever_clinic"] and central["online"]
    assert central["position"]["latitude"] > 27
    detail = (await client.get(f"{API}/hospitals/{p}cs-central-hospital")).json()
    names = {d["name"]: d for d in detail["departments"]}
    assert "呼吸内科" in names
    assert {t["code"] for t in names["呼吸内科"]["consultation_types"]} >= {"clinic", "online-text"}
    assert names["普通外科"]["consultation_types"] == [{"code": "clinic", "name": "门诊"}]  # no online follow-up
    assert (await client.get(f"{API}/hospitals/no-such")).status_code == 404
    assert (await client.get(f"{API}/hospitals/{p}cs-cdc")).status_code == 404


async def test_doctor_list_shows_fees_types_no_fake_ratings_and_next_slots(client, region):
    p, _ = region
    r = await client.get(f"{API}/hospitals/{p}cs-central-hospital/doctors", params={"department": "hs-central-respiratory"})
    assert r.status_code == 200, r.text
    doctors = r.json()["doctors"]
    assert len(doctors) == 2
    for doc in doctors:
        assert doc["department"] == "呼吸内科" and doc["title"] and doc["name"]
        assert doc["rating"] == {"count": 0, "score": None, "text": "暂无评价"}
        clinic = next(s for s in doc["services"] if s["type"] == "clinic")
        assert clinic["fee_fen"] in (1500, 2000, 3500, 5000)
        assert doc["next_slots"] and doc["next_slots"] == sorted(doc["next_slots"], key=lambda s: s["start"])
        assert doc["introduction"].startswith("呼吸内科")
    online = (await client.get(f"{API}/hospitals/{p}cs-central-hospital/doctors", params={"type": "online-video"})).json()
    assert online["doctors"] and all(any(s["type"] == "online-video" for s in d["services"]) for d in online["doctors"])
    assert all(s["type"] == "online-video" for d in online["doctors"] for s in d["next_slots"])
    one = doctors[0]
    detail = (await client.get(f"{API}/hospitals/{p}cs-central-hospital/doctors/{one['id']}", params={"days": 14})).json()
    assert len(detail["slots"]) >= len(detail["next_slots"]) > 0
    bad = await client.get(f"{API}/hospitals/{p}cs-central-hospital/doctors", params={"type": "house-call"})
    assert bad.status_code == 400


async def test_search_by_name_department_and_disease(client, region):
    p, _ = region
    by_dept = (await client.get(f"{API}/search", params={"q": "儿科"})).json()
    assert any(d["hospital"] == p + "cs-childrens-hospital" for d in by_dept["departments"])
    by_hospital = (await client.get(f"{API}/search", params={"q": "儿童医院"})).json()
    assert p + "cs-childrens-hospital" in [h["slug"] for h in by_hospital["hospitals"]]
    assert all("儿童医院" in h["name"] for h in by_hospital["hospitals"])
    diabetes = (await client.get(f"{API}/search", params={"q": "糖尿病"})).json()
    assert diabetes["disease"]["name"] == "2型糖尿病"
    depts = {(d["hospital"], d["name"]) for d in diabetes["departments"]}
    assert (p + "cs-central-hospital", "内分泌科") in depts
    assert (p + "wangyuehu-chc", "全科医疗科") in depts
    assert diabetes["doctors"]
    assert (await client.get(f"{API}/search", params={"q": ""})).status_code == 422


async def test_fever_clinics_nearest_first(client, region):
    p, _ = region
    # a point beside the children's hospital's district centre
    r = await client.get(f"{API}/fever-clinics", params={"lat": 28.20, "lon": 113.03})
    assert r.status_code == 200, r.text
    everywhere = r.json()["clinics"]
    clinics = [c for c in everywhere if c["hospital"].startswith(p)]
    assert len(clinics) == 4
    distances = [c["distance_km"] for c in everywhere]
    assert distances == sorted(distances) and all(d is not None for d in distances)
    central = next(c for c in clinics if c["hospital"] == p + "cs-central-hospital")
    assert central["all_day"] and central["opening_hours"] == ["24小时"]
    chc = next(c for c in clinics if c["hospital"] == p + "wangyuehu-chc")
    assert not chc["all_day"] and "08:00–17:30" in chc["opening_hours"][0]
    assert (await client.get(f"{API}/fever-clinics", params={"lat": 95, "lon": 0})).status_code == 400
    assert (await client.get(f"{API}/fever-clinics", params={"lat": 28})).status_code == 400
    unsorted = (await client.get(f"{API}/fever-clinics")).json()["clinics"]
    assert len(unsorted) == len(everywhere) and all(c["distance_km"] is None for c in unsorted)


async def test_patient_books_at_another_hospital_and_gets_a_record_there(client, region):
    """A patient of the community centre books at the central hospital: a Patient record is
    made there from their own, matched on the resident identity number."""
    from tests.conftest import auth_headers

    p, _ = region
    home = p + "wangyuehu-chc"
    central = p + "cs-central-hospital"
    patient = {"resourceType": "Patient", "id": "pat-home", "active": True, "name": [{"text": "刘一"}],
               "gender": "female", "birthDate": "1960-05-01",
               "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "430104196005010024"}]}
    system = auth_headers(home)
    assert (await client.put("/fhir/R4/Patient/pat-home", json=patient, headers=system)).status_code == 201
    headers = auth_headers(home, scope="patient/*.cruds", subject="user:liu", roles=("patient",), patient="pat-home")
    doctors = (await client.get(f"{API}/hospitals/{central}/doctors",
                                params={"department": "hs-central-cardiology"})).json()["doctors"]
    slot = doctors[0]["next_slots"][0]
    r = await client.post("/api/hospital/appointments", json={"hospital": central, "slot": slot["id"]},
                          headers=headers)
    assert r.status_code == 201, r.text
    booked = r.json()
    assert booked["hospital"] == central and booked["patient"] != "pat-home"
    there = (await client.get(f"/fhir/R4/Patient/{booked['patient']}",
                              headers=auth_headers(central))).json()
    assert there["name"][0]["text"] == "刘一" and there["identifier"][0]["value"] == "430104196005010024"
    free = (await client.get(f"{API}/hospitals/{central}/slots",
                             params={"schedule": slot["schedule"], "days": 14})).json()["slots"]
    assert slot["id"] not in {s["id"] for s in free}
