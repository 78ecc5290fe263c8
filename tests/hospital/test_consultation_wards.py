"""A guardian consults for their ward from their own account, on SQLite and PostgreSQL:
the consultation is the ward's, the guardian starts it, chats and sees it in their list;
the real-name rule applies to the guardian's account, the under-6 rule to the ward; anyone
else gets 403 (starting) or 404 (reading).

Personas (tests/hospital/conftest.py): patient Zhang (pat-zhang, verified) is the guardian
of his daughter (pat-zhang-child) by booking's record (RelatedPerson with the
guardian-patient extension); outsider Wang (pat-wang, verified); doctor Li. Made here:
Zhang's mother (pat-zhang-mother, 80, under his adult guardianship) and Chen (pat-chen,
not verified), guardian of pat-chen-son."""

from __future__ import annotations

from datetime import date, timedelta

from tests.hospital.people import verify_patients
from tests.hospital.test_consultation_rules import FORM, RESP
from yiyun.hospital.codes import today_local

V3 = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
GUARDIAN_EXT = "https://yiyun.example.cn/fhir/StructureDefinition/guardian-patient"
GUARDIANSHIP = "https://yiyun.example.cn/fhir/CodeSystem/guardianship"


async def start(client, hospital, who: str = "pat-zhang", **body):
    """POST /api/consultations as `who`; `patient` in the body names whom it is for."""
    body = {"mode": "text", "form": FORM, **body}
    return await client.post("/api/consultations", json=body, headers=hospital.patient_headers(who))


def years_ago(years: int, days: int = 0) -> str:
    today = today_local()
    return (date(today.year - years, today.month, min(today.day, 28)) - timedelta(days=days)).isoformat()


async def set_birth(repo_factory, patient: str, name: str, birth: str | None) -> None:
    async with repo_factory() as repo:
        resource = {"resourceType": "Patient", "id": patient, "active": True, "name": [{"text": name}]}
        if birth:
            resource["birthDate"] = birth
        await repo.update("Patient", patient, resource)


async def guardianship(repo_factory, rp_id: str, ward: str, guardian: str, code: str, *, adult: bool = False,
                       by_link: bool = False) -> None:
    """A RelatedPerson of `ward` naming `guardian`: by booking's extension, or (`by_link`) by
    the guardian's Patient.link as /patient/me reads it."""
    relationship = [{"coding": [{"system": V3, "code": code}]}]
    if adult:
        relationship.append({"coding": [{"system": GUARDIANSHIP, "code": "adult-guardian"}]})
    rp = {"resourceType": "RelatedPerson", "id": rp_id, "active": True, "patient": {"reference": f"Patient/{ward}"},
          "relationship": relationship}
    async with repo_factory() as repo:
        if by_link:
            await repo.update("RelatedPerson", rp_id, rp)
            me = dict((await repo.read("Patient", guardian)).resource)
            me.pop("meta", None)
            me["link"] = [{"other": {"reference": f"RelatedPerson/{rp_id}"}, "type": "seealso"}]
            await repo.update("Patient", guardian, me)
        else:
            rp["extension"] = [{"url": GUARDIAN_EXT, "valueReference": {"reference": f"Patient/{guardian}"}}]
            await repo.update("RelatedPerson", rp_id, rp)


