"""A consultation cancelled with its booking, seen live over WebSockets on real servers: two
server processes sharing the database and Redis (SQLite and PostgreSQL). The booking is
cancelled on one server; the patient's chat and the doctor's chat and queue sockets on
the other hear it without reloading. With CI=true an unreachable Redis fails these tests."""

from __future__ import annotations

import os

import httpx
import pytest
import websockets

from tests.conftest import running_server
from tests.hospital.test_consultation_ws import next_frame, redis_url, token, ws_url


def queue_url(base: str, headers: dict[str, str]) -> str:
    return base.replace("http://", "ws://") + f"/api/consultations/queue/ws?access_token={token(headers)}"


@pytest.fixture
def two_servers(db_url, hospital):
    url = redis_url()
    env = {**os.environ, "YIYUN_REDIS_URL": url, "YIYUN_LOG_LEVEL": "WARNING"}
    hospital.patient_headers()  # the signing key exists before two servers could both create it
    with running_server(env) as a, running_server(env) as b:
        yield a, b


async def test_a_cancelled_booking_reaches_both_sides_live_across_servers(two_servers, hospital):
    a, b = two_servers
    patient, doctor = hospital.patient_headers(), hospital.staff_headers()
    async with httpx.AsyncClient() as http:
        slots = await http.get(f"{a}/api/hospital/directory/hospitals/{hospital.tenant}/slots",
                               params={"schedule": hospital.online_schedule})
        booked = await http.post(f"{a}/api/hospital/appointments", headers=patient,
                                 json={"slot": slots.json()["slots"][0]["id"], "hospital": hospital.tenant})
        assert booked.status_code == 201, booked.text
        appt_id = booked.json()["id"]
        started = await http.post(f"{a}/api/consultations", headers=patient, json={
            "mode": "text", "appointment": f"Appointment/{appt_id}", "form": {"chief_complaint": "咳嗽三天"}})
        assert started.status_code == 201, started.text
        cid = started.json()["id"]

        async with websockets.connect(ws_url(a, cid, patient)) as pws, \
                websockets.connect(ws_url(b, cid, doctor)) as dws, \
                websockets.connect(queue_url(b, doctor)) as qws:
            assert (await next_frame(pws, "hello"))["state"] == "waiting"
            assert (await next_frame(dws, "hello"))["role"] == "doctor"
            await next_frame(qws, "hello")

            r = await http.post(f"{b}/api/hospital/appointments/{hospital.tenant}/{appt_id}/cancel", json={},
                                headers=patient)
            assert r.status_code == 200, r.text

            # the patient's chat: the note, then the state with its reason
            note = await next_frame(pws, "message")
            assert note["from"] == "system" and "预约已取消" in note["text"]
            state = await next_frame(pws, "state")
            assert state["state"] == "cancelled" and state["cause"] == "booking-cancelled"
            assert "预约已取消" in state["reason"]
            # the doctor's chat and queue, on the other server
            assert (await next_frame(dws, "state"))["state"] == "cancelled"
            assert await next_frame(qws, "queue") == {"type": "queue", "consultation": cid, "state": "cancelled"}

            # the chat refuses messages now
            await pws.send('{"type": "message", "text": "还在吗", "client_id": "late"}')
            assert (await next_frame(pws, "error"))["status"] == 409

        # the queue socket is the doctors': a patient is turned away (4403), nothing sent
        async with websockets.connect(queue_url(a, patient)) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    frame = await ws.recv()
                    assert '"queue"' not in frame
            assert closed.value.rcvd.code == 4403
