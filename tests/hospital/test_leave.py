"""Leave over booked slots (停诊): counted before confirming, cancelled as the hospital's,
patients told in the app and by SMS, rebooking offered, nothing held against the patient."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from tests.hospital.conftest import FHIR

API = "/api/hospital"
PHONE = "13900001111"


async def _give_phone(repo_factory, patient: str = "pat-zhang") -> None:
    async with repo_factory() as repo:
        p = dict((await repo.read("Patient", patient)).resource)
        p.pop("meta", None)
        p["telecom"] = [{"system": "phone", "value": PHONE, "use": "mobile"}]
        await repo.update("Patient", patient, p)


async def _other_doctor_slots(repo_factory, hospital) -> None:
    """Doctor Zhao (same department) sees patients every afternoon."""
    from yiyun.hospital import schedules

    async with repo_factory() as repo:
        sched = schedules.schedule_id_for(hospital.other_role, "clinic")
        await schedules.add_template(repo.conn, hospital.tenant, sched, weekdays=[1, 2, 3, 4, 5, 6, 7],
                                     start="14:00", end="16:00", slot_minutes=30)
        await schedules.generate_slots(repo, start_day=hospital.first_day, days=3, schedule_ids=[sched])


def _day_window(day) -> dict:
    start = datetime.fromisoformat(f"{day.isoformat()}T00:00:00+08:00")
    return {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()}


async def _book(client, hospital, slot_id: str, patient: str = "pat-zhang"):
    return await client.post(f"{API}/appointments", json={"slot": slot_id},
                             headers=hospital.patient_headers(patient))


async def test_leave_over_bookings_cancels_them_tells_the_patient_and_offers_rebooking(client, hospital,
                                                                                      repo_factory, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.signin_tables import sms_outbox

    await _give_phone(repo_factory)
    await _other_doctor_slots(repo_factory, hospital)
    # strict rules: cancelling online closes a week ahead, one booking a day, a block after one no-show
    r = await client.put(f"{API}/rules", json={"cancel_cutoff_minutes": 7 * 24 * 60, "max_active_per_day": 1,
                                               "noshow_threshold": 1})
    assert r.status_code == 200, r.text
    slot = hospital.slots[2]
    booked = await _book(client, hospital, slot["id"])
    assert booked.status_code == 201, booked.text
    window = _day_window(hospital.first_day)

    preview = await client.get(f"{API}/exceptions/preview", params={
        "target": f"PractitionerRole/{hospital.role}", **window}, headers=hospital.staff_headers("doctor"))
    assert preview.status_code == 200, preview.text
    assert preview.json()["bookings"] == 1
    assert preview.json()["appointments"][0]["id"] == booked.json()["id"]

    leave = {"role": hospital.role, **window, "reason": "外出会诊"}
    refused = await client.post(f"{API}/leave", json=leave, headers=hospital.staff_headers("doctor"))
    assert refused.status_code == 409
    assert (await client.get(f"{API}/exceptions")).json()["exceptions"] == []  # the leave was not kept either
    changed = await client.post(f"{API}/leave", json={**leave, "confirm": True, "expected_bookings": 2},
                                headers=hospital.staff_headers("doctor"))
    assert changed.status_code == 409 and "请重新确认" in changed.json()["detail"]  # not what was seen
    done = await client.post(f"{API}/leave", json={**leave, "confirm": True, "expected_bookings": 1},
                             headers=hospital.staff_headers("doctor"))
    assert done.status_code == 201, done.text
    assert done.json()["cancelled"] == [booked.json()["id"]]

    appt = (await client.get(f"{FHIR}/Appointment/{booked.json()['id']}")).json()
    assert appt["status"] == "cancelled"
    assert appt["cancelationReason"]["text"] == "医生停诊"
    assert appt["cancelationReason"]["coding"][0]["code"] == "prov"  # the provider's, not the patient's
    assert (await client.get(f"{FHIR}/Slot/{slot['id']}")).json()["status"] == "busy-unavailable"

    # told in the app and by SMS
    notes = (await client.get(f"{API}/notifications", headers=hospital.patient_headers())).json()["notifications"]
    assert len(notes) == 1 and notes[0]["kind"] == "doctor-unavailable"
    assert notes[0]["appointment"] == booked.json()["id"] and "停诊" in notes[0]["text"]
    async with unit_of_work(engine, write=False) as conn:
        bodies = [r.body for r in await conn.execute(select(sms_outbox.c.body))]
    assert any("停诊" in b and "李医生门诊" in b for b in bodies), bodies

    # nothing held against the patient: no block, and the day's one booking is free again
    block = (await client.get(f"{API}/block", headers=hospital.patient_headers())).json()
    assert block == {"blocked": False}
    options = await client.get(f"{API}/appointments/{hospital.tenant}/{booked.json()['id']}/rebook",
                               headers=hospital.patient_headers())
    assert options.status_code == 200, options.text
    body = options.json()
    assert body["cancelled_by_hospital"] is True
    assert body["doctor"] and all(not s["start"].startswith(hospital.first_day.isoformat()) for s in body["doctor"])
    same_day_colleague = [s for s in body["department"] if s["start"].startswith(hospital.first_day.isoformat())]
    assert same_day_colleague and same_day_colleague[0]["doctor_name"] == "赵医生"
    again = await _book(client, hospital, same_day_colleague[0]["id"])
    assert again.status_code == 201, again.text  # one tap; the daily limit of one is not used up


async def test_closure_of_the_hospital_also_asks_before_cancelling(client, hospital):
    booked = await _book(client, hospital, hospital.slots[0]["id"])
    assert booked.status_code == 201
    body = {"kind": "closed", "target": "*", **_day_window(hospital.first_day), "reason": "停电检修"}
    assert (await client.post(f"{API}/exceptions", json=body)).status_code == 409
    r = await client.post(f"{API}/exceptions", json={**body, "confirm": True})
    assert r.status_code == 201, r.text
    assert r.json()["cancelled"] == [booked.json()["id"]]


async def test_who_may_preview_and_bad_input(client, hospital):
    window = _day_window(hospital.first_day)
    target = f"PractitionerRole/{hospital.other_role}"
    r = await client.get(f"{API}/exceptions/preview", params={"target": target, **window},
                         headers=hospital.patient_headers())
    assert r.status_code == 403
    r = await client.get(f"{API}/exceptions/preview", params={"target": target, **window},
                         headers=hospital.staff_headers("doctor"))
    assert r.status_code == 403  # another doctor's schedule
    r = await client.get(f"{API}/exceptions/preview", params={"target": target, "start": window["end"],
                                                               "end": window["start"]})
    assert r.status_code == 400 and "开始时间" in r.json()["detail"]
    r = await client.get(f"{API}/exceptions/preview", params={"target": target, "start": "2030-01-01T00:00:00",
                                                               "end": "2030-01-02T00:00:00"})
    assert r.status_code == 400