async def test_a_parent_consults_for_a_young_child_from_their_own_account(client, hospital, repo_factory):
    await set_birth(repo_factory, "pat-zhang-child", "张小三", years_ago(3))
    zhang, wang, doctor = hospital.patient_headers(), hospital.patient_headers("pat-wang"), hospital.staff_headers()
    # the under-6 rule applies to the ward: the guardian confirms accompanying her
    refused = await start(client, hospital, department=RESP, patient="Patient/pat-zhang-child")
    assert refused.status_code == 422 and refused.json()["code"] == "guardian-required", refused.text
    r = await start(client, hospital, department=RESP, patient="Patient/pat-zhang-child",
                    form={**FORM, "guardian_accompanies": True})
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["patient"] == "Patient/pat-zhang-child" and c["started_by"] == "Patient/pat-zhang"
    cid = c["id"]

    # FHIR: the Encounter is the child's; the form is about her, written by her father
    enc = (await client.get(f"/fhir/R4/Encounter/{cid}")).json()
    assert enc["subject"]["reference"] == "Patient/pat-zhang-child"
    qr = (await client.get(f"/fhir/R4/QuestionnaireResponse?encounter=Encounter/{cid}")).json()["entry"][0]["resource"]
    assert qr["subject"]["reference"] == "Patient/pat-zhang-child" and qr["author"]["reference"] == "Patient/pat-zhang"

    # the doctor sees the child, flagged, with the guardian's confirmation
    queue = (await client.get("/api/consultations/queue", headers=doctor)).json()
    item = next(q for q in queue["waiting"] if q["id"] == cid)
    assert item["patient_name"] == "张小三" and item["child_under_6"] and item["guardian_accompanies"]

    # the guardian sees it in his list and opens it as the patient's side
    mine = (await client.get("/api/consultations", headers=zhang)).json()["consultations"]
    assert cid in [x["id"] for x in mine]
    detail = (await client.get(f"/api/consultations/{cid}", headers=zhang)).json()
    assert detail["relation"] == "patient" and detail["for_ward"] is True
    assert detail["patient_name"] == "张小三" and detail["started_by_name"] == "张三"

    # and takes part in the chat in his own name
    assert (await client.post(f"/api/consultations/{cid}/accept", headers=doctor)).status_code == 200
    sent = await client.post(f"/api/consultations/{cid}/messages", json={"text": "孩子发烧两天"}, headers=zhang)
    assert sent.status_code == 201, sent.text
    assert sent.json()["from"] == "patient" and sent.json()["sender"] == "Patient/pat-zhang"
    comm = (await client.get(f"/fhir/R4/Communication/{sent.json()['id']}")).json()
    assert comm["subject"]["reference"] == "Patient/pat-zhang-child"
    assert comm["recipient"][0]["reference"] == "Practitioner/prac-li"
    reply = await client.post(f"/api/consultations/{cid}/messages", json={"text": "量一下体温"}, headers=doctor)
    assert reply.status_code == 201
    seen = (await client.get(f"/api/consultations/{cid}/messages", headers=zhang)).json()["messages"]
    assert [m["text"] for m in seen if m["from"] != "system"] == ["孩子发烧两天", "量一下体温"]

    # nobody else: starting for her is refused, reading her consultation is not found
    other = await start(client, hospital, "pat-wang", department=RESP, patient="Patient/pat-zhang-child",
                        form={**FORM, "guardian_accompanies": True})
    assert other.status_code == 403 and other.json()["code"] == "not-guardian"
    assert "监护" in other.json()["detail"]
    assert (await client.get(f"/api/consultations/{cid}", headers=wang)).status_code == 404
    assert (await client.get(f"/api/consultations/{cid}/messages", headers=wang)).status_code == 404
    assert (await client.get(f"/api/consultations/{cid}/record", headers=wang)).status_code == 404
    assert (await client.post(f"/api/consultations/{cid}/messages", json={"text": "x"}, headers=wang)).status_code == 404
    assert cid not in [x["id"] for x in (await client.get("/api/consultations", headers=wang)).json()["consultations"]]
    # a patient who does not exist answers the same as one who is not a ward: nothing revealed
    ghost = await start(client, hospital, "pat-wang", department=RESP, patient="Patient/nobody")
    assert ghost.status_code == 403 and ghost.json()["code"] == "not-guardian"
    bad = await start(client, hospital, department=RESP, patient="Practitioner/prac-li")
    assert bad.status_code == 400


async def test_the_visit_record_of_a_wards_consultation_is_the_guardians_to_read(client, hospital, repo_factory):
    await set_birth(repo_factory, "pat-zhang-child", "张小三", years_ago(8))
    r = await start(client, hospital, department=RESP, patient="Patient/pat-zhang-child")
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    doctor = hospital.staff_headers()
    assert (await client.post(f"/api/consultations/{cid}/accept", headers=doctor)).status_code == 200
    saved = await client.post(f"/api/consultations/{cid}/record", headers=doctor, json={
        "chief_complaint": "咳嗽三天", "advice": "多饮水，观察体温"})
    assert saved.status_code == 201, saved.text
    record = await client.get(f"/api/consultations/{cid}/record", headers=hospital.patient_headers())
    assert record.status_code == 200 and "多饮水" in str(record.json())
    assert (await client.get(f"/api/consultations/{cid}/record",
                             headers=hospital.patient_headers("pat-wang"))).status_code == 404


