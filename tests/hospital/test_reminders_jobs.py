"""Booking reminders by SMS and automatic no-shows, run by the hospital's jobs.

The job functions run directly against the real database (SQLite and PostgreSQL), and once
through a real Huey queue (a SQLite file; Redis where reachable, required with CI=true)
with a consumer executing them. SMS go through the development outbox provider, read back
as the /dev/sms-outbox page reads them.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from huey import signals
from sqlalchemy import select, update

from tests.conftest import IN_CI

MIN = 60_000_000
STAFF = ("staff", "user:dr-li", None, ("doctor",))


def _mobile() -> str:
    return "139" + "".join(random.choices("0123456789", k=8))


def _local_start(days: int, hour: int = 9) -> datetime:
    """`hour` o'clock China time, `days` days from today (visits never straddle a local midnight)."""
    from yiyun.hospital.codes import CHINA_TZ

    day = datetime.now(CHINA_TZ).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, tzinfo=CHINA_TZ).astimezone(timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _us(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1_000_000)


async def _give_phone(repo_factory, patient: str, phone: str) -> None:
    async with repo_factory() as repo:
        res = dict((await repo.read("Patient", patient)).resource)
        res["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
        res.pop("meta", None)
        await repo.update("Patient", patient, res)


async def _book_at(repo_factory, hospital, start: datetime, patient: str = "pat-zhang") -> dict:
    """A Slot of Dr Li's clinic at `start`, booked by staff for `patient`: the booked Appointment."""
    from yiyun.hospital import booking
    from yiyun.hospital.codes import consultation_concept

    sid = f"slot-{uuid.uuid4().hex[:10]}"
    async with repo_factory() as repo:
        await repo.update("Slot", sid, {"resourceType": "Slot", "id": sid, "status": "free",
                                        "serviceType": [consultation_concept("clinic")],
                                        "schedule": {"reference": f"Schedule/{hospital.schedule}"},
                                        "start": _iso(start), "end": _iso(start + timedelta(minutes=30))})
        stored = await booking.book(repo, booking.Actor(*STAFF), sid, patient)
    return stored.resource


async def _reminders(repo_factory, hospital, appointment_id: str) -> dict[str, dict]:
    from yiyun.hospital.booking import reminders_of

    async with repo_factory(write=False) as repo:
        return {r["kind"]: r for r in await reminders_of(repo.conn, hospital.tenant, appointment_id)}


async def _outbox(engine, phone: str) -> list[str]:
    from yiyun.core.db import unit_of_work
    from yiyun.identity.sms import outbox_messages

    async with unit_of_work(engine, write=False) as conn:
        return [m.body for m in await outbox_messages(conn, limit=500) if m.phone == phone]


class SlowOutbox:
    """The outbox provider, taking its time like a real gateway (widens any race)."""

    name = "slow-outbox"

    async def send(self, conn, phone: str, body: str) -> None:
        from yiyun.identity.sms import OutboxSmsProvider

        await asyncio.sleep(0.05)
        await OutboxSmsProvider().send(conn, phone, body)


class UnreachableGateway:
    """An SMS gateway that is down."""

    name = "unreachable"

    async def send(self, conn, phone: str, body: str) -> None:
        raise ConnectionError("SMS gateway unreachable")


# ------------------------------------------------------------------ reminders
async def test_each_reminder_is_sent_once_in_chinese_to_the_patients_mobile(hospital, repo_factory, engine):
    from yiyun.hospital.tasks import deliver_due_reminders

    phone = _mobile()
    await _give_phone(repo_factory, "pat-zhang", f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}")
    start = _local_start(5)
    appt = await _book_at(repo_factory, hospital, start)
    due = {k: r["due_us"] for k, r in (await _reminders(repo_factory, hospital, appt["id"])).items()}
    assert set(due) == {"24h", "2h"}

    await deliver_due_reminders(engine, now=due["24h"] - MIN, tenants=[hospital.tenant])
    assert await _outbox(engine, phone) == []  # nothing before it is due
    await deliver_due_reminders(engine, now=due["24h"] + MIN, tenants=[hospital.tenant])
    [first] = await _outbox(engine, phone)
    local = start.astimezone(timezone(timedelta(hours=8)))
    for part in ("【医云】", "测试医院", "呼吸内科", "李医生（主任医师）", "门诊", "明天",
                 f"{local.month}月{local.day}日", f"{local:%H:%M}", "就诊序号 1 号", "签到"):
        assert part in first, (part, first)
    await deliver_due_reminders(engine, now=due["24h"] + 2 * MIN, tenants=[hospital.tenant])
    assert len(await _outbox(engine, phone)) == 1  # sent once, not on every run
    await deliver_due_reminders(engine, now=due["2h"] + MIN, tenants=[hospital.tenant])
    messages = await _outbox(engine, phone)
    assert len(messages) == 2 and "2 小时后" in messages[0]
    state = await _reminders(repo_factory, hospital, appt["id"])
    assert {k: (r["sent"], r["outcome"]) for k, r in state.items()} == {"24h": (True, "sent"), "2h": (True, "sent")}


async def test_cancelled_visits_and_patients_without_phone_get_no_sms(hospital, repo_factory, engine):
    from yiyun.hospital import booking
    from yiyun.hospital.tasks import deliver_due_reminders
    from yiyun.identity.accounts import linked_account_phone

    async with repo_factory() as repo:  # Wang's record has no phone; his (verified) account has one
        wang_phone = await linked_account_phone(repo.conn, hospital.tenant, "Patient/pat-wang")
    assert wang_phone
    start = _local_start(6)
    wang = await _book_at(repo_factory, hospital, start, "pat-wang")
    child = await _book_at(repo_factory, hospital, start + timedelta(minutes=30), "pat-zhang-child")
    cancelled = await _book_at(repo_factory, hospital, start + timedelta(minutes=60), "pat-wang")
    async with repo_factory() as repo:
        await booking.cancel(repo, booking.Actor(*STAFF), cancelled["id"], reason="医生停诊")
    now = _us(child["start"]) - 2 * 60 * MIN + MIN  # every 2 h reminder of the three is due

    await deliver_due_reminders(engine, now=now, tenants=[hospital.tenant])
    messages = await _outbox(engine, wang_phone)
    assert len(messages) == 1 and f"{_local_time(wang['start'])}" in messages[0]
    assert (await _reminders(repo_factory, hospital, wang["id"]))["2h"]["outcome"] == "sent"
    assert (await _reminders(repo_factory, hospital, wang["id"]))["24h"]["outcome"] == "late"  # one SMS, not two
    assert (await _reminders(repo_factory, hospital, child["id"]))["2h"]["outcome"] == "no-phone"
    assert await _reminders(repo_factory, hospital, cancelled["id"]) == {}


def _local_time(iso: str) -> str:
    return f"{datetime.fromisoformat(iso.replace('Z', '+00:00')).astimezone(timezone(timedelta(hours=8))):%H:%M}"


async def test_a_failed_send_is_retried_later_and_given_up_after_the_last_try(hospital, repo_factory, engine):
    from yiyun.hospital.tasks import MAX_ATTEMPTS, deliver_due_reminders

    phone = _mobile()
    await _give_phone(repo_factory, "pat-zhang", phone)
    start = _local_start(7)
    appt = await _book_at(repo_factory, hospital, start)
    again = await _book_at(repo_factory, hospital, start + timedelta(minutes=30))
    due = (await _reminders(repo_factory, hospital, appt["id"]))["24h"]["due_us"]

    assert await deliver_due_reminders(engine, now=due + MIN, sms=UnreachableGateway(), tenants=[hospital.tenant]) == 0
    state = (await _reminders(repo_factory, hospital, appt["id"]))["24h"]
    assert state["sent"] is False and state["outcome"] is None
    assert await _outbox(engine, phone) == []
    await deliver_due_reminders(engine, now=due + 2 * MIN, tenants=[hospital.tenant])  # the gateway is back
    assert len(await _outbox(engine, phone)) == 1
    assert (await _reminders(repo_factory, hospital, appt["id"]))["24h"]["outcome"] == "sent"

    later = _us(again["start"]) - 24 * 60 * MIN + MIN
    for i in range(MAX_ATTEMPTS):
        await deliver_due_reminders(engine, now=later + i * MIN, sms=UnreachableGateway(), tenants=[hospital.tenant])
    from yiyun.hospital.models import reminder

    async with repo_factory(write=False) as repo:
        row = (await repo.conn.execute(select(reminder).where(
            reminder.c.tenant == hospital.tenant, reminder.c.appointment == again["id"],
            reminder.c.kind == "24h"))).first()
    assert (row.outcome, row.attempts) == ("failed", MAX_ATTEMPTS) and "unreachable" in row.last_error
    await deliver_due_reminders(engine, now=later + 10 * MIN, tenants=[hospital.tenant])
    assert len(await _outbox(engine, phone)) == 1  # given up: not sent after all


async def test_two_senders_at_once_send_each_reminder_exactly_once(hospital, repo_factory, engine):
    from yiyun.core.db import create_engine_for
    from yiyun.hospital.tasks import deliver_due_reminders

    phone = _mobile()
    await _give_phone(repo_factory, "pat-zhang", phone)
    start = _local_start(8)
    booked = [await _book_at(repo_factory, hospital, start + timedelta(minutes=30 * i)) for i in range(6)]
    now = _us(booked[-1]["start"]) - 24 * 60 * MIN + MIN  # the six 24 h reminders are due
    other = create_engine_for(str(engine.url.render_as_string(hide_password=False)))  # a second "worker"
    try:
        counts = await asyncio.gather(*(deliver_due_reminders(worker, now=now, sms=SlowOutbox(),
                                                              tenants=[hospital.tenant]) for worker in (engine, other)))
    finally:
        await other.dispose()
    assert sum(counts) == 6
    messages = await _outbox(engine, phone)
    assert len(messages) == 6
    assert sorted(int(m.split("就诊序号 ")[1].split(" 号")[0]) for m in messages) == [1, 2, 3, 4, 5, 6]
    for appt in booked:
        assert (await _reminders(repo_factory, hospital, appt["id"]))["24h"]["outcome"] == "sent"


# ------------------------------------------------------------------ no-shows
async def _past(repo_factory, *, ended_min_ago: int, status: str = "booked", patient: str = "pat-zhang",
                extra: dict | None = None) -> str:
    """An Appointment of Dr Li that ended `ended_min_ago` minutes ago (a 30-minute visit)."""
    end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=ended_min_ago)
    body = {"resourceType": "Appointment", "status": status, "start": _iso(end - timedelta(minutes=30)),
            "end": _iso(end),
            "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"},
                            {"actor": {"reference": "PractitionerRole/role-li"}, "status": "accepted"},
                            {"actor": {"reference": "HealthcareService/hs-resp"}, "status": "accepted"}],
            **(extra or {})}
    async with repo_factory() as repo:
        return (await repo.create(body)).stored.res_id


