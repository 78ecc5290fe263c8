"""The rules around a consultation, on SQLite and PostgreSQL: the booking follows it
(arrived, fulfilled, cancelled with the booking), real name and the under-6 rule at the
start, and the patient's rating that the directory shows.

Personas (tests/hospital/conftest.py): patient Zhang (pat-zhang, verified), outsider Wang
(pat-wang, verified), doctor Li (prac-li, role-li, 呼吸内科); made here: Chen (pat-chen,
not verified) and little Xiao (pat-kid, under six, verified)."""

from __future__ import annotations

from datetime import date, timedelta

from tests.hospital.people import verify_patients
from yiyun.hospital.codes import today_local

RESP = "HealthcareService/hs-resp"
FORM = {"chief_complaint": "咳嗽三天"}


async def book_online(client, hospital, patient: str = "pat-zhang") -> str:
    slot = (await client.get(f"/api/hospital/directory/hospitals/{hospital.tenant}/slots",
                             params={"schedule": hospital.online_schedule})).json()["slots"][0]["id"]
    r = await client.post("/api/hospital/appointments", json={"slot": slot, "hospital": hospital.tenant},
                          headers=hospital.patient_headers(patient))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def appointment(client, appt_id: str) -> dict:
    return (await client.get(f"/fhir/R4/Appointment/{appt_id}")).json()


async def start(client, hospital, patient: str = "pat-zhang", **body):
    body = {"mode": "text", "form": FORM, **body}
    return await client.post("/api/consultations", json=body, headers=hospital.patient_headers(patient))


async def consult_for_booking(client, hospital, appt_id: str) -> str:
    r = await start(client, hospital, appointment=f"Appointment/{appt_id}")
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def accept(client, hospital, cid: str):
    return await client.post(f"/api/consultations/{cid}/accept", headers=hospital.staff_headers())


async def end(client, hospital, cid: str):
    r = await client.post(f"/api/consultations/{cid}/end", json={}, headers=hospital.staff_headers())
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ the booking follows
async def test_booking_arrives_when_the_doctor_accepts_and_is_fulfilled_when_it_ends(client, hospital):
    appt_id = await book_online(client, hospital)
    booked = await appointment(client, appt_id)
    slot_id = booked["slot"][0]["reference"].split("/")[1]
    cid = await consult_for_booking(client, hospital, appt_id)
    assert (await appointment(client, appt_id))["status"] == "booked"
    assert (await accept(client, hospital, cid)).status_code == 200
    arrived = await appointment(client, appt_id)
    assert arrived["status"] == "arrived"
    assert (await client.get(f"/fhir/R4/Slot/{slot_id}")).json()["status"] == "busy"  # still held while seen
    await end(client, hospital, cid)
    done = await appointment(client, appt_id)
    assert done["status"] == "fulfilled"
    # the booking's number and slot are kept on the record; the slot, still ahead, is free again
    assert done["slot"] == booked["slot"]
    assert (await client.get(f"/fhir/R4/Slot/{slot_id}")).json()["status"] == "free"
    history = (await client.get(f"/fhir/R4/Appointment/{appt_id}/_history")).json()
    assert [e["resource"]["status"] for e in history["entry"]][:3] == ["fulfilled", "arrived", "booked"]


async def test_a_withdrawn_consultation_leaves_the_booking_booked_and_can_start_again(client, hospital):
    appt_id = await book_online(client, hospital)
    cid = await consult_for_booking(client, hospital, appt_id)
    r = await client.post(f"/api/consultations/{cid}/cancel", headers=hospital.patient_headers())
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert (await appointment(client, appt_id))["status"] == "booked"
    again = await consult_for_booking(client, hospital, appt_id)
    assert again != cid
    assert (await accept(client, hospital, again)).status_code == 200
    assert (await appointment(client, appt_id))["status"] == "arrived"


async def test_cancelling_the_booking_cancels_its_waiting_consultation(client, hospital):
    appt_id = await book_online(client, hospital)
    cid = await consult_for_booking(client, hospital, appt_id)
    r = await client.post(f"/api/hospital/appointments/{hospital.tenant}/{appt_id}/cancel", json={},
                          headers=hospital.patient_headers())
    assert r.status_code == 200, r.text
    c = (await client.get(f"/api/consultations/{cid}", headers=hospital.patient_headers())).json()
    assert c["state"] == "cancelled"
    assert (await client.get(f"/fhir/R4/Encounter/{cid}")).json()["status"] == "cancelled"
    messages = (await client.get(f"/api/consultations/{cid}/messages", headers=hospital.patient_headers())).json()
    assert "预约已取消" in messages["messages"][-1]["text"]
    assert (await accept(client, hospital, cid)).status_code == 409
    queue = (await client.get("/api/consultations/queue", headers=hospital.staff_headers())).json()
    assert cid not in [q["id"] for q in queue["waiting"]]
    # a cancelled booking cannot start another consultation
    assert (await start(client, hospital, appointment=f"Appointment/{appt_id}")).status_code == 409


