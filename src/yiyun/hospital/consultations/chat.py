"""The consultation's WebSocket: real-time chat, read receipts, typing and video signalling.

`GET /api/consultations/{id}/ws?since=<seq>` (`&messages=none`: signalling and state only;
sign-in: `?access_token=` or the session
cookie). JSON frames both ways, each with a `type`:

client → server
  message {text, client_id?}          a chat message (persisted before anyone sees it)
  read {seq}                          read receipt: everything up to seq was read
  typing {typing: bool}               typing state (not stored)
  join|offer|answer|ice|hangup|state  video signalling (see signalling.py)
  ping                                answered with pong

server → client
  hello {consultation, role, state, last_seq, patient_read_seq, doctor_read_seq}
  message {seq, id, kind, from, sender, text | image, sent, client_id}
  read {by, seq} · typing {by, typing} · state {state, doctor, call?} · form {photo}
  offer|answer|ice|join|hangup (from the other party)
  error {status, detail, client_id?, for}

A consultation cancelled because its booking was cancelled or marked no-show
(`bookings`) is announced like any other change: the system note, then
`state {state: "cancelled", reason, cause: booking-cancelled | booking-noshow}`.

`GET /api/consultations/queue/ws` (doctors): the hospital's queue changes as they happen,
`queue {consultation, state}` (waiting: a new one; active: accepted; cancelled or ended:
gone), so the doctor's queue page updates without reloading. Frames carry ids only.

On connect the server replays the messages after `since`, then streams. Messages are
fanned out through `yiyun.core.realtime` (Redis pub/sub when configured), so the two
parties may be connected to different server processes. A closed consultation refuses
messages with an error frame (status 409); a caller who is not a party gets close code
4404 (as a REST 404: nothing is revealed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from fastapi import WebSocket, WebSocketDisconnect

from yiyun.core.errors import BadRequest, YiyunError
from yiyun.core.logging import get_logger
from yiyun.core.realtime import get_broker, relay_to_websocket
from yiyun.identity.sessions import WebSocketUnauthorized, websocket_context
from yiyun.hospital.consultations import service, signalling, writer
from yiyun.hospital.consultations.service import Party, open_work, party_of

log = get_logger("yiyun.consultation.chat")

WS_FORBIDDEN, WS_NOT_FOUND, WS_TRY_AGAIN = 4403, 4404, 1013
MAX_FRAME = 64 * 1024
# A person types a few messages a second at most; a call's ICE gathering sends a burst of
# candidates. 30 frames a second (bursts of 60) leaves both room and stops a flood.
FRAME_RATE, FRAME_BURST = 30.0, 60.0


class Connection:
    """One party's socket: sends are serialised; frames from the channel are filtered."""

    def __init__(self, ws: WebSocket, party: Party, cid: str, relation: str) -> None:
        self.ws, self.party, self.cid, self.relation = ws, party, cid, relation
        self.replayed = 0  # live frames up to this sequence number were already sent by the replay
        self.messages = True  # False for a signalling-only socket (`?messages=none`, the video page)
        self._lock = asyncio.Lock()
        self.closed = False
        self._tokens, self._refilled = FRAME_BURST, time.monotonic()

    def allow(self) -> bool:
        """Token bucket of frames from the client."""
        now = time.monotonic()
        self._tokens = min(FRAME_BURST, self._tokens + (now - self._refilled) * FRAME_RATE)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def send(self, frame: dict) -> None:
        async with self._lock:
            await self.ws.send_text(orjson.dumps(frame).decode())

    async def error(self, exc: YiyunError | str, *, status: int = 400, for_type: str | None = None,
                    client_id: str | None = None) -> None:
        if isinstance(exc, YiyunError):
            status, detail = exc.status, exc.message
        else:
            detail = exc
        await self.send({"type": "error", "status": status, "detail": detail, "for": for_type,
                         "client_id": client_id})

    def wants(self, frame: dict) -> bool:
        """Whether a frame from the channel goes to this socket."""
        kind = frame.get("type")
        if kind == "message":
            return self.messages and frame["seq"] > self.replayed
        if kind == "typing":
            return frame.get("by") != self.relation
        if kind in signalling.RELAYED:
            return frame.get("from") != self.relation and self.relation in ("patient", "doctor")
        return True


