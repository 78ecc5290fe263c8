"""The consultation WebSocket on real servers: two server processes sharing the database
and Redis, the patient on one and the doctor on the other (SQLite and PostgreSQL).
With CI=true an unreachable Redis fails these tests instead of skipping them."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest
import websockets

from tests.conftest import IN_CI, running_server
from tests.hospital.test_consultation import ENDO, FORM, clinic  # noqa: F401  (fixture)

REDIS_DEFAULT = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    import redis

    url = os.environ.get("YIYUN_TEST_REDIS_URL", REDIS_DEFAULT)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        message = f"Redis unreachable at {url}: {exc}"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    return url


def token(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def ws_url(base: str, cid: str, headers: dict[str, str], **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"access_token": token(headers), **params}.items())
    return base.replace("http://", "ws://") + f"/api/consultations/{cid}/ws?{query}"


async def next_frame(ws, kind: str, timeout: float = 5.0) -> dict:
    """The next frame of `kind`, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame


async def next_message(ws, timeout: float = 5.0) -> dict:
    """The next chat message from a person (system notes such as "accepted" skipped)."""
    while True:
        frame = await next_frame(ws, "message", timeout)
        if frame["from"] != "system":
            return frame


async def no_frame(ws, kind: str, wait: float = 0.5) -> None:
    try:
        async with asyncio.timeout(wait):
            while True:
                frame = json.loads(await ws.recv())
                assert frame["type"] != kind, frame
    except TimeoutError:
        return


@pytest.fixture
def two_servers(db_url, clinic):  # noqa: F811
    url = redis_url()
    env = {**os.environ, "YIYUN_REDIS_URL": url, "YIYUN_LOG_LEVEL": "WARNING"}
    clinic.patient()  # the signing key exists before two servers could both create it
    with running_server(env) as a, running_server(env) as b:
        yield a, b


async def test_chat_across_two_server_processes_through_redis(two_servers, clinic):  # noqa: F811
    a, b = two_servers
    patient, doctor, wang = clinic.patient(), clinic.doctor(), clinic.patient("pat-wang")
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{a}/api/consultations", json={"mode": "text", "department": ENDO, "form": FORM},
                            headers=patient)
        cid = r.json()["id"]
        assert (await http.post(f"{b}/api/consultations/{cid}/accept", headers=doctor)).status_code == 200

        async with websockets.connect(ws_url(a, cid, patient)) as pws, \
                websockets.connect(ws_url(b, cid, doctor)) as dws:
            hello = await next_frame(pws, "hello")
            assert hello["role"] == "patient" and hello["state"] == "active"
            assert (await next_frame(dws, "hello"))["role"] == "doctor"

            # a message sent on server A reaches the doctor on server B, stored first
            await pws.send(json.dumps({"type": "message", "text": "医生您好", "client_id": "m1"}))
            got = await next_message(dws)
            assert got["text"] == "医生您好" and got["from"] == "patient" and got["client_id"] == "m1"
            echo = await next_message(pws)
            assert echo["seq"] == got["seq"]
            stored = await http.get(f"{a}/api/consultations/{cid}/messages?since={got['seq'] - 1}", headers=doctor)
            assert stored.json()["messages"][0]["id"] == got["id"]

            # typing goes to the other side only; read receipts to both
            await dws.send(json.dumps({"type": "typing", "typing": True}))
            typing = await next_frame(pws, "typing")
            assert typing == {"type": "typing", "consultation": cid, "by": "doctor", "typing": True}
            await no_frame(dws, "typing")
            await dws.send(json.dumps({"type": "read", "seq": got["seq"]}))
            assert (await next_frame(pws, "read")) == {"type": "read", "consultation": cid, "by": "doctor",
                                                       "seq": got["seq"]}

            # a retried message (same client_id) is stored once; the sender gets the stored copy
            await pws.send(json.dumps({"type": "message", "text": "医生您好", "client_id": "m1"}))
            assert (await next_message(pws))["seq"] == got["seq"]
            await no_frame(dws, "message")

            # bad frames get error frames, the socket stays
            await pws.send("not json")
            assert (await next_frame(pws, "error"))["status"] == 400
            await pws.send(json.dumps({"type": "message", "text": ""}))
            assert (await next_frame(pws, "error"))["status"] == 400

            # a flood of frames is cut short (429), the socket stays open
            for _ in range(90):
                await pws.send(json.dumps({"type": "typing", "typing": True}))
            assert (await next_frame(pws, "error"))["status"] == 429

        # missed messages are replayed on reconnect with since=<last seq>
        for text in ("请测一下空腹血糖", "明早再测一次"):
            await http.post(f"{b}/api/consultations/{cid}/messages", json={"text": text}, headers=doctor)
        async with websockets.connect(ws_url(a, cid, patient, since=got["seq"])) as pws:
            await next_frame(pws, "hello")
            replay = [await next_frame(pws, "message") for _ in range(2)]
            assert [m["text"] for m in replay] == ["请测一下空腹血糖", "明早再测一次"]
            assert replay[0]["seq"] == got["seq"] + 1

            # signalling: relayed to the other party only
            call = (await http.post(f"{b}/api/consultations/{cid}/calls", headers=doctor)).json()
            async with websockets.connect(ws_url(b, cid, doctor, messages="none")) as dws:
                await next_frame(dws, "hello")
                await pws.send(json.dumps({"type": "offer", "call_id": call["id"], "sdp": "v=0\r\n", "extra": "x"}))
                offer = await next_frame(dws, "offer")
                assert offer == {"type": "offer", "consultation": cid, "call_id": call["id"], "from": "patient",
                                 "sdp": "v=0\r\n"}
                await no_frame(pws, "offer")
                await pws.send(json.dumps({"type": "offer", "call_id": "nope", "sdp": "v=0"}))
                assert (await next_frame(pws, "error"))["status"] == 404

                # the doctor ends the consultation: both hear it, messages are refused with 409
                await http.post(f"{b}/api/consultations/{cid}/end", headers=doctor)
                assert (await next_frame(pws, "state"))["state"] == "ended"
                assert (await next_frame(dws, "state"))["state"] == "ended"
                await pws.send(json.dumps({"type": "message", "text": "还有问题", "client_id": "late"}))
                refused = await next_frame(pws, "error")
                assert refused["status"] == 409 and refused["client_id"] == "late"

        # another patient: an error frame and close code 4404, nothing of the conversation
        async with websockets.connect(ws_url(a, cid, wang)) as ws:
            frames = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    frames.append(await ws.recv())
            assert closed.value.rcvd.code == 4404
            assert all("血糖" not in f for f in frames)
        # no sign-in at all
        bare = a.replace("http://", "ws://") + f"/api/consultations/{cid}/ws"
        with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed)):
            async with websockets.connect(bare) as ws:
                await ws.recv()