async def _status(repo_factory, appointment_id: str) -> str:
    async with repo_factory(write=False) as repo:
        return (await repo.read("Appointment", appointment_id)).resource["status"]


async def test_overdue_bookings_become_noshows_after_the_hospitals_grace(hospital, repo_factory, engine):
    from yiyun.hospital import booking
    from yiyun.hospital.tasks import mark_overdue_noshows

    async with repo_factory() as repo:
        assert (await booking.get_rules(repo.conn, hospital.tenant)).noshow_grace_minutes == 30
        await booking.set_rules(repo.conn, hospital.tenant, noshow_grace_minutes=120)
    missed = await _past(repo_factory, ended_min_ago=90)
    just_ended = await _past(repo_factory, ended_min_ago=10, patient="pat-wang")
    arrived = await _past(repo_factory, ended_min_ago=90, status="arrived", patient="pat-wang")
    fulfilled = await _past(repo_factory, ended_min_ago=90, status="fulfilled", patient="pat-wang")
    cancelled = await _past(repo_factory, ended_min_ago=90, status="cancelled", patient="pat-wang")
    long_ago = await _past(repo_factory, ended_min_ago=30 * 24 * 60, patient="pat-wang")

    assert await mark_overdue_noshows(engine, tenants=[hospital.tenant]) == 0  # 90 min < the 120 min grace
    async with repo_factory() as repo:
        await booking.set_rules(repo.conn, hospital.tenant, noshow_grace_minutes=30)
    assert await mark_overdue_noshows(engine, tenants=[hospital.tenant]) == 1
    assert await _status(repo_factory, missed) == "noshow"
    for untouched, status in ((just_ended, "booked"), (arrived, "arrived"), (fulfilled, "fulfilled"),
                              (cancelled, "cancelled"), (long_ago, "booked")):
        assert await _status(repo_factory, untouched) == status
    assert await mark_overdue_noshows(engine, tenants=[hospital.tenant]) == 0  # marked once


