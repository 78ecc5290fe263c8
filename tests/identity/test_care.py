"""Care relationships decide what a doctor or nurse sees; guardians see their wards; searches,
includes, history and transactions follow the same rule; a hidden record looks missing and is
audited as refused. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import auth_headers
from tests.identity.conftest import make

FHIR = "/fhir/R4"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def doctor(tenant, who="dr1", role="doctor"):
    return auth_headers(tenant, "user/*.cruds", roles=(role,), subject=f"staff:{who}", fhir_user=f"Practitioner/{who}")


def patient(family="张"):
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["三"]}], "gender": "male"}


def obs(pid):
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}, "valueQuantity": {"value": 70}}


def relationship(kind: str, pid: str, who: str = "dr1") -> dict:
    p, d = {"reference": f"Patient/{pid}"}, {"reference": f"Practitioner/{who}"}
    return {
        "encounter": {"resourceType": "Encounter", "status": "in-progress", "class": {"system": ACT, "code": "AMB"},
                      "subject": p, "participant": [{"individual": d}]},
        "appointment": {"resourceType": "Appointment", "status": "booked",
                        "participant": [{"actor": p, "status": "accepted"}, {"actor": d, "status": "accepted"}]},
        "care-team": {"resourceType": "CareTeam", "status": "active", "subject": p, "participant": [{"member": d}]},
        "referral": {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": p,
                     "performer": [d], "code": {"text": "心内科会诊"}},
        "episode": {"resourceType": "EpisodeOfCare", "status": "active", "patient": p, "careManager": d},
    }[kind]


def ids(bundle: dict) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []))


@pytest.mark.parametrize("kind", ["encounter", "appointment", "care-team", "referral", "episode"])
async def test_each_kind_of_relationship_opens_the_patient(c, tenant, kind):
    p = await make(c, tenant, patient())
    o = await make(c, tenant, obs(p["id"]))
    h = doctor(tenant)
    assert (await c.get(f"{FHIR}/Observation/{o['id']}", headers=h)).status_code == 404
    rel = await make(c, tenant, relationship(kind, p["id"]))
    assert (await c.get(f"{FHIR}/Observation/{o['id']}", headers=h)).status_code == 200
    assert (await c.get(f"{FHIR}/Patient/{p['id']}", headers=h)).status_code == 200
    # another doctor of the same hospital still sees nothing
    assert (await c.get(f"{FHIR}/Observation/{o['id']}", headers=doctor(tenant, "dr2"))).status_code == 404
    # the relationship ends when its resource is entered in error: from the next request on
    await c.put(f"{FHIR}/{rel['resourceType']}/{rel['id']}", json={**rel, "status": "entered-in-error"},
                headers=auth_headers(tenant))
    assert (await c.get(f"{FHIR}/Observation/{o['id']}", headers=h)).status_code == 404


async def test_a_cancelled_appointment_is_no_relationship(c, tenant):
    p = await make(c, tenant, patient())
    await make(c, tenant, {**relationship("appointment", p["id"]), "status": "cancelled"})
    assert (await c.get(f"{FHIR}/Patient/{p['id']}", headers=doctor(tenant))).status_code == 404


async def test_searches_includes_and_history_are_filtered_by_relationship(c, tenant):
    mine, other = await make(c, tenant, patient("张")), await make(c, tenant, patient("王"))
    await make(c, tenant, relationship("encounter", mine["id"]))
    o1, o2 = await make(c, tenant, obs(mine["id"])), await make(c, tenant, obs(other["id"]))
    h = doctor(tenant)
    assert ids((await c.get(f"{FHIR}/Observation", headers=h)).json()) == [o1["id"]]
    assert ids((await c.get(f"{FHIR}/Patient", headers=h)).json()) == [mine["id"]]
    probe = await c.get(f"{FHIR}/Observation", params={"subject": f"Patient/{other['id']}"}, headers=h)
    assert ids(probe.json()) == []
    chained = await c.get(f"{FHIR}/Observation", params={"subject:Patient.family": "王"}, headers=h)
    assert ids(chained.json()) == []
    inc = await c.get(f"{FHIR}/Observation", params={"_include": "Observation:subject"}, headers=h)
    assert ids(inc.json()) == sorted([o1["id"], mine["id"]])
    rev = await c.get(f"{FHIR}/Patient", params={"_revinclude": "Observation:subject", "_id": other["id"]}, headers=h)
    assert ids(rev.json()) == []
    every = (await c.get(FHIR, params={"_type": "Patient,Observation"}, headers=h)).json()
    assert ids(every) == sorted([o1["id"], mine["id"]])
    hist = (await c.get(f"{FHIR}/Observation/_history", headers=h)).json()
    assert [e["resource"]["id"] for e in hist.get("entry", [])] == [o1["id"]]
    assert o2["id"] not in str((await c.get(f"{FHIR}/_history", headers=h)).json())
    assert (await c.get(f"{FHIR}/Observation/{o2['id']}/_history", headers=h)).status_code == 404


async def test_writes_stay_within_the_relationship(c, tenant):
    mine, other = await make(c, tenant, patient("张")), await make(c, tenant, patient("王"))
    await make(c, tenant, relationship("encounter", mine["id"]))
    h = doctor(tenant, "dr1", "nurse")
    assert (await c.post(f"{FHIR}/Observation", json=obs(mine["id"]), headers=h)).status_code == 201
    assert (await c.post(f"{FHIR}/Observation", json=obs(other["id"]), headers=h)).status_code == 403
    # a practitioner cannot open a relationship by writing themselves into an encounter
    assert (await c.post(f"{FHIR}/Encounter", json=relationship("encounter", other["id"]), headers=h)).status_code == 403
    theirs = await make(c, tenant, obs(other["id"]))
    moved = {**theirs, "subject": {"reference": f"Patient/{mine['id']}"}}
    assert (await c.put(f"{FHIR}/Observation/{theirs['id']}", json=moved, headers=h)).status_code == 404
    # nor through a transaction Bundle
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": moved, "request": {"method": "PUT", "url": f"Observation/{theirs['id']}"}}]}
    assert (await c.post(FHIR, json=tx, headers=h)).status_code == 404
    after = await c.get(f"{FHIR}/Observation/{theirs['id']}", headers=auth_headers(tenant))
    assert after.json()["subject"]["reference"] == f"Patient/{other['id']}"
    # deleting a record out of reach answers like deleting a missing one, and deletes nothing
    assert (await c.delete(f"{FHIR}/Observation/{theirs['id']}", headers=h)).status_code in (200, 204)
    assert (await c.get(f"{FHIR}/Observation/{theirs['id']}", headers=auth_headers(tenant))).status_code == 200


async def test_a_hidden_record_looks_missing_and_is_audited_as_refused(app, c, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query

    p = await make(c, tenant, patient())
    o = await make(c, tenant, obs(p["id"]))
    h = doctor(tenant)
    hidden = await c.get(f"{FHIR}/Observation/{o['id']}", headers=h)
    missing = await c.get(f"{FHIR}/Observation/no-such-id", headers=h)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"]
    await app.state.policy.recorder.flush()
    async with unit_of_work(engine, write=False) as conn:
        records = await query(conn, tenant=tenant, actor="staff:dr1", limit=20)
    outcome = {(r.resource_id, r.outcome) for r in records}
    assert (o["id"], "denied") in outcome and (o["id"], "not-found") not in outcome
    assert ("no-such-id", "not-found") in outcome


async def test_roles_without_clinical_reach(c, tenant):
    p = await make(c, tenant, patient())
    o = await make(c, tenant, obs(p["id"]))
    await make(c, tenant, relationship("encounter", p["id"], "ad1"))
    org = await make(c, tenant, {"resourceType": "Organization", "name": "市医院"})
    for role, org_status, obs_status, patient_status in (
        ("auditor", 403, 403, 403), ("cdc-officer", 200, 403, 403), ("admin", 200, 403, 200),
        ("privacy-officer", 200, 403, 403), ("regional-admin", 200, 403, 403),
    ):
        h = doctor(tenant, "ad1", role)  # even named in an encounter: the role decides
        assert (await c.get(f"{FHIR}/Organization/{org['id']}", headers=h)).status_code == org_status, role
        assert (await c.get(f"{FHIR}/Observation/{o['id']}", headers=h)).status_code == obs_status, role
        assert (await c.get(f"{FHIR}/Patient/{p['id']}", headers=h)).status_code == patient_status, role


async def test_guardians_see_their_wards_until_the_guardianship_ends(c, tenant):
    parent, child, stranger = [await make(c, tenant, patient(n)) for n in ("母", "子", "外")]
    co = await make(c, tenant, obs(child["id"]))
    so = await make(c, tenant, obs(stranger["id"]))
    rp = await make(c, tenant, {
        "resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{child['id']}"},
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH"}]}]})
    h = auth_headers(tenant, "patient/*.cruds", patient=parent["id"], roles=("patient",))
    assert (await c.get(f"{FHIR}/Observation/{co['id']}", headers=h)).status_code == 404
    # the guardian's own token may not claim a RelatedPerson
    claim = {**parent, "link": [{"other": {"reference": f"RelatedPerson/{rp['id']}"}, "type": "seealso"}]}
    assert (await c.put(f"{FHIR}/Patient/{parent['id']}", json=claim, headers=h)).status_code == 403
    # registration staff record it
    r = await c.put(f"{FHIR}/Patient/{parent['id']}", json=claim, headers=auth_headers(tenant))
    assert r.status_code == 200
    assert (await c.get(f"{FHIR}/Observation/{co['id']}", headers=h)).status_code == 200
    assert ids((await c.get(f"{FHIR}/Observation", headers=h)).json()) == [co["id"]]
    assert (await c.get(f"{FHIR}/Observation/{so['id']}", headers=h)).status_code == 404
    assert (await c.post(f"{FHIR}/Observation", json=obs(child["id"]), headers=h)).status_code == 201
    # the guardian may still update their own record with the link unchanged
    assert (await c.put(f"{FHIR}/Patient/{parent['id']}", json={**claim, "gender": "female"}, headers=h)).status_code == 200
    # a RelatedPerson marked inactive ends it at once
    await c.put(f"{FHIR}/RelatedPerson/{rp['id']}", json={**rp, "active": False}, headers=auth_headers(tenant))
    assert (await c.get(f"{FHIR}/Observation/{co['id']}", headers=h)).status_code == 404


def _years_before(today, years: int):
    import calendar
    from datetime import date

    year = today.year - years
    return date(year, today.month, min(today.day, calendar.monthrange(year, today.month)[1]))


async def test_guardianship_of_a_minor_ends_at_eighteen(c, tenant):
    """《民法典》第十七条: 18 and over is an adult; a court-declared adult guardianship stays;
    an unknown or partial birthDate that could still be a minor's keeps the link."""
    from datetime import timedelta

    from yiyun.identity.care import ADULT_GUARDIAN_CODE, GUARDIANSHIP_SYSTEM, today_local

    today = today_local()
    eighteen = _years_before(today, 18)
    born = {
        "minor": (eighteen + timedelta(days=1)).isoformat(),  # 18 tomorrow
        "adult": eighteen.isoformat(),  # 18 today
        "unknown": None,
        "year-maybe-minor": str(today.year - 18),  # could have been born in December
        "year-adult": str(today.year - 19),
        "incapacitated": _years_before(today, 30).isoformat(),
    }
    parent = await make(c, tenant, patient("母"))
    links, records = [], {}
    for name, birth in born.items():
        ward = await make(c, tenant, {**patient("子"), **({"birthDate": birth} if birth else {})})
        codes = [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD" if name ==
                  "incapacitated" else "MTH"}]
        if name == "incapacitated":
            codes.append({"system": GUARDIANSHIP_SYSTEM, "code": ADULT_GUARDIAN_CODE})
        rp = await make(c, tenant, {"resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{ward['id']}"},
                                    "relationship": [{"coding": codes}]})
        links.append({"other": {"reference": f"RelatedPerson/{rp['id']}"}, "type": "seealso"})
        records[name] = (ward, await make(c, tenant, obs(ward["id"])))
    assert (await c.put(f"{FHIR}/Patient/{parent['id']}", json={**parent, "link": links},
                        headers=auth_headers(tenant))).status_code == 200
    h = auth_headers(tenant, "patient/*.rs", patient=parent["id"], roles=("patient",))
    seen = {name for name, (_, o) in records.items()
            if (await c.get(f"{FHIR}/Observation/{o['id']}", headers=h)).status_code == 200}
    assert seen == {"minor", "unknown", "year-maybe-minor", "incapacitated"}
    found = ids((await c.get(f"{FHIR}/Observation", headers=h)).json())
    assert found == sorted(records[n][1]["id"] for n in seen)
    # a birthDate recorded later that shows 18 years ends the link at the next request
    ward, o = records["unknown"]
    assert (await c.put(f"{FHIR}/Patient/{ward['id']}", json={**ward, "birthDate": "2000-01-01"},
                        headers=auth_headers(tenant))).status_code == 200
    assert (await c.get(f"{FHIR}/Observation/{o['id']}", headers=h)).status_code == 404


