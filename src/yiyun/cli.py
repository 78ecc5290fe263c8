"""The `yiyun` command. Operators script these names: keep them stable."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from yiyun.core.settings import get_settings

app = typer.Typer(help="yiyun 医云: Internet + Healthcare cloud on HL7 FHIR R4", no_args_is_help=True)
db_app = typer.Typer(help="Database schema: apply, revert and inspect migrations.", no_args_is_help=True)
fhir_app = typer.Typer(help="FHIR store: import and export resources.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(fhir_app, name="fhir")
console = Console(stderr=True)

from yiyun.knowledge.cli import app as knowledge_app  # noqa: E402

app.add_typer(knowledge_app, name="knowledge", help="Medical knowledge: triage, diagnosis, Q&A, drugs.")

from yiyun.identity.cli import audit_app, keys_app  # noqa: E402
from yiyun.identity.commands import tenant_app, token_app, user_app  # noqa: E402

app.add_typer(tenant_app, name="tenant")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
from yiyun.identity.security_cli import security_app  # noqa: E402

app.add_typer(security_app, name="security")
app.add_typer(keys_app, name="keys")
from yiyun.identity.oauth.cli import client_app  # noqa: E402

app.add_typer(client_app, name="client")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", help="Worker processes."),
    reload: bool = typer.Option(False, "--reload", help="Reload on code changes (development)."),
) -> None:
    """Start the web and API server (and, with a SQLite job queue, the job consumer)."""
    import uvicorn

    consumer = _start_inline_jobs()
    try:
        uvicorn.run(
            "yiyun.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            reload=reload,
            log_level=get_settings().log_level.lower(),
            access_log=False,
        )
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)


# ---------------------------------------------------------------------- jobs
# The domains' job modules (`tasks.py`): every consumer loads these.
JOB_MODULES = ("yiyun.hospital.tasks",)


def _start_inline_jobs():
    """A job consumer in threads of the server process when `YIYUN_JOBS_INLINE` (default:
    with the SQLite queue) says so, so that one `yiyun serve` also sends reminders."""
    from yiyun.core import jobs

    if not jobs.inline_enabled():
        return None
    jobs.load(JOB_MODULES)
    return jobs.start_inline(jobs.get_queue())


@app.command()
def worker(
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Worker threads."),
    periodic: bool = typer.Option(True, "--periodic/--no-periodic",
                                  help="Also schedule the periodic jobs (run the scheduler in one worker only)."),
) -> None:
    """Run background jobs (reminders, automatic no-shows …) from the job queue until stopped."""
    import logging

    from yiyun.core import jobs
    from yiyun.core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    jobs.load(JOB_MODULES)
    queue = jobs.get_queue()
    console.print(f"jobs: {', '.join(sorted(queue.yiyun_tasks))} ({type(queue).__name__})")
    jobs.consumer_for(queue, workers=workers, periodic=periodic).run()


# ----------------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from yiyun.core import migrations

    migrations.upgrade(revision)
    console.print(f"[green]database at {revision}[/green]")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base.")) -> None:
    """Revert migrations down to REVISION."""
    from yiyun.core import migrations

    migrations.downgrade(revision)
    console.print(f"[yellow]database at {revision}[/yellow]")


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision and the newest one."""
    from sqlalchemy import create_engine

    from yiyun.core import migrations
    from yiyun.core.settings import sync_url

    engine = create_engine(sync_url(get_settings().resolved_database_url))
    with engine.connect() as conn:
        current = migrations.current_revision(conn)
    engine.dispose()
    head = migrations.head_revision()
    typer.echo(f"current: {current or 'none'}")
    typer.echo(f"head:    {head}")
    if current != head:
        raise typer.Exit(1)


@db_app.command("analyze")
def db_analyze() -> None:
    """Refresh the query planner's statistics (done automatically after imports)."""
    from yiyun.core.db import dispose_engines, get_engine, refresh_statistics

    async def run() -> None:
        try:
            await refresh_statistics(get_engine())
        finally:
            await dispose_engines()

    asyncio.run(run())
    typer.echo("statistics refreshed")


# --------------------------------------------------------------------- fhir
def _context(tenant: str):
    from yiyun.fhir.model import RequestContext

    settings = get_settings()
    return RequestContext(tenant=tenant, subject="cli", base_url=settings.base_url.rstrip("/") + "/fhir/R4")