async def test_a_booking_in_consultation_cannot_be_cancelled(client, hospital):
    appt_id = await book_online(client, hospital)
    cid = await consult_for_booking(client, hospital, appt_id)
    assert (await accept(client, hospital, cid)).status_code == 200
    r = await client.post(f"/api/hospital/appointments/{hospital.tenant}/{appt_id}/cancel", json={},
                          headers=hospital.patient_headers())
    assert r.status_code == 409 and "正在进行中" in r.json()["detail"]
    assert (await appointment(client, appt_id))["status"] == "arrived"
    c = (await client.get(f"/api/consultations/{cid}", headers=hospital.patient_headers())).json()
    assert c["state"] == "active"
    # by the FHIR door too: an OperationOutcome, nothing changed
    stored = await appointment(client, appt_id)
    r = await client.put(f"/fhir/R4/Appointment/{appt_id}", json={**stored, "status": "cancelled"})
    assert r.status_code == 409 and r.json()["resourceType"] == "OperationOutcome"
    assert (await appointment(client, appt_id))["status"] == "arrived"


# ------------------------------------------------------------------ real name
async def test_an_unverified_patient_is_sent_to_real_name_verification_and_nothing_is_written(client, hospital,
                                                                                             repo_factory, engine):
    async with repo_factory() as repo:
        await repo.update("Patient", "pat-chen", {"resourceType": "Patient", "id": "pat-chen", "name": [{"text": "陈七"}]})
    r = await start(client, hospital, "pat-chen", department=RESP)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["code"] == "real-name-required"
    assert "实名认证" in body["detail"] and "/me/real-name" in body["detail"] and "real-name" in body["detail"]
    found = (await client.get("/fhir/R4/Encounter", params={"subject": "Patient/pat-chen"})).json()
    assert found.get("total", 0) == 0 and not found.get("entry")
    await verify_patients(engine, hospital.tenant, {"pat-chen": "陈七"})
    assert (await start(client, hospital, "pat-chen", department=RESP)).status_code == 201


# ------------------------------------------------------------------ children under six
def years_ago(years: int, days: int = 0) -> str:
    today = today_local()
    try:
        then = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        then = today.replace(year=today.year - years, day=28)
    return (then + timedelta(days=days)).isoformat()


async def kid(repo_factory, tenant: str, engine, birth: str, pid: str = "pat-kid") -> str:
    async with repo_factory() as repo:
        await repo.update("Patient", pid, {"resourceType": "Patient", "id": pid, "name": [{"text": "张小小"}],
                                           "birthDate": birth})
    await verify_patients(engine, tenant, {pid: "张小小"})
    return pid


async def test_a_child_under_six_needs_the_guardian_and_the_doctor_sees_the_flag(client, hospital, repo_factory,
                                                                                engine):
    pid = await kid(repo_factory, hospital.tenant, engine, years_ago(3))
    refused = await start(client, hospital, pid, department=RESP)
    assert refused.status_code == 422 and refused.json()["code"] == "guardian-required"
    assert "监护人" in refused.json()["detail"]
    r = await start(client, hospital, pid, department=RESP, form={**FORM, "guardian_accompanies": True})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    detail = (await client.get(f"/api/consultations/{cid}", headers=hospital.staff_headers())).json()
    assert detail["child_under_6"] is True and detail["guardian_accompanies"] is True
    assert detail["child_flag"] == "6岁以下儿童 — 监护人陪同"
    queue = (await client.get("/api/consultations/queue", headers=hospital.staff_headers())).json()
    item = next(q for q in queue["waiting"] if q["id"] == cid)
    assert item["child_under_6"] is True and item["guardian_accompanies"] is True
    # the confirmation is kept with the consultation, in its pre-consultation form
    forms = (await client.get("/fhir/R4/QuestionnaireResponse", params={"encounter": f"Encounter/{cid}"})).json()
    items = {i["linkId"]: i for i in forms["entry"][0]["resource"]["item"]}
    assert items["guardian-accompanies"]["answer"] == [{"valueBoolean": True}]


