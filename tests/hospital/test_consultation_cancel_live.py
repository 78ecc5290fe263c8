"""A consultation cancelled with its booking is announced at once, on SQLite and PostgreSQL:
the consultation's channel carries the note and the `cancelled` state with the reason, the
queue channel drops it; a refused change announces nothing (frames follow the commit).

Personas: tests/hospital/conftest.py (patient Zhang, doctor Li)."""

from __future__ import annotations

import asyncio
import contextlib

from tests.hospital.test_consultation_rules import accept, book_online, consult_for_booking
from yiyun.core.realtime import get_broker
from yiyun.hospital.consultations.service import channel, queue_channel


async def frames_until(sub, kind: str, timeout: float = 5.0) -> list[dict]:
    """Frames up to and including the first of `kind`."""
    out = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await sub.get()
            assert frame is not None, "subscription closed"
            out.append(frame)
            if frame["type"] == kind:
                return out


async def nothing(sub, wait: float = 0.3) -> None:
    assert await sub.get(timeout=wait) is None


@contextlib.asynccontextmanager
async def listening(tenant: str, cid: str):
    broker = get_broker()
    async with broker.subscribe(channel(tenant, cid)) as consultation, \
            broker.subscribe(queue_channel(tenant)) as queue:
        yield consultation, queue


async def test_a_booking_cancelled_by_the_patient_is_announced_to_both_sides(client, hospital):
    appt_id = await book_online(client, hospital)
    cid = await consult_for_booking(client, hospital, appt_id)
    async with listening(hospital.tenant, cid) as (consultation, queue):
        r = await client.post(f"/api/hospital/appointments/{hospital.tenant}/{appt_id}/cancel", json={},
                              headers=hospital.patient_headers())
        assert r.status_code == 200, r.text
        frames = await frames_until(consultation, "state")
        note = next(f for f in frames if f["type"] == "message")
        assert note["from"] == "system" and "预约已取消" in note["text"]
        state = frames[-1]
        assert state["state"] == "cancelled" and state["cause"] == "booking-cancelled"
        assert "预约已取消" in state["reason"] and state["consultation"] == cid
        assert (await frames_until(queue, "queue")) == [{"type": "queue", "consultation": cid, "state": "cancelled"}]
    # what the frame said is what a reload shows
    detail = (await client.get(f"/api/consultations/{cid}", headers=hospital.patient_headers())).json()
    assert detail["state"] == "cancelled" and "预约已取消" in detail["cancel_reason"]


async def test_a_noshow_is_announced_and_a_refused_cancellation_is_not(client, hospital, repo_factory):
    from yiyun.hospital import booking

    # a booking the patient missed: staff mark it (its start is past, as the job would find it)
    appt_id = await book_online(client, hospital)
    cid = await consult_for_booking(client, hospital, appt_id)
    async with repo_factory() as repo:
        appt = dict((await repo.read("Appointment", appt_id)).resource)
        appt.pop("meta", None)
        appt["start"], appt["end"] = "2026-01-05T11:00:00Z", "2026-01-05T11:30:00Z"
        await booking.system_repo(repo, booking.SYSTEM).update("Appointment", appt_id, appt)
    async with listening(hospital.tenant, cid) as (consultation, queue):
        r = await client.post(f"/api/hospital/appointments/{hospital.tenant}/{appt_id}/noshow",
                              headers=hospital.staff_headers())
        assert r.status_code == 200, r.text
        state = (await frames_until(consultation, "state"))[-1]
        assert state["state"] == "cancelled" and state["cause"] == "booking-noshow"
        assert "爽约" in state["reason"]
        assert (await frames_until(queue, "queue"))[-1]["state"] == "cancelled"

    # in progress: the cancellation is refused and rolled back, so nothing is announced
    other = await book_online(client, hospital)
    busy = await consult_for_booking(client, hospital, other)
    assert (await accept(client, hospital, busy)).status_code == 200
    async with listening(hospital.tenant, busy) as (consultation, queue):
        r = await client.post(f"/api/hospital/appointments/{hospital.tenant}/{other}/cancel", json={},
                              headers=hospital.patient_headers())
        assert r.status_code == 409
        await nothing(consultation)
        await nothing(queue)