async def _refuse(websocket: WebSocket, status: int, detail: str, code: int) -> None:
    """Tell the page why (an error frame, as the JSON API would say it) and close."""
    await websocket.send_text(orjson.dumps({"type": "error", "status": status, "detail": detail}).decode())
    await websocket.close(code=code)


async def consultation_socket(websocket: WebSocket, consultation_id: str) -> None:
    try:
        ctx = await websocket_context(websocket)
    except WebSocketUnauthorized:
        return
    await websocket.accept()
    try:
        party = party_of(ctx)
        since = int(websocket.query_params.get("since", "0") or 0)
        async with open_work(party, write=False) as work:
            row, relation = await service.load(work, consultation_id)
    except ValueError:
        return await _refuse(websocket, 400, "since 应为整数 (since must be an integer)", 1008)
    except YiyunError as exc:
        return await _refuse(websocket, exc.status, exc.message, WS_NOT_FOUND if exc.status == 404 else WS_FORBIDDEN)
    conn = Connection(websocket, party, consultation_id, relation)
    conn.messages = websocket.query_params.get("messages") != "none"
    broker = get_broker()
    async with broker.subscribe(service.channel(party.tenant, consultation_id)) as sub:
        # subscribed before the replay, so nothing published in between is lost (duplicates
        # are dropped by sequence number)
        await _hello_and_replay(conn, since)
        pump = asyncio.create_task(_pump(conn, sub))
        try:
            await _read_loop(conn, pump)
        finally:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump


async def _hello_and_replay(conn: Connection, since: int) -> None:
    async with open_work(conn.party, write=False) as work:
        row, conn.relation = await service.load(work, conn.cid)
        await conn.send({"type": "hello", "consultation": conn.cid, "role": conn.relation, "state": row.state,
                         "last_seq": row.last_seq, "patient_read_seq": row.patient_read_seq,
                         "doctor_read_seq": row.doctor_read_seq})
        after = max(0, since)
        while conn.messages:
            page = await service._messages_after(work, row.tenant, conn.cid, after, service.REPLAY_LIMIT)
            for frame in page:
                await conn.send(frame)
                conn.replayed = frame["seq"]
            if len(page) < service.REPLAY_LIMIT:
                break
            after = page[-1]["seq"]
        conn.replayed = max(conn.replayed, since)


async def _pump(conn: Connection, sub) -> None:
    try:
        async for frame in sub:
            if frame.get("type") == "state" and frame.get("state") == "cancelled" and conn.relation == "candidate":
                # a department colleague looking at it learns why it went, before losing access
                await conn.send(frame)
            if frame.get("type") == "state" and conn.relation != "patient":
                await _recheck(conn)
                if conn.closed:
                    return
            if conn.wants(frame):
                await conn.send(frame)
        # the subscription was cut off (this socket fell too far behind): the client
        # reconnects with `since` and gets what it missed from the database
        await conn.ws.close(code=WS_TRY_AGAIN)
    except (WebSocketDisconnect, RuntimeError):
        pass


async def _recheck(conn: Connection) -> None:
    """After a hand-over or an accept a doctor may no longer be a party: cut them off."""
    try:
        async with open_work(conn.party, write=False) as work:
            _, conn.relation = await service.load(work, conn.cid)
    except YiyunError as exc:
        conn.closed = True
        with contextlib.suppress(Exception):
            await conn.error(exc)
            await conn.ws.close(code=WS_NOT_FOUND)


