"""The patient pages for a ward's consultation and for one cancelled with its booking, on
SQLite and PostgreSQL: the form offers the family members /patient/me lists, the lists and
the consultation page say whose it is, a cancelled consultation shows its reason, and the
pages carry what updates them live (the queue socket, the chat's state frames).

Personas: tests/hospital/conftest.py; made here: Wang's son (pat-wang-son, 3 years old),
linked to his father's record as /patient/me reads it."""

from __future__ import annotations

from tests.hospital.test_consultation_rules import book_online, consult_for_booking
from tests.hospital.test_consultation_wards import guardianship, set_birth, years_ago
from tests.hospital.test_pages import Browser, _patient, _staff


async def test_a_guardian_chooses_a_ward_on_the_consult_form(client, engine, hospital, repo_factory):
    await set_birth(repo_factory, "pat-wang-son", "王小小", years_ago(3))
    await guardianship(repo_factory, "rp-wang-son", "pat-wang-son", "pat-wang", "FTH", by_link=True)
    wang = Browser(client.app, *await _patient(engine, hospital.tenant, "Patient/pat-wang"))
    doctor = Browser(client.app, *await _staff(engine, hospital.tenant, "li", ("doctor",), "Practitioner/prac-li"))
    try:
        me = (await wang.get("/patient/me")).text
        assert "王小小" in me
        form_page = await wang.get(f"/patient/consult/new?hospital={hospital.tenant}&doctor=role-li")
        assert form_page.status_code == 200
        page = form_page.text
        assert 'id="consult-for"' in page and "为谁问诊" in page and "王小小" in page
        assert 'value="pat-wang-son"' in page and 'data-child="1"' in page
        # the under-6 box is there for the son (shown by the script when he is chosen)
        assert 'name="guardian_accompanies"' in page and "data-guardian-box" in page

        form = {"hospital": hospital.tenant, "doctor": "role-li", "mode": "text", "chief_complaint": "发热一天",
                "patient": "pat-wang-son"}
        r = await wang.post("/patient/consult", form)
        assert r.status_code == 422 and "监护人" in r.text
        r = await wang.post("/patient/consult", {**form, "guardian_accompanies": "1"})
        assert r.status_code == 303, r.text[:500]
        cid = r.headers["location"].rsplit("/", 1)[1].split("?")[0]

        page = (await wang.get(f"/patient/consultations/{cid}")).text
        assert "就诊人：王小小" in page and "data-for-ward" in page
        listing = (await wang.get("/patient/consultations")).text
        assert f"/patient/consultations/{cid}" in listing and "就诊人：王小小" in listing
        visits = (await wang.get("/patient/records")).text
        assert "就诊人：王小小" in visits and "发热一天" in visits
        # the doctor sees the child and who started it
        page = (await doctor.get(f"/doctor/consultations/{cid}")).text
        assert "王小小" in page and 'id="started-by"' in page

        # someone else's child: refused with the reason, nothing started
        r = await wang.post("/patient/consult", {**form, "patient": "pat-zhang-child", "guardian_accompanies": "1"})
        assert r.status_code == 403 and "监护" in r.text
    finally:
        await wang.aclose()
        await doctor.aclose()


async def test_a_consultation_cancelled_with_its_booking_shows_why(client, engine, hospital):
    appt_id = await book_online(client, hospital)
    cid = await consult_for_booking(client, hospital, appt_id)
    zhang = Browser(client.app, *await _patient(engine, hospital.tenant, "Patient/pat-zhang"))
    doctor = Browser(client.app, *await _staff(engine, hospital.tenant, "li", ("doctor",), "Practitioner/prac-li"))
    try:
        queue = (await doctor.get("/doctor")).text
        assert "data-queue-live" in queue and f'data-consultation="{cid}"' in queue
        waiting = (await zhang.get(f"/patient/consultations/{cid}")).text
        assert "data-cancel-reason hidden" in waiting  # ready for the live state frame
        r = await client.post(f"/api/hospital/appointments/{hospital.tenant}/{appt_id}/cancel", json={},
                              headers=hospital.patient_headers())
        assert r.status_code == 200, r.text
        page = (await zhang.get(f"/patient/consultations/{cid}")).text
        assert "本次问诊已取消" in page and "预约已取消，本次问诊随之取消" in page
        assert "data-cancel-reason hidden" not in page
        assert f'data-consultation="{cid}"' not in (await doctor.get("/doctor")).text
    finally:
        await zhang.aclose()
        await doctor.aclose()


async def test_the_form_of_a_young_wards_booking_asks_for_the_guardian(client, engine, hospital, repo_factory):
    await set_birth(repo_factory, "pat-zhang-child", "张小三", years_ago(2))
    slot = (await client.get(f"/api/hospital/directory/hospitals/{hospital.tenant}/slots",
                             params={"schedule": hospital.online_schedule})).json()["slots"][0]["id"]
    booked = await client.post("/api/hospital/appointments", headers=hospital.patient_headers(),
                               json={"slot": slot, "hospital": hospital.tenant, "patient": "pat-zhang-child"})
    assert booked.status_code == 201, booked.text
    appt_id = booked.json()["id"]
    zhang = Browser(client.app, *await _patient(engine, hospital.tenant, "Patient/pat-zhang"))
    wang = Browser(client.app, *await _patient(engine, hospital.tenant, "Patient/pat-wang"))
    try:
        page = (await zhang.get(f"/patient/consult/new?hospital={hospital.tenant}&appointment={appt_id}")).text
        assert 'name="guardian_accompanies"' in page and 'id="consult-for"' not in page
        form = {"hospital": hospital.tenant, "appointment": appt_id, "mode": "text", "chief_complaint": "发热",
                "guardian_accompanies": "1"}
        r = await zhang.post("/patient/consult", form)
        assert r.status_code == 303, r.text[:500]
        cid = r.headers["location"].rsplit("/", 1)[1].split("?")[0]
        assert "就诊人：张小三" in (await zhang.get(f"/patient/consultations/{cid}")).text
        # someone else's booking tells them nothing about the child
        other = (await wang.get(f"/patient/consult/new?hospital={hospital.tenant}&appointment={appt_id}")).text
        assert 'name="guardian_accompanies"' not in other
    finally:
        await zhang.aclose()
        await wang.aclose()
