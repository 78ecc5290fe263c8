"""A consultation for a booked online Appointment (yiyun.hospital.booking): the booking's
doctor and service carry over; another patient cannot use someone else's booking."""

from __future__ import annotations


async def test_consultation_for_a_booked_online_appointment(client, hospital, repo_factory):
    from yiyun.hospital import booking, schedules

    async with repo_factory() as repo:
        slot = (await schedules.find_slots(repo, hospital.online_schedule))[0]
        actor = booking.Actor("patient", "user:pat-zhang", "pat-zhang", ("patient",))
        appt = await booking.book(repo, actor, slot["id"], "pat-zhang")
    r = await client.post("/api/consultations", headers=hospital.patient_headers(),
                          json={"mode": "text", "appointment": f"Appointment/{appt.res_id}",
                                "form": {"chief_complaint": "咳嗽一周复诊"}})
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["doctor"] == "Practitioner/prac-li" and c["department"] == "HealthcareService/hs-resp"
    assert c["appointment"] == f"Appointment/{appt.res_id}"
    enc = (await client.get(f"/fhir/R4/Encounter/{c['id']}")).json()
    assert enc["appointment"][0]["reference"] == f"Appointment/{appt.res_id}"
    queue = (await client.get("/api/consultations/queue", headers=hospital.staff_headers())).json()
    assert [q["id"] for q in queue["waiting"]] == [c["id"]]
    assert (await client.post(f"/api/consultations/{c['id']}/accept",
                              headers=hospital.staff_headers())).status_code == 200
    again = await client.post("/api/consultations", headers=hospital.patient_headers(),
                              json={"mode": "text", "appointment": f"Appointment/{appt.res_id}"})
    assert again.status_code == 200 and again.json()["id"] == c["id"] and again.json()["existing"] is True
    other = await client.post("/api/consultations", headers=hospital.patient_headers("pat-wang"),
                              json={"mode": "text", "appointment": f"Appointment/{appt.res_id}"})
    assert other.status_code == 404
