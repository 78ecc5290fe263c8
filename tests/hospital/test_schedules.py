"""Schedules → Slots: templates in China Standard Time stored as UTC, extra sessions, leave, closures."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.hospital.conftest import FHIR, book_parameters

API = "/api/hospital"


async def _slots(client, schedule: str, status: str | None = None) -> list[dict]:
    params = {"schedule": f"Schedule/{schedule}", "_count": 500, "_sort": "start"}
    if status:
        params["status"] = status
    found = (await client.get(f"{FHIR}/Slot", params=params)).json()
    return [e["resource"] for e in found.get("entry", [])]


async def test_templates_make_slots_in_local_time_stored_as_utc(client, hospital):
    slots = await _slots(client, hospital.schedule)
    assert len(slots) == 3 * 8  # 3 days of 08:00–12:00 in 30-minute slots
    first = slots[0]
    # 08:00 in Asia/Shanghai (UTC+8, no daylight saving) is 00:00 UTC
    assert first["start"] == f"{hospital.first_day.isoformat()}T00:00:00Z"
    assert first["end"] == f"{hospital.first_day.isoformat()}T00:30:00Z"
    assert first["serviceType"][0]["coding"][0]["code"] == "clinic"
    assert all(s["status"] == "free" for s in slots)
    online = await _slots(client, hospital.online_schedule)
    assert online[0]["start"] == f"{hospital.first_day.isoformat()}T11:00:00Z"  # 19:00 local


async def test_generating_again_adds_nothing(client, hospital):
    r = await client.post(f"{API}/slots/generate", json={"days": 3, "start_day": hospital.first_day.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 0
    r = await client.post(f"{API}/slots/generate", json={"days": 4, "start_day": hospital.first_day.isoformat()})
    assert r.json()["created"] == 8 + 4  # one more day of clinic and online slots


async def test_template_validity_and_weekdays(client, hospital, repo_factory):
    from yiyun.hospital import schedules

    day = hospital.first_day + timedelta(days=5)
    async with repo_factory() as repo:
        sched = await schedules.create_schedule(repo, hospital.other_role, "online-video", fee_fen=5000)
        await schedules.add_template(repo.conn, hospital.tenant, sched.res_id, weekdays=[day.isoweekday()],
                                     start="14:00", end="15:00", slot_minutes=20, valid_from=day.isoformat(),
                                     valid_to=day.isoformat())
        report = await schedules.generate_slots(repo, start_day=hospital.first_day, days=14,
                                                schedule_ids=[sched.res_id])
    assert report.created == 3  # only that one weekday inside the validity period, 3 × 20 min
    slots = await _slots(client, sched.res_id)
    assert {s["start"][:10] for s in slots} == {day.isoformat()}


async def test_leave_closes_free_slots_and_cancels_booked_ones_once_confirmed(client, hospital):
    booked = hospital.slots[0]
    assert (await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(booked["id"]))).status_code == 201
    day = hospital.first_day
    start = datetime.fromisoformat(f"{day.isoformat()}T00:00:00+08:00")
    leave = {"role": hospital.role, "start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat(),
             "reason": "学术会议"}
    r = await client.post(f"{API}/leave", json=leave)
    assert r.status_code == 409 and "1 个已预约" in r.json()["detail"], r.text
    assert await _slots(client, hospital.schedule, "busy-unavailable") == []  # nothing was written
    r = await client.post(f"{API}/leave", json={**leave, "confirm": True})
    assert r.status_code == 201, r.text
    report = r.json()["slots"]
    assert len(r.json()["cancelled"]) == 1 and report["booked_in_leave"] == []
    assert report["unavailable"] == 8 + 4  # all that day's clinic slots, the cancelled one too, and its evening online slots
    that_day = [s for s in await _slots(client, hospital.schedule) if s["start"].startswith(day.isoformat())]
    assert sorted(s["status"] for s in that_day) == ["busy-unavailable"] * 8
    other = await _slots(client, hospital.schedule, "free")
    assert other and all(not s["start"].startswith(day.isoformat()) for s in other)
    # the other doctor is not on leave
    r = await client.post(f"{API}/slots/generate", json={"days": 1, "start_day": day.isoformat()})
    assert r.json()["unavailable"] == 0


async def test_extra_session_and_hospital_closure(client, hospital):
    day = hospital.first_day + timedelta(days=1)
    start = datetime.fromisoformat(f"{day.isoformat()}T14:00:00+08:00")
    r = await client.post(f"{API}/exceptions", json={
        "kind": "extra", "target": f"Schedule/{hospital.schedule}", "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(), "slot_minutes": 15, "reason": "加诊"})
    assert r.status_code == 201, r.text
    assert r.json()["slots"]["created"] == 4
    closed_from = datetime.fromisoformat(f"{day.isoformat()}T00:00:00+08:00")
    r = await client.post(f"{API}/exceptions", json={
        "kind": "closed", "target": "*", "start": closed_from.isoformat(),
        "end": (closed_from + timedelta(days=1)).isoformat(), "reason": "停电检修"})
    assert r.status_code == 201
    assert r.json()["slots"]["unavailable"] == 8 + 4 + 4  # clinic, extra and online slots of that day
    listed = (await client.get(f"{API}/exceptions")).json()["exceptions"]
    assert {x["kind"] for x in listed} == {"extra", "closed"}


async def test_bad_schedule_input_is_a_4xx(client, hospital):
    cases = [
        ("/schedules", {"role": hospital.role, "type": "house-call", "fee_fen": 100}, 422),
        ("/schedules", {"role": hospital.role, "type": "clinic", "fee_fen": -1}, 422),
        ("/schedules", {"role": "no-such-role", "type": "clinic", "fee_fen": 100}, 404),
        (f"/schedules/{hospital.schedule}/templates", {"weekdays": [8], "start": "08:00", "end": "09:00",
                                                       "slot_minutes": 15}, 400),
        (f"/schedules/{hospital.schedule}/templates", {"weekdays": [1], "start": "10:00", "end": "09:00",
                                                       "slot_minutes": 15}, 400),
        (f"/schedules/{hospital.schedule}/templates", {"weekdays": [1], "start": "25:00", "end": "26:00",
                                                       "slot_minutes": 15}, 400),
        ("/exceptions", {"kind": "leave", "target": "Patient/x", "start": "2030-01-01T00:00:00+08:00",
                         "end": "2030-01-02T00:00:00+08:00"}, 400),
        ("/exceptions", {"kind": "leave", "target": f"PractitionerRole/{hospital.role}",
                         "start": "2030-01-02T00:00:00+08:00", "end": "2030-01-01T00:00:00+08:00"}, 400),
        ("/slots/generate", {"days": 500}, 422),
    ]
    for path, body, status in cases:
        r = await client.post(f"{API}{path}", json=body)
        assert r.status_code == status, (path, body, r.text)


async def test_doctor_manages_only_own_schedules(client, hospital):
    headers = hospital.staff_headers("doctor")  # Practitioner/prac-li
    own = await client.post(f"{API}/schedules", json={"role": hospital.role, "type": "online-video", "fee_fen": 8000},
                            headers=headers)
    assert own.status_code == 201, own.text
    assert own.json()["fee_fen"] == 8000
    other = await client.post(f"{API}/schedules", json={"role": hospital.other_role, "type": "online-video",
                                                         "fee_fen": 8000}, headers=headers)
    assert other.status_code == 403
    patient = await client.post(f"{API}/schedules", json={"role": hospital.role, "type": "clinic", "fee_fen": 1},
                                headers=hospital.patient_headers())
    assert patient.status_code == 403
    rules = await client.put(f"{API}/rules", json={"cancel_cutoff_minutes": 60}, headers=headers)
    assert rules.status_code == 403  # administrators only