async def test_guardianship_of_a_child_ends_at_18_and_an_adults_guardian_keeps_it(client, hospital, repo_factory):
    # the daughter is 18 today: her father no longer acts for her, nor reads what he started
    await set_birth(repo_factory, "pat-zhang-child", "张小三", years_ago(10))
    r = await start(client, hospital, department=RESP, patient="Patient/pat-zhang-child")
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    await set_birth(repo_factory, "pat-zhang-child", "张小三", years_ago(18))
    refused = await start(client, hospital, department=RESP, patient="Patient/pat-zhang-child")
    assert refused.status_code == 403 and refused.json()["code"] == "not-guardian"
    zhang = hospital.patient_headers()
    assert (await client.get(f"/api/consultations/{cid}", headers=zhang)).status_code == 404
    assert cid not in [x["id"] for x in (await client.get("/api/consultations", headers=zhang)).json()["consultations"]]

    # his elderly mother is under his guardianship as an adult without full capacity (民法典 第二十八条)
    await set_birth(repo_factory, "pat-zhang-mother", "李秀英", years_ago(80))
    await guardianship(repo_factory, "rp-zhang-mother", "pat-zhang-mother", "pat-zhang", "CHILD", adult=True)
    r = await start(client, hospital, department=RESP, patient="Patient/pat-zhang-mother")
    assert r.status_code == 201, r.text
    assert r.json()["patient"] == "Patient/pat-zhang-mother"
    # without the adult-guardianship code, an adult's relative is no guardian
    await guardianship(repo_factory, "rp-zhang-mother", "pat-zhang-mother", "pat-zhang", "CHILD")
    assert (await start(client, hospital, department=RESP, patient="Patient/pat-zhang-mother")).status_code == 403
    assert (await client.get(f"/api/consultations/{r.json()['id']}", headers=zhang)).status_code == 404


async def test_the_guardians_own_account_must_be_verified_by_real_name(client, hospital, repo_factory, engine):
    await set_birth(repo_factory, "pat-chen", "陈七", years_ago(40))
    await set_birth(repo_factory, "pat-chen-son", "陈小七", years_ago(9))
    await guardianship(repo_factory, "rp-chen-son", "pat-chen-son", "pat-chen", "FTH")
    r = await start(client, hospital, "pat-chen", department=RESP, patient="Patient/pat-chen-son")
    assert r.status_code == 403 and r.json()["code"] == "real-name-required"
    assert (await client.get("/api/consultations", headers=hospital.patient_headers("pat-chen"))).json() == {
        "consultations": []}


async def test_a_ward_listed_on_me_by_patient_link_can_be_consulted_for(client, hospital, repo_factory, engine):
    await set_birth(repo_factory, "pat-wang-son", "王小五", years_ago(12))
    await guardianship(repo_factory, "rp-wang-son", "pat-wang-son", "pat-wang", "FTH", by_link=True)
    wang = hospital.patient_headers("pat-wang")
    r = await start(client, hospital, "pat-wang", department=RESP, patient="pat-wang-son")
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    # a consultation the son started himself (his own account) is in his father's list too
    await verify_patients(engine, hospital.tenant, {"pat-wang-son": "王小五"})
    own = await start(client, hospital, "pat-wang-son", department=RESP)
    assert own.status_code == 201, own.text
    listed = [x["id"] for x in (await client.get("/api/consultations", headers=wang)).json()["consultations"]]
    assert cid in listed and own.json()["id"] in listed
    assert (await client.get(f"/api/consultations/{own.json()['id']}", headers=wang)).json()["for_ward"] is True
    # the son sees the one his father started for him as his own
    son = (await client.get(f"/api/consultations/{cid}", headers=hospital.patient_headers("pat-wang-son"))).json()
    assert son["relation"] == "patient" and son["for_ward"] is False and son["started_by"] == "Patient/pat-wang"


async def test_a_guardian_starts_the_consultation_of_a_wards_booking(client, hospital, repo_factory):
    await set_birth(repo_factory, "pat-zhang-child", "张小三", years_ago(8))
    slot = (await client.get(f"/api/hospital/directory/hospitals/{hospital.tenant}/slots",
                             params={"schedule": hospital.online_schedule})).json()["slots"][0]["id"]
    booked = await client.post("/api/hospital/appointments", headers=hospital.patient_headers(),
                               json={"slot": slot, "hospital": hospital.tenant, "patient": "pat-zhang-child"})
    assert booked.status_code == 201, booked.text
    appt_id = booked.json()["id"]
    # the father booked for his daughter; the booking names her, so its consultation is hers
    r = await start(client, hospital, appointment=f"Appointment/{appt_id}")
    assert r.status_code == 201, r.text
    assert r.json()["patient"] == "Patient/pat-zhang-child" and r.json()["started_by"] == "Patient/pat-zhang"
    assert r.json()["doctor"] == "Practitioner/prac-li"
    # naming someone else as the patient of that booking: not found
    wrong = await start(client, hospital, appointment=f"Appointment/{appt_id}", patient="Patient/pat-zhang")
    assert wrong.status_code == 404
    other = await start(client, hospital, "pat-wang", appointment=f"Appointment/{appt_id}")
    assert other.status_code == 404
