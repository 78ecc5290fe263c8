"""Real-time fan-out: publish a JSON message on a channel, every subscriber gets it.

DESIGN.md table: in process by default; Redis pub/sub when `YIYUN_REDIS_URL` is set, so
several server processes (behind a load balancer) deliver each other's messages.

    broker = get_broker()
    async with broker.subscribe("consultation:t1:42") as sub:
        await broker.publish("consultation:t1:42", {"type": "typing"})
        message = await sub.get()

Delivery is at most once and in publish order per channel and publisher; whatever must
not be lost is persisted before it is published (a client that missed messages asks
for them again by sequence number). A subscriber that falls `max_queue` messages
behind is cut off (`Subscription.closed`), never allowed to hold memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings

log = get_logger("yiyun.realtime")

_CLOSED = object()


class Subscription:
    """One subscriber's queue of messages on one channel."""

    def __init__(self, channel: str, max_queue: int) -> None:
        self.channel = channel
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue + 1)
        self.closed = False

    def _deliver(self, message: Any) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= self._queue.maxsize - 1:
            self.closed = True  # too slow: cut off rather than buffer without bound
            self._queue.put_nowait(_CLOSED)
            return
        self._queue.put_nowait(message)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_CLOSED)

    async def get(self, timeout: float | None = None) -> dict | None:
        """The next message; None once the subscription is closed (or on timeout)."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout) if timeout else await self._queue.get()
        except asyncio.TimeoutError:
            return None
        return None if item is _CLOSED else item

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        item = await self.get()
        if item is None:
            raise StopAsyncIteration
        return item


class LocalBroker:
    """Fan-out inside one process."""

    def __init__(self, max_queue: int = 1000) -> None:
        self.max_queue = max_queue
        self._subs: dict[str, set[Subscription]] = {}

    def _fan_out(self, channel: str, message: Any) -> None:
        for sub in list(self._subs.get(channel, ())):
            sub._deliver(message)

    async def publish(self, channel: str, message: dict) -> None:
        # the same bytes a remote subscriber would get: no shared mutable objects
        self._fan_out(channel, orjson.loads(orjson.dumps(message)))

    async def _add(self, sub: Subscription) -> None:
        self._subs.setdefault(sub.channel, set()).add(sub)

    async def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.channel]

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        sub = Subscription(channel, self.max_queue)
        await self._add(sub)
        try:
            yield sub
        finally:
            sub._close()
            await self._remove(sub)

    def subscriber_count(self, channel: str) -> int:
        return len(self._subs.get(channel, ()))

    async def close(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub._close()
        self._subs.clear()


class RedisBroker(LocalBroker):
    """Fan-out through Redis pub/sub: one connection per process listens on the channels
    its local subscribers want; a message published anywhere reaches them all."""

    def __init__(self, url: str, max_queue: int = 1000) -> None:
        super().__init__(max_queue)
        import redis.asyncio as redis

        self.url = url
        self._redis = redis.Redis.from_url(url)
        self._pubsub = self._redis.pubsub()
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._confirm: dict[str, asyncio.Future] = {}

    async def ping(self) -> None:
        await self._redis.ping()

    async def publish(self, channel: str, message: dict) -> None:
        await self._redis.publish(channel, orjson.dumps(message))

    async def _add(self, sub: Subscription) -> None:
        async with self._lock:
            first = sub.channel not in self._subs
            await super()._add(sub)
            if not first:
                return
            # subscribed, and confirmed by the server, before the caller goes on: a
            # publish that follows is never missed
            confirmed = asyncio.get_running_loop().create_future()
            self._confirm[sub.channel] = confirmed
            await self._pubsub.subscribe(sub.channel)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(self._read())
            try:
                await asyncio.wait_for(confirmed, 5.0)
            except asyncio.TimeoutError:
                log.warning("realtime_subscribe_unconfirmed", channel=sub.channel)
            finally:
                self._confirm.pop(sub.channel, None)

    async def _remove(self, sub: Subscription) -> None:
        async with self._lock:
            await super()._remove(sub)
            if sub.channel not in self._subs:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(sub.channel)

    async def _read(self) -> None:
        while True:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # connection lost: redis-py reconnects and resubscribes
                log.warning("realtime_redis_read_failed", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if msg is None:
                if not self._subs:
                    await asyncio.sleep(0.05)
                continue
            channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
            if msg.get("type") == "subscribe":
                waiting = self._confirm.get(channel)
                if waiting is not None and not waiting.done():
                    waiting.set_result(True)
                continue
            if msg.get("type") != "message":
                continue
            try:
                payload = orjson.loads(msg["data"])
            except orjson.JSONDecodeError:
                continue
            self._fan_out(channel, payload)

    async def close(self) -> None:
        await super().close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._redis.aclose()


# One broker per (URL, event loop): a Redis connection belongs to the loop that made it.
_brokers: dict[tuple[str, int], LocalBroker] = {}


def get_broker(url: str | None = None) -> LocalBroker:
    """The process's broker: Redis when `YIYUN_REDIS_URL` (or `url`) is set, else in process."""
    url = get_settings().redis_url if url is None else url
    loop = asyncio.get_running_loop()
    key = (url, id(loop))
    broker = _brokers.get(key)
    if broker is None:
        for stale in [k for k in _brokers if k[0] == url and k[1] != id(loop)]:
            _brokers.pop(stale, None)  # from a loop that has ended (tests run one loop per test)
        broker = RedisBroker(url) if url else LocalBroker()
        _brokers[key] = broker
    return broker


async def close_brokers() -> None:
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _brokers if k[1] == loop_id]:
        await _brokers.pop(key).close()


async def relay_to_websocket(websocket, subscription, send, *, on_text=None, cut_off_code: int = 1013) -> None:
    """Pass a subscription's frames to a WebSocket until either side ends.

    `send(frame)` writes one frame (it may filter or add to it); `on_text(raw)` answers what
    the client sends (pings), if anything. A subscription cut off for falling behind closes
    the socket with `cut_off_code` (1013, try again later): the page reconnects and re-reads
    its state. Returns when the client goes away."""
    from starlette.websockets import WebSocketDisconnect

    async def forward() -> None:
        try:
            async for frame in subscription:
                await send(frame)
            await websocket.close(code=cut_off_code)
        except (WebSocketDisconnect, RuntimeError):
            pass

    pump = asyncio.create_task(forward())
    try:
        while True:
            raw = await websocket.receive_text()
            if on_text is not None:
                await on_text(raw)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        pump.cancel()
        with contextlib.suppress(BaseException):
            await pump