def test_coming_of_age_by_the_calendar():
    from datetime import date, datetime, timezone

    from yiyun.identity.care import adults_born_before

    def first_minor_birthday(today):
        return datetime.fromtimestamp(adults_born_before(today), timezone.utc).date()

    assert first_minor_birthday(date(2026, 11, 25)) == date(2008, 11, 26)
    # born 29 February 2008: still 17 on 28 February 2026, 18 on 1 March
    assert first_minor_birthday(date(2026, 2, 28)) == date(2008, 2, 29)
    assert first_minor_birthday(date(2026, 3, 1)) == date(2008, 3, 2)
    # 29 February 2028: born 28 February 2010 is 18
    assert first_minor_birthday(date(2028, 2, 29)) == date(2010, 3, 1)


async def test_pharmacists_see_current_prescriptions_only(c, tenant):
    p, q = await make(c, tenant, patient("张")), await make(c, tenant, patient("王"))
    mr = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
          "medicationCodeableConcept": {"text": "二甲双胍片"}, "subject": {"reference": f"Patient/{p['id']}"}}
    active = await make(c, tenant, mr)
    done = await make(c, tenant, {**mr, "status": "completed", "subject": {"reference": f"Patient/{q['id']}"}})
    o = await make(c, tenant, obs(p["id"]))
    h = doctor(tenant, "ph1", "pharmacist")
    assert (await c.get(f"{FHIR}/MedicationRequest/{active['id']}", headers=h)).status_code == 200
    assert (await c.get(f"{FHIR}/Patient/{p['id']}", headers=h)).status_code == 200
    assert (await c.get(f"{FHIR}/MedicationRequest/{done['id']}", headers=h)).status_code == 404
    assert (await c.get(f"{FHIR}/Observation/{o['id']}", headers=h)).status_code == 403
    dispense = {"resourceType": "MedicationDispense", "status": "completed",
                "medicationCodeableConcept": {"text": "二甲双胍片"}, "subject": {"reference": f"Patient/{p['id']}"},
                "authorizingPrescription": [{"reference": f"MedicationRequest/{active['id']}"}]}
    assert (await c.post(f"{FHIR}/MedicationDispense", json=dispense, headers=h)).status_code == 201
    assert (await c.post(f"{FHIR}/MedicationRequest", json=mr, headers=h)).status_code == 403


async def test_staff_reads_name_the_patient_in_the_audit_log(app, c, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query

    p, q = await make(c, tenant, patient("张")), await make(c, tenant, patient("王"))
    await make(c, tenant, relationship("encounter", p["id"]))
    mine, theirs = await make(c, tenant, obs(p["id"])), await make(c, tenant, obs(q["id"]))
    h = doctor(tenant)
    assert (await c.get(f"{FHIR}/Observation/{mine['id']}", headers=h)).status_code == 200
    assert (await c.get(f"{FHIR}/Observation/{theirs['id']}", headers=h)).status_code == 404
    await app.state.policy.recorder.flush()
    async with unit_of_work(engine, write=False) as conn:
        seen = await query(conn, tenant=tenant, patient=p["id"], actor="staff:dr1")
        tried = await query(conn, tenant=tenant, patient=q["id"], actor="staff:dr1")
    assert [(e.resource_id, e.outcome) for e in seen] == [(mine["id"], "ok")]
    assert [(e.resource_id, e.outcome) for e in tried] == [(theirs["id"], "denied")]
