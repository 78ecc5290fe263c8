"""Background jobs on Huey: the one place the job queue is configured.

The queue comes from settings (`YIYUN_JOBS_URL`): empty means a SQLite file
`<data_dir>/jobs.db` (nothing to install), `sqlite:///path` another file, `redis://…` Redis
(many worker processes on many machines). Domain packages declare their jobs in their
`tasks.py` with the decorators below; the composition root imports those modules
(`load`) before it starts a consumer, so the same declarations serve every queue:

    @jobs.periodic("hospital.send_reminders", minute="*")   # every minute
    def send_reminders() -> int:
        return jobs.run_async(deliver_due_reminders)        # async work, own engine

    @jobs.job("pharmacy.notify", retries=3, retry_delay=60)  # run when enqueued
    def notify(order_id: str) -> None: ...

    jobs.enqueue("pharmacy.notify", order_id)                # from anywhere in the process

Consumers: `yiyun worker` runs one in its own process (signals handled, `--workers N`
threads); `yiyun serve` runs one in a thread of the web process when `jobs_inline` says so
(default: with a SQLite queue, so `make demo` needs one process only). Nothing else starts
a consumer: importing this module, building the app or a queue never runs a job.

A job runs in a worker thread, outside any request: `run_async` gives it an event loop
and a database engine of its own, disposed when it ends. Periodic jobs are enqueued by
every consumer that runs the scheduler, so jobs must be safe to run twice at once (claim
work in the database); at scale, run the scheduler in one worker (`--no-periodic` on the
others).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer
from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.logging import get_logger
from yiyun.core.settings import Settings, get_settings

log = get_logger("yiyun.jobs")
T = TypeVar("T")
QUEUE_NAME = "yiyun"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class Job:
    name: str
    func: Callable[..., Any]
    schedule: Callable | None  # a crontab test for periodic jobs; None: run when enqueued
    retries: int = 0
    retry_delay: int = 0


_jobs: dict[str, Job] = {}


def periodic(name: str, *, minute: str = "*", hour: str = "*", day: str = "*", month: str = "*",
             day_of_week: str = "*", retries: int = 0, retry_delay: int = 0):
    """Declare a job that runs on a cron-like schedule (UTC). The function is returned
    unchanged, so it stays callable directly (tests, other jobs)."""
    schedule = crontab(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week)

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        _jobs[name] = Job(name, func, schedule, retries, retry_delay)
        return func

    return register


def job(name: str, *, retries: int = 0, retry_delay: int = 0):
    """Declare a job that runs when enqueued (`enqueue(name, *args)`)."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        _jobs[name] = Job(name, func, None, retries, retry_delay)
        return func

    return register


def registered() -> dict[str, Job]:
    return dict(_jobs)


def load(modules: Iterable[str]) -> None:
    """Import the domains' task modules (the composition root names them)."""
    for name in modules:
        importlib.import_module(name)


# ------------------------------------------------------------------ queues
def queue_for(url: str, *, data_dir: Path | None = None, name: str = QUEUE_NAME) -> Huey:
    """A Huey instance for `url` (see the module docstring), with every declared job bound.
    `name` separates queues that share one Redis (tests use their own)."""
    if not url:
        path = Path(data_dir or get_settings().data_dir).resolve() / "jobs.db"
        queue = _sqlite_queue(name, path)
    elif url.startswith("sqlite:///"):
        queue = _sqlite_queue(name, Path(url[len("sqlite:///"):]))
    elif url.startswith(REDIS_SCHEMES):
        queue = RedisHuey(name, url=url)
    else:
        raise ValueError(f"YIYUN_JOBS_URL={url!r}: use sqlite:///<file> or redis://<host>:<port>/<db>")
    bind_jobs(queue)
    return queue


def _sqlite_queue(name: str, path: Path) -> Huey:
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(name, filename=str(path))


def bind_jobs(queue: Huey) -> None:
    """Register every declared job on `queue` (again after `load` added more)."""
    tasks = getattr(queue, "yiyun_tasks", None)
    if tasks is None:
        tasks = queue.yiyun_tasks = {}
    for j in _jobs.values():
        if j.name in tasks:
            continue
        if j.schedule is not None:
            tasks[j.name] = queue.periodic_task(j.schedule, retries=j.retries, retry_delay=j.retry_delay,
                                                name=j.name)(j.func)
        else:
            tasks[j.name] = queue.task(retries=j.retries, retry_delay=j.retry_delay, name=j.name)(j.func)


_queues: dict[str, Huey] = {}


def get_queue(settings: Settings | None = None) -> Huey:
    """The process's queue from settings (one per URL)."""
    settings = settings or get_settings()
    key = settings.jobs_url or str(Path(settings.data_dir).resolve())
    queue = _queues.get(key)
    if queue is None:
        queue = _queues[key] = queue_for(settings.jobs_url, data_dir=settings.data_dir)
    else:
        bind_jobs(queue)
    return queue


def enqueue(name: str, *args: Any, queue: Huey | None = None, **kwargs: Any):
    """Put job `name` on the queue; returns Huey's result handle. Inside a request, queue
    it from the repository's `after_commit` so that a rolled-back request sends nothing."""
    queue = queue or get_queue()
    tasks = queue.yiyun_tasks
    if name not in tasks:
        raise KeyError(f"no job named {name!r} (is its tasks module loaded?)")
    return tasks[name](*args, **kwargs)


def inline_enabled(settings: Settings | None = None) -> bool:
    """Whether `yiyun serve` runs a consumer itself: as configured, else only for SQLite
    (one machine; with Redis, `yiyun worker` processes do the work)."""
    settings = settings or get_settings()
    if settings.jobs_inline is not None:
        return settings.jobs_inline
    return not settings.jobs_url.startswith(REDIS_SCHEMES)


# ------------------------------------------------------------------ consumers
class InlineConsumer(Consumer):
    """A consumer inside another program (the web server): threads only, and the host
    program keeps its own signal handlers."""

    def _set_signal_handlers(self) -> None:
        return None


def consumer_for(queue: Huey, *, workers: int = 1, periodic: bool = True, inline: bool = False) -> Consumer:
    # SIGTERM (what systemd and Kubernetes send) lets the jobs in hand finish; SIGINT stops at once
    cls = InlineConsumer if inline else Consumer
    return cls(queue, workers=workers, periodic=periodic, worker_type="thread", initial_delay=0.1,
               max_delay=2.0 if inline else 10.0, graceful_signal="TERM")


def start_inline(queue: Huey, *, workers: int = 1, periodic: bool = True) -> Consumer:
    """Start a consumer in background threads of this process; `stop(graceful=True)` ends it."""
    consumer = consumer_for(queue, workers=workers, periodic=periodic, inline=True)
    consumer.start()
    log.info("jobs_inline_started", jobs=sorted(queue.yiyun_tasks), workers=workers, periodic=periodic)
    return consumer


# ------------------------------------------------------------------ running async work
def run_async(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work(engine)` to completion from a job: a fresh event loop and an engine of its
    own (engines and their pooled connections belong to one event loop)."""
    from yiyun.core.db import create_engine_for
    from yiyun.core.realtime import close_brokers

    async def main() -> T:
        engine = create_engine_for(get_settings().resolved_database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()
            await close_brokers()  # a job's real-time notices (e.g. a cancelled consultation) used this loop's

    return asyncio.run(main())