async def test_automatic_noshows_count_towards_the_booking_block(client, hospital, repo_factory, engine):
    from yiyun.hospital import booking
    from yiyun.hospital.tasks import mark_overdue_noshows

    for days in (40, 20):  # two no-shows already recorded in the last 90 days
        await _past(repo_factory, ended_min_ago=days * 24 * 60, status="noshow")
    missed = await _past(repo_factory, ended_min_ago=45)
    await mark_overdue_noshows(engine, tenants=[hospital.tenant])
    assert await _status(repo_factory, missed) == "noshow"
    async with repo_factory(write=False) as repo:
        block = await booking.block_status(repo.conn, hospital.tenant, "pat-zhang")
    assert block is not None and "爽约 3 次" in block[1]
    refused = await client.post("/api/hospital/appointments", headers=hospital.patient_headers(),
                                json={"slot": hospital.slots[0]["id"], "hospital": hospital.tenant})
    assert refused.status_code == 403 and "爽约" in refused.json()["detail"]


async def test_a_started_online_consultation_is_not_a_noshow(client, hospital, repo_factory, engine, monkeypatch):
    from yiyun.hospital import tasks
    from yiyun.hospital.tasks import mark_overdue_noshows

    monkeypatch.setattr(tasks, "SWEEP_PAGE", 1)  # the sweep reads every page, not just the first

    online = {"serviceType": [{"coding": [{"system": "https://yiyun.example.cn/fhir/CodeSystem/consultation-type",
                                           "code": "online-text"}]}]}
    consulted = await _past(repo_factory, ended_min_ago=60, extra=online)
    r = await client.post("/api/consultations", headers=hospital.patient_headers(),
                          json={"mode": "text", "appointment": f"Appointment/{consulted}",
                                "form": {"chief_complaint": "咳嗽复诊"}})
    assert r.status_code == 201, r.text
    not_consulted = await _past(repo_factory, ended_min_ago=70, extra=online)
    assert await mark_overdue_noshows(engine, tenants=[hospital.tenant]) == 1
    assert await _status(repo_factory, consulted) == "booked"
    assert await _status(repo_factory, not_consulted) == "noshow"