@fhir_app.command("import")
def fhir_import(
    paths: List[Path] = typer.Argument(..., help="Bundle (.json) or NDJSON (.ndjson) files, or folders of them."),
    tenant: str = typer.Option(None, "--tenant", help="Tenant that owns the resources (default: the default tenant)."),
    server_ids: bool = typer.Option(False, "--server-ids", help="Let the server assign ids to POSTed resources."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip validation (trusted data only)."),
) -> None:
    """Load transaction/batch/collection Bundles and NDJSON into the store."""
    from yiyun.fhir.loader import LoadReport, discover

    try:
        files = discover(paths)
    except FileNotFoundError as exc:
        console.print(f"[red]找不到文件 (not found): {exc}[/red]")
        raise typer.Exit(2)
    report = LoadReport()
    started = time.perf_counter()
    asyncio.run(_import(files, tenant or get_settings().default_tenant, not server_ids, not no_validate, report))
    elapsed = time.perf_counter() - started
    console.print(
        f"imported {report.resources} resources from {report.files} files "
        f"({report.bundles} bundles) in {elapsed:.1f}s — {report.resources / max(elapsed, 1e-9):.0f} resources/s"
    )
    for res_type, n in sorted(report.by_type.items(), key=lambda kv: -kv[1])[:20]:
        console.print(f"  {res_type:<28} {n}")
    if report.failed:
        console.print(f"[red]{len(report.failed)} failed:[/red]")
        for where, why in report.failed[:50]:
            console.print(f"  {where}: {why}")
        raise typer.Exit(1)


async def _import(files, tenant, keep_ids, validate, report) -> None:
    from yiyun.core.db import dispose_engines, get_engine
    from yiyun.fhir.loader import Loader

    loader = Loader(get_engine(), _context(tenant), keep_ids=keep_ids, validate=validate)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("importing", total=len(files))
        for path in files:
            progress.update(task, description=path.name[:40])
            await loader.load_path(path, report)
            progress.advance(task)
    from yiyun.core.db import refresh_statistics

    await refresh_statistics(get_engine())
    await dispose_engines()


@fhir_app.command("export")
def fhir_export(
    directory: Path = typer.Argument(..., help="Folder to write <Type>.ndjson files into."),
    tenant: str = typer.Option(None, "--tenant"),
    types: Optional[str] = typer.Option(None, "--type", help="Comma-separated resource types."),
) -> None:
    """Write every resource as NDJSON, one file per resource type."""
    from yiyun.core.db import dispose_engines, get_engine
    from yiyun.fhir.bulk import write_ndjson

    async def run():
        try:
            return await write_ndjson(
                get_engine(), tenant or get_settings().default_tenant, directory,
                types=[t.strip() for t in types.split(",")] if types else None,
            )
        finally:
            await dispose_engines()

    started = time.perf_counter()
    outputs = asyncio.run(run())
    total = sum(o["count"] for o in outputs)
    elapsed = time.perf_counter() - started
    for o in outputs:
        typer.echo(f"{o['file']:<36} {o['count']}")
    typer.echo(f"exported {total} resources in {elapsed:.1f}s to {directory}")


@fhir_app.command("reindex")
def fhir_reindex(tenant: str = typer.Option(None, "--tenant", help="Only this tenant (default: all).")) -> None:
    """Recompute search indexes (after adding or changing custom SearchParameters)."""
    from yiyun.core.db import dispose_engines, get_engine, unit_of_work
    from yiyun.fhir.search import reindex

    async def run() -> int:
        try:
            async with unit_of_work(get_engine()) as conn:
                return await reindex(conn, tenant)
        finally:
            await dispose_engines()

    typer.echo(f"reindexed {asyncio.run(run())} resources")


# --------------------------------------------------------------------- demo
@app.command()
def demo(
    seed: int = typer.Option(20240601, "--seed", help="Random seed: the same seed gives the same data."),
    if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when demo data is already loaded."),
) -> None:
    """Create the schema and load the demo region (hospitals, doctors, 2,000 patients)."""
    from yiyun.core import migrations

    migrations.upgrade()
    loaded = asyncio.run(_load_demo(seed, if_empty))
    typer.echo(json.dumps(loaded, ensure_ascii=False))


async def _load_demo(seed: int, if_empty: bool) -> dict:
    from yiyun.core.db import dispose_engines, get_engine
    from yiyun.demo.load import load_demo

    try:
        return await load_demo(get_engine(), seed=seed, if_empty=if_empty)
    finally:
        await dispose_engines()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
