"""Real-time fan-out: in process, and through Redis between brokers that stand for two
server processes. With CI=true an unreachable Redis fails instead of skipping."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.conftest import IN_CI
from yiyun.core.realtime import LocalBroker, RedisBroker


def redis_url() -> str:
    import redis

    url = os.environ.get("YIYUN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        message = f"Redis unreachable at {url}: {exc}"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    return url


async def test_local_broker_delivers_in_order_to_every_subscriber_of_the_channel():
    broker = LocalBroker()
    async with broker.subscribe("c1") as s1, broker.subscribe("c1") as s2, broker.subscribe("c2") as other:
        for i in range(3):
            await broker.publish("c1", {"n": i})
        assert [(await s1.get(1))["n"] for _ in range(3)] == [0, 1, 2]
        assert [(await s2.get(1))["n"] for _ in range(3)] == [0, 1, 2]
        assert await other.get(0.1) is None
    assert broker.subscriber_count("c1") == 0


async def test_subscribers_get_copies_not_the_publishers_object():
    broker = LocalBroker()
    message = {"text": "原文"}
    async with broker.subscribe("c") as sub:
        await broker.publish("c", message)
        message["text"] = "changed"
        assert (await sub.get(1))["text"] == "原文"


async def test_a_subscriber_that_falls_behind_is_cut_off_not_buffered_forever():
    broker = LocalBroker(max_queue=5)
    async with broker.subscribe("c") as slow, broker.subscribe("c") as fast:
        for i in range(20):
            await broker.publish("c", {"n": i})
            assert (await fast.get(1))["n"] == i
        got = []
        async for m in slow:
            got.append(m["n"])
        assert slow.closed and got == [0, 1, 2, 3, 4]


async def test_redis_broker_fans_out_between_processes():
    url = redis_url()
    a, b = RedisBroker(url), RedisBroker(url)
    channel = f"test-{os.getpid()}-{id(a)}"
    try:
        async with a.subscribe(channel) as on_a, b.subscribe(channel) as on_b:
            await a.publish(channel, {"type": "message", "seq": 1, "text": "你好"})
            await b.publish(channel, {"type": "message", "seq": 2})
            assert [(await on_a.get(2))["seq"] for _ in range(2)] == [1, 2]
            assert [(await on_b.get(2))["seq"] for _ in range(2)] == [1, 2]
        # after unsubscribing, nothing more arrives and the channel is released
        async with b.subscribe(channel + "-x") as later:
            await a.publish(channel, {"seq": 3})
            await a.publish(channel + "-x", {"seq": 4})
            assert (await later.get(2))["seq"] == 4
    finally:
        await a.close()
        await b.close()


async def test_get_broker_picks_redis_when_configured(monkeypatch):
    from yiyun.core.realtime import close_brokers, get_broker
    from yiyun.core.settings import get_settings

    monkeypatch.delenv("YIYUN_REDIS_URL", raising=False)
    get_settings.cache_clear()
    assert type(get_broker()) is LocalBroker
    url = redis_url()
    monkeypatch.setenv("YIYUN_REDIS_URL", url)
    get_settings.cache_clear()
    try:
        broker = get_broker()
        assert isinstance(broker, RedisBroker) and broker is get_broker()
        await broker.ping()
    finally:
        await close_brokers()
        get_settings.cache_clear()
    await asyncio.sleep(0)
