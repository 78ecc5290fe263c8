"""The hospital's booking rules as patients meet them: window, daily limits, cut-off, no-show block."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.hospital.conftest import FHIR

API = "/api/hospital"


def _at(minutes: int) -> str:
    t = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=minutes)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _put_slot(client, hospital, slot_id: str, start_min: int, length: int = 30) -> None:
    body = {"resourceType": "Slot", "id": slot_id, "schedule": {"reference": f"Schedule/{hospital.schedule}"},
            "status": "free", "start": _at(start_min), "end": _at(start_min + length)}
    r = await client.put(f"{FHIR}/Slot/{slot_id}", json=body)
    assert r.status_code in (200, 201), r.text


async def _book(client, hospital, slot_id: str, patient: str | None = None, headers=None):
    body = {"slot": slot_id, "hospital": hospital.tenant}
    if patient:
        body["patient"] = patient
    return await client.post(f"{API}/appointments", json=body, headers=headers or hospital.patient_headers())


async def test_patient_books_gets_queue_number_and_reminders(client, hospital, repo_factory):
    from yiyun.hospital.booking import due_reminders, reminders_of

    r = await _book(client, hospital, hospital.slots[0]["id"])
    assert r.status_code == 201, r.text
    booked = r.json()
    assert booked["status"] == "booked" and booked["queue_number"] == 1 and booked["patient"] == "pat-zhang"
    assert booked["practitioner_role"] == hospital.role and booked["consultation_type"] == "clinic"
    async with repo_factory(write=False) as repo:
        reminders = await reminders_of(repo.conn, hospital.tenant, booked["id"])
        start_us = int(datetime.fromisoformat(booked["start"].replace("Z", "+00:00")).timestamp() * 1e6)
        due_later = await due_reminders(repo.conn, now_us_=start_us - 3 * 3600 * 1_000_000)
    kinds = {x["kind"]: x["due_us"] for x in reminders}
    assert start_us - kinds.get("2h", start_us) == 2 * 3600 * 1_000_000
    assert any(x["appointment"] == booked["id"] for x in due_later) == ("24h" in kinds)
    mine = (await client.get(f"{API}/appointments", headers=hospital.patient_headers())).json()["appointments"]
    assert [a["id"] for a in mine] == [booked["id"]]
    again = await _book(client, hospital, hospital.slots[0]["id"])
    assert again.status_code == 409
    assert "请勿重复提交" in again.json()["detail"]


async def test_one_booking_per_department_a_day_and_the_booking_window(client, hospital):
    assert (await _book(client, hospital, hospital.slots[0]["id"])).status_code == 201
    second = await _book(client, hospital, hospital.slots[1]["id"])
    assert second.status_code == 422
    assert "同一科室" in second.json()["detail"]
    # staff booking a follow-up on the patient's behalf is not limited
    staff = await _book(client, hospital, hospital.slots[1]["id"], "pat-zhang", hospital.staff_headers())
    assert staff.status_code == 201, staff.text
    await _put_slot(client, hospital, "slot-far", 20 * 24 * 60)
    far = await _book(client, hospital, "slot-far")
    assert far.status_code == 422
    assert "天内" in far.json()["detail"]


async def test_cancel_before_the_cutoff_and_not_after(client, hospital):
    ok = await _book(client, hospital, hospital.slots[0]["id"])
    cancelled = await client.post(f"{API}/appointments/{hospital.tenant}/{ok.json()['id']}/cancel",
                                  json={"reason": "临时有事"}, headers=hospital.patient_headers())
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    twice = await client.post(f"{API}/appointments/{hospital.tenant}/{ok.json()['id']}/cancel",
                              headers=hospital.patient_headers())
    assert twice.status_code == 409
    await _put_slot(client, hospital, "slot-soon", 60)  # starts in an hour: inside the 2-hour cut-off
    soon = await _book(client, hospital, "slot-soon", headers=hospital.patient_headers("pat-wang"))
    assert soon.status_code == 201, soon.text
    late = await client.post(f"{API}/appointments/{hospital.tenant}/{soon.json()['id']}/cancel",
                             headers=hospital.patient_headers("pat-wang"))
    assert late.status_code == 422
    assert "不能在线取消" in late.json()["detail"]
    slot = (await client.get(f"{FHIR}/Slot/slot-soon")).json()
    assert slot["status"] == "busy"
    by_staff = await client.post(f"{API}/appointments/{hospital.tenant}/{soon.json()['id']}/cancel",
                                 headers=hospital.staff_headers())
    assert by_staff.status_code == 200
    assert (await client.get(f"{FHIR}/Slot/slot-soon")).json()["status"] == "free"


async def test_cutoff_is_configurable(client, hospital):
    r = await client.put(f"{API}/rules", json={"cancel_cutoff_minutes": 30})
    assert r.status_code == 200 and r.json()["cancel_cutoff_minutes"] == 30
    assert (await client.put(f"{API}/rules", json={"cancel_cutoff_minutes": -5})).status_code == 400
    await _put_slot(client, hospital, "slot-soon", 60)
    soon = await _book(client, hospital, "slot-soon")
    ok = await client.post(f"{API}/appointments/{hospital.tenant}/{soon.json()['id']}/cancel",
                           headers=hospital.patient_headers())
    assert ok.status_code == 200, ok.text


async def test_reschedule_moves_the_booking(client, hospital):
    first = (await _book(client, hospital, hospital.slots[0]["id"])).json()
    target = hospital.slots[3]["id"]
    r = await client.post(f"{API}/appointments/{hospital.tenant}/{first['id']}/reschedule", json={"slot": target},
                          headers=hospital.patient_headers())
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["id"] == first["id"] and moved["slot"] == target and moved["queue_number"] == 2
    assert (await client.get(f"{FHIR}/Slot/{hospital.slots[0]['id']}")).json()["status"] == "free"
    assert (await client.get(f"{FHIR}/Slot/{target}")).json()["status"] == "busy"
    taken = (await _book(client, hospital, hospital.slots[4]["id"], headers=hospital.patient_headers("pat-wang"))).json()
    clash = await client.post(f"{API}/appointments/{hospital.tenant}/{first['id']}/reschedule",
                              json={"slot": taken["slot"]}, headers=hospital.patient_headers())
    assert clash.status_code == 409
    assert (await client.get(f"{FHIR}/Slot/{target}")).json()["status"] == "busy"  # nothing half-done


async def test_patient_cannot_touch_anothers_booking(client, hospital):
    wang = (await _book(client, hospital, hospital.slots[0]["id"], headers=hospital.patient_headers("pat-wang"))).json()
    for action, body in (("cancel", {}), ("reschedule", {"slot": hospital.slots[1]["id"]})):
        r = await client.post(f"{API}/appointments/{hospital.tenant}/{wang['id']}/{action}", json=body,
                              headers=hospital.patient_headers("pat-zhang"))
        assert r.status_code == 404, r.text
    others = await client.get(f"{API}/appointments", params={"patient": "pat-wang"},
                              headers=hospital.patient_headers("pat-zhang"))
    assert others.status_code == 404
    for_other = await _book(client, hospital, hospital.slots[2]["id"], "pat-wang")
    assert for_other.status_code == 403


async def test_guardian_books_for_a_child(client, hospital):
    r = await _book(client, hospital, hospital.slots[0]["id"], "pat-zhang-child")
    assert r.status_code == 201, r.text
    assert r.json()["patient"] == "pat-zhang-child"
    listed = await client.get(f"{API}/appointments", params={"patient": "pat-zhang-child"},
                              headers=hospital.patient_headers())
    assert [a["id"] for a in listed.json()["appointments"]] == [r.json()["id"]]


async def test_guardianship_for_booking_ends_at_eighteen(client, hospital, repo_factory):
    """《民法典》第十七条: at 18 the child books for themselves; a court-appointed guardian of an
    adult without full capacity (第二十八条) still books for them."""
    from yiyun.identity.care import ADULT_GUARDIAN_CODE, GUARDIANSHIP_SYSTEM

    async with repo_factory() as repo:
        child = (await repo.read("Patient", "pat-zhang-child")).resource
        await repo.update("Patient", "pat-zhang-child", {**child, "birthDate": "2000-05-01"})
    refused = await _book(client, hospital, hospital.slots[0]["id"], "pat-zhang-child")
    assert refused.status_code == 403, refused.text
    async with repo_factory() as repo:
        rp = (await repo.read("RelatedPerson", "rp-zhang-child")).resource
        rp["relationship"] = [*rp["relationship"], {"coding": [{"system": GUARDIANSHIP_SYSTEM,
                                                                "code": ADULT_GUARDIAN_CODE}]}]
        await repo.update("RelatedPerson", "rp-zhang-child", rp)
    allowed = await _book(client, hospital, hospital.slots[0]["id"], "pat-zhang-child")
    assert allowed.status_code == 201, allowed.text


async def test_repeated_noshows_block_booking(client, hospital):
    past = [_at(-60 * 24 * d) for d in (30, 20, 1)]
    ids = []
    for i, start in enumerate(past):
        status = "noshow" if i < 2 else "booked"
        r = await client.post(f"{FHIR}/Appointment", json={
            "resourceType": "Appointment", "status": status, "start": start, "end": start,
            "participant": [{"actor": {"reference": "Patient/pat-zhang"}, "status": "accepted"}]})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    future = (await _book(client, hospital, hospital.slots[0]["id"])).json()
    early = await client.post(f"{API}/appointments/{hospital.tenant}/{future['id']}/noshow",
                              headers=hospital.staff_headers())
    assert early.status_code == 422  # not started yet
    by_patient = await client.post(f"{API}/appointments/{hospital.tenant}/{ids[2]}/noshow",
                                   headers=hospital.patient_headers())
    assert by_patient.status_code == 403
    r = await client.post(f"{API}/appointments/{hospital.tenant}/{ids[2]}/noshow", headers=hospital.staff_headers())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "noshow"
    block = (await client.get(f"{API}/block", headers=hospital.patient_headers())).json()
    assert block["blocked"] is True and "爽约 3 次" in block["reason"]
    refused = await _book(client, hospital, hospital.slots[5]["id"])
    assert refused.status_code == 403
    assert "爽约" in refused.json()["detail"]
    lifted = await client.delete(f"{API}/blocks/pat-zhang")
    assert lifted.json() == {"lifted": True}
    assert (await _book(client, hospital, hospital.slots[9]["id"])).status_code == 201


async def test_bad_booking_input_is_a_4xx(client, hospital):
    cases = [
        ({"slot": "no-such-slot", "hospital": hospital.tenant, "patient": "pat-zhang"}, 422),
        ({"slot": hospital.slots[0]["id"], "hospital": hospital.tenant}, 400),
        ({"slot": 5, "hospital": hospital.tenant, "patient": "pat-zhang"}, 422),
        ({"slot": hospital.slots[0]["id"], "hospital": "no-such-hospital", "patient": "pat-zhang"}, 404),
        ({"slot": hospital.slots[0]["id"], "hospital": hospital.tenant, "patient": "nobody"}, 404),
        ({"hospital": hospital.tenant}, 422),
        ({"slot": "../etc", "hospital": hospital.tenant}, 422),
    ]
    for body, status in cases:
        r = await client.post(f"{API}/appointments", json=body)
        assert r.status_code == status, (body, r.text)
    assert (await client.get(f"{FHIR}/Slot/{hospital.slots[0]['id']}")).json()["status"] == "free"


async def test_daily_view_counts_bookings_and_waiting_time(client, hospital):
    day = hospital.first_day.isoformat()
    booked = (await _book(client, hospital, hospital.slots[0]["id"])).json()
    other = (await _book(client, hospital, hospital.slots[1]["id"], headers=hospital.patient_headers("pat-wang"))).json()
    await client.post(f"{API}/appointments/{hospital.tenant}/{other['id']}/cancel", headers=hospital.patient_headers("pat-wang"))
    # the visit began 20 minutes after the booked start
    start = datetime.fromisoformat(booked["start"].replace("Z", "+00:00")) + timedelta(minutes=20)
    encounter = {"resourceType": "Encounter", "status": "in-progress",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                 "subject": {"reference": "Patient/pat-zhang"}, "appointment": [{"reference": f"Appointment/{booked['id']}"}],
                 "period": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    assert (await client.post(f"{FHIR}/Encounter", json=encounter)).status_code == 201
    view = (await client.get(f"{API}/daily", params={"day": day})).json()
    assert view["appointments"] == 2
    assert view["by_status"] == {"booked": 1, "cancelled": 1}
    dept = view["by_department"][0]
    assert dept["id"] == hospital.service and dept["name"] == "呼吸内科" and dept["total"] == 2
    assert view["slots"]["busy"] == 1 and view["slots"]["total"] == 8 + 4  # clinic and evening online slots
    assert view["waiting_minutes"] == {"count": 1, "mean": 20.0, "median": 20.0}
    assert (await client.get(f"{API}/daily", headers=hospital.staff_headers("doctor"))).status_code == 403
    assert (await client.get(f"{API}/daily", headers=hospital.staff_headers("admin"))).status_code == 200


async def test_reminders_fall_due_and_are_marked_sent(client, hospital, repo_factory):
    from yiyun.hospital.booking import due_reminders, mark_reminder_sent, reminders_of

    await _put_slot(client, hospital, "slot-soon", 90)  # both reminder times already past: none recorded
    soon = (await _book(client, hospital, "slot-soon")).json()
    later = (await _book(client, hospital, hospital.slots[-1]["id"], headers=hospital.patient_headers("pat-wang"))).json()
    async with repo_factory() as repo:
        assert await reminders_of(repo.conn, hospital.tenant, soon["id"]) == []
        mine = await reminders_of(repo.conn, hospital.tenant, later["id"])
        assert [r["kind"] for r in mine] == ["24h", "2h"]
        two_hours = mine[1]["due_us"]
        due = [r for r in await due_reminders(repo.conn, now_us_=two_hours) if r["appointment"] == later["id"]]
        assert {r["kind"] for r in due} == {"24h", "2h"}
        await mark_reminder_sent(repo.conn, hospital.tenant, later["id"], "24h")
        due = [r for r in await due_reminders(repo.conn, now_us_=two_hours) if r["appointment"] == later["id"]]
        assert [r["kind"] for r in due] == ["2h"]
    cancelled = await client.post(f"{API}/appointments/{hospital.tenant}/{later['id']}/cancel",
                                  headers=hospital.patient_headers("pat-wang"))
    assert cancelled.status_code == 200
    async with repo_factory() as repo:
        assert await reminders_of(repo.conn, hospital.tenant, later["id"]) == []  # no reminder for a cancelled visit
