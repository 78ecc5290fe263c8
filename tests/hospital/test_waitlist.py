"""Waitlist (候补挂号): joining a full day, being booked when a slot frees, leaving; a freed
slot goes to exactly one patient under concurrent cancellations and bookings."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest_asyncio

from tests.hospital.conftest import FHIR, build_hospital

API = "/api/hospital"
HOLDERS = [f"pat-h{i}" for i in range(4)]  # book the whole day
WAITERS = [f"pat-w{i}" for i in range(6)]
WALK_INS = [f"pat-x{i}" for i in range(4)]


@pytest_asyncio.fixture
async def full_day(repo_factory, tenant, engine, client):
    """A hospital whose doctor Li has 4 clinic slots tomorrow, all booked."""
    from yiyun.fhir.hooks import register_write_hook
    from yiyun.hospital.booking import appointment_write_hook

    register_write_hook("Appointment", appointment_write_hook)
    h = await build_hospital(repo_factory, tenant, days=2, slot_minutes=60)
    async with repo_factory() as repo:
        for pid in HOLDERS + WAITERS + WALK_INS:
            await repo.update("Patient", pid, {"resourceType": "Patient", "id": pid, "active": True,
                                               "name": [{"text": pid}]})
    h.day_slots = [s for s in h.slots if s["start"].startswith(h.first_day.isoformat())]
    assert len(h.day_slots) == 4
    h.bookings = {}
    for pid, slot in zip(HOLDERS, h.day_slots, strict=True):
        r = await client.post(f"{API}/appointments", json={"slot": slot["id"]}, headers=h.patient_headers(pid))
        assert r.status_code == 201, r.text
        h.bookings[pid] = r.json()["id"]
    return h


async def _join(client, h, patient: str, *, day=None, schedule=None):
    return await client.post(f"{API}/waitlist", json={"schedule": schedule or h.schedule,
                                                      "day": (day or h.first_day).isoformat()},
                             headers=h.patient_headers(patient))


async def _entries(client, h, patient: str) -> list[dict]:
    r = await client.get(f"{API}/waitlist", headers=h.patient_headers(patient))
    assert r.status_code == 200, r.text
    return r.json()["entries"]


async def _active(client, slot_id: str) -> list[dict]:
    found = (await client.get(f"{FHIR}/Appointment", params={"slot": f"Slot/{slot_id}", "_count": 100})).json()
    return [e["resource"] for e in found.get("entry", []) if e["resource"]["status"] == "booked"]


async def test_join_only_a_full_day_once_and_within_the_limit(client, full_day, monkeypatch):
    h = full_day
    other_day = h.first_day + timedelta(days=1)
    r = await _join(client, h, WAITERS[0], day=other_day)
    assert r.status_code == 409 and "直接预约" in r.json()["detail"]  # that day still has free slots
    r = await _join(client, h, WAITERS[0], schedule=h.online_schedule)
    assert r.status_code == 409
    first = await _join(client, h, WAITERS[0])
    assert first.status_code == 201, first.text
    assert first.json()["position"] == 1 and first.json()["status"] == "waiting"
    second = await _join(client, h, WAITERS[1])
    assert second.json()["position"] == 2
    assert (await _join(client, h, WAITERS[0])).status_code == 409  # already waiting
    assert (await _join(client, h, HOLDERS[0])).status_code == 409  # already booked with the doctor that day
    from yiyun.hospital import waitlist

    monkeypatch.setattr(waitlist, "MAX_WAITING_PER_PATIENT", 1)
    # fill the other doctor's nothing: his day has no session at all
    r = await _join(client, h, WAITERS[0], schedule=f"sch-{h.other_role}-clinic")
    assert r.status_code == 422 and "不出诊" in r.json()["detail"]
    r = await _join(client, h, WAITERS[2])
    assert r.status_code == 201
    past = await _join(client, h, WAITERS[3], day=h.first_day - timedelta(days=3))
    assert past.status_code == 422
    assert (await client.post(f"{API}/waitlist", json={"schedule": h.schedule, "day": "tomorrow"},
                              headers=h.patient_headers(WAITERS[3]))).status_code == 422
    staff = await client.post(f"{API}/waitlist", json={"schedule": h.schedule, "day": h.first_day.isoformat()},
                              headers=h.staff_headers("nurse"))
    assert staff.status_code == 400  # staff name the patient


async def test_a_cancellation_books_the_first_waiting_patient_and_tells_them(client, full_day):
    h = full_day
    for pid in WAITERS[:2]:
        assert (await _join(client, h, pid)).status_code == 201
    r = await client.post(f"{API}/appointments/{h.tenant}/{h.bookings[HOLDERS[1]]}/cancel", json={},
                          headers=h.patient_headers(HOLDERS[1]))
    assert r.status_code == 200, r.text
    freed = h.day_slots[1]["id"]
    holders = await _active(client, freed)
    assert len(holders) == 1
    assert holders[0]["participant"][0]["actor"]["reference"] == f"Patient/{WAITERS[0]}"
    assert any(i["system"].endswith("/queue-number") for i in holders[0]["identifier"])
    mine = await _entries(client, h, WAITERS[0])
    assert mine[0]["status"] == "booked" and mine[0]["appointment"] == holders[0]["id"]
    notes = (await client.get(f"{API}/notifications", headers=h.patient_headers(WAITERS[0]))).json()
    assert notes["notifications"][0]["kind"] == "waitlist-booked"
    assert "候补成功" in notes["notifications"][0]["text"]
    assert (await _entries(client, h, WAITERS[1]))[0]["position"] == 1
    # the booking is the patient's own: it shows among their appointments and they may cancel it
    theirs = (await client.get(f"{API}/appointments", headers=h.patient_headers(WAITERS[0]))).json()
    assert [a["id"] for a in theirs["appointments"]] == [holders[0]["id"]]


async def test_a_patient_the_rules_refuse_is_passed_over(client, full_day, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.fhir.model import now_us
    from yiyun.hospital.models import booking_block

    h = full_day
    for pid in WAITERS[:2]:
        assert (await _join(client, h, pid)).status_code == 201
    async with unit_of_work(engine) as conn:  # the first has since been barred after no-shows
        await conn.execute(booking_block.insert().values(tenant=h.tenant, patient=WAITERS[0],
                                                         blocked_until=now_us() + 10**12, reason="爽约",
                                                         created_ts=now_us()))
    r = await client.post(f"{FHIR}/Appointment/{h.bookings[HOLDERS[2]]}/$cancel",
                          json={"resourceType": "Parameters"})  # by the hospital, through FHIR
    assert r.status_code == 200, r.text
    holders = await _active(client, h.day_slots[2]["id"])
    assert [x["participant"][0]["actor"]["reference"] for x in holders] == [f"Patient/{WAITERS[1]}"]
    skipped = (await _entries(client, h, WAITERS[0]))[0]
    assert skipped["status"] == "waiting" and "爽约" in skipped["note"]


async def test_leaving_the_waitlist(client, full_day):
    h = full_day
    entry = (await _join(client, h, WAITERS[0])).json()
    assert (await client.delete(f"{API}/waitlist/{h.tenant}/{entry['id']}",
                                headers=h.patient_headers(WAITERS[1]))).status_code == 404  # not theirs
    r = await client.delete(f"{API}/waitlist/{h.tenant}/{entry['id']}", headers=h.patient_headers(WAITERS[0]))
    assert r.status_code == 200 and r.json()["status"] == "left"
    assert (await client.delete(f"{API}/waitlist/{h.tenant}/{entry['id']}",
                                headers=h.patient_headers(WAITERS[0]))).status_code == 409
    await client.post(f"{API}/appointments/{h.tenant}/{h.bookings[HOLDERS[0]]}/cancel", json={},
                      headers=h.patient_headers(HOLDERS[0]))
    assert await _active(client, h.day_slots[0]["id"]) == []  # nobody waits any more: the slot stays free


async def test_slots_freed_by_a_plain_write_are_served_by_the_sweep(client, full_day):
    h = full_day
    assert (await _join(client, h, WAITERS[0])).status_code == 201
    appt = (await client.get(f"{FHIR}/Appointment/{h.bookings[HOLDERS[3]]}")).json()
    appt.pop("meta")
    r = await client.put(f"{FHIR}/Appointment/{appt['id']}", json={**appt, "status": "cancelled"})
    assert r.status_code == 200, r.text
    assert await _active(client, h.day_slots[3]["id"]) == []
    swept = await client.post(f"{API}/waitlist/fill")
    assert swept.status_code == 200, swept.text
    assert len(swept.json()["served"]) == 1
    assert (await _active(client, h.day_slots[3]["id"]))[0]["participant"][0]["actor"]["reference"] == \
        f"Patient/{WAITERS[0]}"
    assert (await client.post(f"{API}/waitlist/fill", headers=h.patient_headers(WAITERS[0]))).status_code == 403


async def test_the_periodic_sweep_serves_slots_freed_by_a_plain_write(client, full_day, engine):
    from yiyun.hospital.tasks import sweep_waitlists

    h = full_day
    assert (await _join(client, h, WAITERS[1])).status_code == 201
    appt = (await client.get(f"{FHIR}/Appointment/{h.bookings[HOLDERS[2]]}")).json()
    appt.pop("meta")
    r = await client.put(f"{FHIR}/Appointment/{appt['id']}", json={**appt, "status": "cancelled"})
    assert r.status_code == 200, r.text
    assert await sweep_waitlists(engine, tenants=[h.tenant]) == 1
    assert (await _active(client, h.day_slots[2]["id"]))[0]["participant"][0]["actor"]["reference"] == \
        f"Patient/{WAITERS[1]}"
    assert await sweep_waitlists(engine, tenants=[h.tenant]) == 0  # nothing left to serve


async def test_slots_freed_by_a_leave_are_not_handed_out(client, full_day):
    h = full_day
    assert (await _join(client, h, WAITERS[0])).status_code == 201
    start = h.day_slots[0]["start"]
    r = await client.post(f"{API}/leave", json={"role": h.role, "start": start,
                                                "end": h.day_slots[0]["end"], "confirm": True})
    assert r.status_code == 201, r.text
    assert (await client.post(f"{API}/waitlist/fill")).json()["served"] == []
    assert (await client.get(f"{FHIR}/Slot/{h.day_slots[0]['id']}")).json()["status"] == "busy-unavailable"
    assert (await _entries(client, h, WAITERS[0]))[0]["status"] == "waiting"  # the rest of the day is held
    r = await client.post(f"{API}/leave", json={"role": h.role, **_whole_day(h), "confirm": True})
    assert r.status_code == 201, r.text
    entry = (await _entries(client, h, WAITERS[0]))[0]
    assert entry["status"] == "expired" and "停诊" in entry["note"]
    notes = (await client.get(f"{API}/notifications", headers=h.patient_headers(WAITERS[0]))).json()
    assert "候补已结束" in notes["notifications"][0]["text"]


def _whole_day(h) -> dict:
    start = datetime.fromisoformat(f"{h.first_day.isoformat()}T00:00:00+08:00")
    return {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()}


async def test_concurrent_cancellations_and_bookings_give_each_freed_slot_to_exactly_one(client, full_day):
    h = full_day
    for pid in WAITERS:
        assert (await _join(client, h, pid)).status_code == 201
    cancels = [client.post(f"{API}/appointments/{h.tenant}/{h.bookings[pid]}/cancel", json={},
                           headers=h.patient_headers(pid)) for pid in HOLDERS]
    # walk-ins try to grab each freed slot at the same moment
    grabs = [client.post(f"{API}/appointments", json={"slot": s["id"]}, headers=h.patient_headers(pid))
             for pid, s in zip(WALK_INS, h.day_slots, strict=True)]
    twice = [client.post(f"{API}/appointments/{h.tenant}/{h.bookings[HOLDERS[0]]}/cancel", json={},
                         headers=h.patient_headers(HOLDERS[0]))]
    results = await asyncio.gather(*cancels, *grabs, *twice)
    assert all(r.status_code in (200, 201, 409) for r in results), [r.text for r in results]
    cancelled = results[:len(HOLDERS)] + results[-1:]
    assert sum(r.status_code == 200 for r in cancelled) == len(HOLDERS)
    owners = []
    for s in h.day_slots:
        active = await _active(client, s["id"])
        assert len(active) == 1, (s["id"], active)
        owners.append(active[0]["participant"][0]["actor"]["reference"].split("/")[1])
    assert len(set(owners)) == 4  # nobody holds two
    served = {pid: (await _entries(client, h, pid))[0] for pid in WAITERS}
    booked = [pid for pid, e in served.items() if e["status"] == "booked"]
    assert sorted(booked) == sorted(o for o in owners if o in WAITERS)
    assert booked == WAITERS[:len(booked)]  # first come, first served
    assert all(served[pid]["status"] == "waiting" for pid in WAITERS[len(booked):])


async def test_joining_while_a_slot_frees_never_leaves_a_free_slot_with_someone_waiting(client, full_day):
    h = full_day
    for holder, waiter, slot in zip(HOLDERS, WAITERS[:len(HOLDERS)], h.day_slots, strict=True):
        cancel, join = await asyncio.gather(
            client.post(f"{API}/appointments/{h.tenant}/{h.bookings[holder]}/cancel", json={},
                        headers=h.patient_headers(holder)),
            _join(client, h, waiter))
        assert cancel.status_code == 200, cancel.text
        held = await _active(client, slot["id"])
        if join.status_code == 201:  # joined first: served by the cancellation
            assert [a["participant"][0]["actor"]["reference"] for a in held] == [f"Patient/{waiter}"]
            assert (await _entries(client, h, waiter))[0]["status"] == "booked"
        else:  # the slot was already free: told to book it
            assert join.status_code == 409 and "直接预约" in join.json()["detail"], join.text
            assert held == []
            book = await client.post(f"{API}/appointments", json={"slot": slot["id"]},
                                     headers=h.patient_headers(waiter))
            assert book.status_code == 201, book.text