async def test_a_six_year_old_and_an_adult_need_no_guardian(client, hospital, repo_factory, engine):
    pid = await kid(repo_factory, hospital.tenant, engine, years_ago(6), pid="pat-six")
    r = await start(client, hospital, pid, department=RESP)
    assert r.status_code == 201, r.text
    detail = (await client.get(f"/api/consultations/{r.json()['id']}", headers=hospital.staff_headers())).json()
    assert detail["child_under_6"] is False and detail["child_flag"] is None
    assert (await start(client, hospital, department=RESP)).status_code == 201


def test_age_rule_counts_partial_birth_dates_as_young_as_they_may_be():
    from yiyun.hospital.consultations.admission import is_young_child, latest_birth_date

    on = date(2026, 6, 15)
    assert latest_birth_date("2020") == date(2020, 12, 31)
    assert latest_birth_date("2020-02") == date(2020, 2, 29)
    assert latest_birth_date("not-a-date") is None and latest_birth_date(None) is None
    assert is_young_child({"birthDate": "2020-06-16"}, on) is True  # turns six tomorrow
    assert is_young_child({"birthDate": "2020-06-15"}, on) is False  # six today
    assert is_young_child({"birthDate": "2020"}, on) is True  # may have been born in December
    assert is_young_child({"birthDate": "2019"}, on) is False
    assert is_young_child({}, on) is False


# ------------------------------------------------------------------ ratings
async def ended(client, hospital, patient: str = "pat-zhang") -> str:
    r = await start(client, hospital, patient, department=RESP)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert (await accept(client, hospital, cid)).status_code == 200
    await end(client, hospital, cid)
    return cid


async def rate(client, hospital, cid: str, patient: str = "pat-zhang", **body):
    return await client.post(f"/api/consultations/{cid}/rating", json=body, headers=hospital.patient_headers(patient))


async def test_the_patient_rates_an_ended_consultation_once(client, hospital):
    r = await start(client, hospital, department=RESP)
    waiting = r.json()["id"]
    assert (await rate(client, hospital, waiting, stars=5)).status_code == 409  # not ended yet
    cid = await ended(client, hospital)
    assert (await rate(client, hospital, cid, stars=0)).status_code == 422
    assert (await rate(client, hospital, cid, stars=6)).status_code == 422
    assert (await rate(client, hospital, cid, stars=4, comment="很" * 201)).status_code == 422
    assert (await rate(client, hospital, cid, "pat-wang", stars=1)).status_code == 404  # not theirs
    doctor = await client.post(f"/api/consultations/{cid}/rating", json={"stars": 5},
                               headers=hospital.staff_headers())
    assert doctor.status_code == 403
    r = await rate(client, hospital, cid, stars=4, comment="  耐心细致  ")
    assert r.status_code == 201, r.text
    assert r.json()["stars"] == 4 and r.json()["comment"] == "耐心细致"
    assert r.json()["practitioner"] == "Practitioner/prac-li"
    again = await rate(client, hospital, cid, stars=1)
    assert again.status_code == 409 and "已评价" in again.json()["detail"]
    detail = (await client.get(f"/api/consultations/{cid}", headers=hospital.staff_headers())).json()
    assert detail["rating"]["stars"] == 4


async def test_the_directory_shows_the_average_of_real_ratings(client, hospital):
    url = f"/api/hospital/directory/hospitals/{hospital.tenant}/doctors"

    def li(doctors):
        return next(d for d in doctors if d["id"] == "role-li")

    assert li((await client.get(url)).json()["doctors"])["rating"] == {"score": None, "count": 0, "text": "暂无评价"}
    for patient, stars in (("pat-zhang", 5), ("pat-wang", 4), ("pat-zhang", 4)):
        cid = await ended(client, hospital, patient)
        assert (await rate(client, hospital, cid, patient, stars=stars)).status_code == 201
    rating = li((await client.get(url)).json()["doctors"])["rating"]
    assert rating["count"] == 3 and rating["score"] == 4.3
    one = (await client.get(f"{url}/role-li")).json()
    assert one["rating"]["count"] == 3
    zhao = next(d for d in (await client.get(url)).json()["doctors"] if d["id"] == "role-zhao")
    assert zhao["rating"]["count"] == 0