async def test_the_noshow_grace_rule_is_checked(client, hospital):
    r = await client.put("/api/hospital/rules", json={"noshow_grace_minutes": -5},
                         headers=hospital.staff_headers("admin"))
    assert r.status_code == 400 and "noshow_grace_minutes" in r.json()["detail"]
    r = await client.put("/api/hospital/rules", json={"noshow_grace_minutes": 45},
                         headers=hospital.staff_headers("admin"))
    assert r.status_code == 200 and r.json()["noshow_grace_minutes"] == 45


# ------------------------------------------------------------------ through a real queue
def _redis_url() -> str:
    url = os.environ.get("YIYUN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"Redis unreachable at {url}: {exc}")
        pytest.skip(f"Redis not reachable at {url} (set CI=true to make this a failure)")
    return url


@pytest.mark.parametrize("broker", ["sqlite", "redis"])
async def test_a_worker_runs_the_reminder_job_from_the_queue(broker, hospital, repo_factory, engine, tmp_path):
    from yiyun.core import jobs
    from yiyun.hospital import tasks
    from yiyun.hospital.models import reminder

    url = f"sqlite:///{tmp_path / 'jobs.db'}" if broker == "sqlite" else _redis_url()
    queue = jobs.queue_for(url, name=f"yiyun-test-{uuid.uuid4().hex[:8]}")
    assert {tasks.REMINDER_JOB, tasks.NOSHOW_JOB} <= set(queue.yiyun_tasks)
    phone = _mobile()
    await _give_phone(repo_factory, "pat-zhang", phone)
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(hours=3)
    appt = await _book_at(repo_factory, hospital, start)
    async with repo_factory() as repo:  # an hour passes: the 2 h reminder falls due
        await repo.conn.execute(update(reminder).where(reminder.c.tenant == hospital.tenant,
                                                       reminder.c.appointment == appt["id"])
                                .values(due_us=reminder.c.due_us - 61 * MIN))

    outcomes: list[str] = []
    finished = threading.Event()

    @queue.signal(signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR)
    def on_finish(signal, task, exc=None):  # periodic jobs keep no result: watch them finish
        outcomes.append(signal if exc is None else f"{signal}: {exc!r}")
        finished.set()

    jobs.enqueue(tasks.REMINDER_JOB, queue=queue)
    assert len(queue) == 1  # waiting for a worker
    consumer = jobs.start_inline(queue, workers=2, periodic=False)
    try:
        assert await asyncio.to_thread(finished.wait, 60), "the job did not run"
    finally:
        await asyncio.to_thread(consumer.stop, True)
        if broker == "redis":
            queue.storage.flush_all()
    assert outcomes == [signals.SIGNAL_COMPLETE] and len(queue) == 0
    [message] = await _outbox(engine, phone)
    assert "2 小时后" in message and "测试医院" in message
    assert (await _reminders(repo_factory, hospital, appt["id"]))["2h"]["outcome"] == "sent"


def test_inline_consumer_by_default_only_with_the_sqlite_queue(monkeypatch):
    from yiyun.core.jobs import inline_enabled, queue_for
    from yiyun.core.settings import Settings

    monkeypatch.delenv("YIYUN_JOBS_INLINE", raising=False)
    assert inline_enabled(Settings(jobs_url="")) is True
    assert inline_enabled(Settings(jobs_url="redis://127.0.0.1:6379/0")) is False
    assert inline_enabled(Settings(jobs_url="redis://127.0.0.1:6379/0", jobs_inline=True)) is True
    assert inline_enabled(Settings(jobs_url="", jobs_inline=False)) is False
    with pytest.raises(ValueError, match="YIYUN_JOBS_URL"):
        queue_for("amqp://localhost")


async def test_one_yiyun_serve_process_delivers_reminders_itself(hospital, repo_factory, engine):
    """`make demo` runs one `yiyun serve`: with the SQLite queue it runs the jobs inline."""
    from tests.conftest import running_server
    from yiyun.hospital.models import reminder

    phone = _mobile()
    await _give_phone(repo_factory, "pat-zhang", phone)
    appt = await _book_at(repo_factory, hospital, datetime.now(timezone.utc).replace(second=0, microsecond=0)
                          + timedelta(hours=3))
    async with repo_factory() as repo:  # an hour passes: the 2 h reminder falls due
        await repo.conn.execute(update(reminder).where(reminder.c.tenant == hospital.tenant,
                                                       reminder.c.appointment == appt["id"])
                                .values(due_us=reminder.c.due_us - 61 * MIN))
    env = {**os.environ, "YIYUN_JOBS_INLINE": "true", **_same_keys()}
    env.pop("YIYUN_JOBS_URL", None)
    with running_server(env):
        for _ in range(60):  # the scheduler enqueues the every-minute jobs as it starts
            if await _outbox(engine, phone):
                break
            await asyncio.sleep(0.5)
    [message] = await _outbox(engine, phone)
    assert "就诊提醒" in message


def _same_keys() -> dict[str, str]:
    """The key files this test process seals with (loaded once per process), for a server
    that must open the phone numbers it sealed."""
    from yiyun.identity.protection.keyring import audit_keyring, field_keyring

    env = {}
    for name, ring in (("YIYUN_ENCRYPTION_KEY_FILE", field_keyring()), ("YIYUN_AUDIT_KEY_FILE", audit_keyring())):
        if ring.source != "environment":
            env[name] = ring.source
    return env


async def test_yiyun_worker_process_runs_the_jobs_and_stops_on_sigterm(hospital, repo_factory, engine, tmp_path):
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO
    from yiyun.hospital.models import reminder

    phone = _mobile()
    await _give_phone(repo_factory, "pat-zhang", phone)
    appt = await _book_at(repo_factory, hospital, datetime.now(timezone.utc).replace(second=0, microsecond=0)
                          + timedelta(hours=3))
    async with repo_factory() as repo:  # an hour passes: the 2 h reminder falls due
        await repo.conn.execute(update(reminder).where(reminder.c.tenant == hospital.tenant,
                                                       reminder.c.appointment == appt["id"])
                                .values(due_us=reminder.c.due_us - 61 * MIN))
    env = {**os.environ, "YIYUN_JOBS_URL": f"sqlite:///{tmp_path / 'queue.db'}", "YIYUN_LOG_LEVEL": "INFO",
           **_same_keys()}
    proc = subprocess.Popen([sys.executable, "-m", "yiyun.cli", "worker", "--workers", "2"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(60):  # the periodic jobs are scheduled as the worker starts
            if await _outbox(engine, phone) or proc.poll() is not None:
                break
            await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "hospital.send_reminders" in err and "Shutting down gracefully" in err
    [message] = await _outbox(engine, phone)
    assert "就诊提醒" in message and "就诊序号 1 号" in message