async def _read_loop(conn: Connection, pump: asyncio.Task) -> None:
    while not conn.closed:
        try:
            raw = await conn.ws.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        if not conn.allow():
            await conn.error("发送过于频繁，请稍后再试 (too many frames)", status=429)
            continue
        if len(raw) > MAX_FRAME:
            await conn.error(f"消息帧过大（最多 {MAX_FRAME // 1024} KB）(frame too large)", status=413)
            continue
        try:
            frame = orjson.loads(raw)
            if not isinstance(frame, dict):
                raise ValueError
        except ValueError:
            await conn.error("消息帧应为 JSON 对象 (frames are JSON objects)", status=400)
            continue
        try:
            await _dispatch(conn, frame)
        except YiyunError as exc:
            await conn.error(exc, for_type=str(frame.get("type")), client_id=frame.get("client_id")
                             if isinstance(frame.get("client_id"), str) else None)
        except (WebSocketDisconnect, RuntimeError):
            return
        except Exception:  # never let one bad frame take the socket down silently
            log.exception("consultation_frame_failed", consultation=conn.cid)
            await conn.error("服务器内部错误 (internal error)", status=500, for_type=str(frame.get("type")))


async def _dispatch(conn: Connection, frame: dict) -> None:
    kind = frame.get("type")
    cid = conn.cid
    if kind == "ping":
        await conn.send({"type": "pong"})
    elif kind == "message":
        sent, created = await writer.send_text(conn.party, cid, frame.get("text"), frame.get("client_id"))
        if not created:
            await conn.send(sent)  # a retry: the sender gets the stored copy back
    elif kind == "read":
        seq = frame.get("seq")
        if not isinstance(seq, int):
            raise BadRequest("seq 应为整数 (seq must be an integer)")
        async with open_work(conn.party) as work:
            await service.mark_read(work, cid, seq)
    elif kind == "typing":
        if conn.relation in ("patient", "doctor"):
            await get_broker().publish(service.channel(conn.party.tenant, cid), {
                "type": "typing", "consultation": cid, "by": conn.relation, "typing": bool(frame.get("typing"))})
    elif kind in signalling.RELAYED:
        await _relay(conn, frame)
    elif kind == "hangup":
        async with open_work(conn.party) as work:
            await service.end_call(work, cid, str(frame.get("call_id", "")))
    elif kind == "state":
        if frame.get("state") == "connected":
            async with open_work(conn.party) as work:
                await service.call_connected(work, cid, str(frame.get("call_id", "")))
    else:
        raise BadRequest(f"未知的消息类型: {str(kind)[:40]!r} (unknown frame type)")


async def _relay(conn: Connection, frame: dict) -> None:
    async with open_work(conn.party, write=False) as work:
        row, relation, call = await service.load_call(work, conn.cid, str(frame.get("call_id", "")))
    if relation not in ("patient", "doctor") or row.state != "active":
        raise service.Forbidden("只有进行中问诊的双方可以视频通话 (only the parties of an in-progress consultation)")
    if call.ended_us is not None:
        raise service.Conflict("视频通话已结束 (the call has ended)")
    out = signalling.relay_frame(frame, relation, conn.cid)
    await get_broker().publish(service.channel(conn.party.tenant, conn.cid), out)


async def queue_socket(websocket: WebSocket) -> None:
    """The doctor's queue socket: forwards the queue channel's frames (ids and states only)."""
    try:
        ctx = await websocket_context(websocket)
    except WebSocketUnauthorized:
        return
    await websocket.accept()
    try:
        party = party_of(ctx)
        if party.role != "doctor":
            raise service.Forbidden("只有医生可以订阅候诊队列 (the queue is for doctors)")
    except YiyunError as exc:
        return await _refuse(websocket, exc.status, exc.message, WS_FORBIDDEN)

    async def send(frame: dict) -> None:
        if frame.get("type") == "queue":
            await websocket.send_text(orjson.dumps(frame).decode())

    async def answer(raw: str) -> None:
        with contextlib.suppress(ValueError):
            if len(raw) < 100 and orjson.loads(raw) == {"type": "ping"}:
                await websocket.send_text('{"type":"pong"}')

    async with get_broker().subscribe(service.queue_channel(party.tenant)) as sub:
        await websocket.send_text(orjson.dumps({"type": "hello", "role": "doctor"}).decode())
        # cut off: the page reconnects and re-reads the queue
        await relay_to_websocket(websocket, sub, send, on_text=answer, cut_off_code=WS_TRY_AGAIN)
