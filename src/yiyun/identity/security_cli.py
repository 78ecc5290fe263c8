"""`yiyun security …`: scan the audit log for abuse signals, list events, tune the detectors;
find resident ID and mobile numbers left in the FHIR store's free text (`scan --free-text`).

Operators and cron jobs script these: keep names, options and exit codes stable.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

security_app = typer.Typer(help="Security events from the audit log: scan, list, tune.", no_args_is_help=True)


def _run(coro_fn):
    import asyncio

    from yiyun.core.db import dispose_engines
    from yiyun.core.logging import configure_logging
    from yiyun.core.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)  # logs on stderr, results on stdout

    async def wrapper():
        try:
            return await coro_fn()
        finally:
            await dispose_engines()

    return asyncio.run(wrapper())


@security_app.command("scan")
def security_scan(
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Scan one tenant (default: every tenant)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    free_text: bool = typer.Option(False, "--free-text", help="Instead of the audit log, look for resident ID and "
                                   "mobile numbers in the FHIR store's narratives, notes and messages."),
    rewrite: bool = typer.Option(False, "--rewrite", help="With --free-text: mask what is found, in place."),
    batch: int = typer.Option(500, "--batch", min=1, max=10000, help="With --free-text: resources per transaction."),
) -> None:
    """Scan the audit entries written since the last scan and raise security events; with
    --free-text, report (and with --rewrite, mask) numbers stored in free text."""
    if rewrite and not free_text:
        typer.echo("--rewrite goes with --free-text", err=True)
        raise typer.Exit(2)
    if free_text:
        _scan_free_text(tenant, rewrite, batch, as_json)
        return
    from yiyun.core.db import get_engine
    from yiyun.identity.security_events import scan

    report = _run(lambda: scan(get_engine(), tenant=tenant))
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
    else:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(report.by_kind.items())) or "none"
        typer.echo(f"scanned {report.scanned} entries in {report.tenants} tenant(s): "
                   f"{report.raised} new event(s) ({kinds}), {report.repeated} repeat(s)")


def _scan_free_text(tenant: str | None, rewrite: bool, batch: int, as_json: bool) -> None:
    """Lists the versions by reference, version and element path, with counts; never the numbers."""
    from yiyun.core.db import get_engine
    from yiyun.fhir.free_text import scan_stored
    from yiyun.identity.protection import store as _store  # noqa: F401  (opens sealed values to re-index them)

    async def go():
        report = await scan_stored(get_engine(), tenant=tenant, rewrite=rewrite, batch=batch)
        if rewrite:
            await _audit_rewrites(report)
        return report

    report = _run(go)
    totals = report.as_dict()
    if as_json:
        sys.stdout.write(json.dumps(totals, ensure_ascii=False) + "\n")
        return
    for hit in report.hits:
        where = "current" if hit.current else "history"
        typer.echo(f"FREE-TEXT {hit.tenant} {hit.reference} version {hit.version} ({where}): "
                   f"{hit.counts.get('resident-id', 0)} resident ID(s), {hit.counts.get('phone', 0)} phone(s) "
                   f"in {', '.join(hit.paths)}")
    done = f"; {report.rewritten} stored row(s) masked" if rewrite else (
        "; run again with --rewrite to mask them" if report.hits else "")
    typer.echo(f"scanned {report.resources} resource(s): {totals['resident_ids']} resident ID(s) and "
               f"{totals['phones']} phone number(s) in the free text of {totals['versions']} version(s){done}")


async def _audit_rewrites(report) -> None:
    """One audit entry per resource whose stored versions were masked: the chain records that
    the operator changed them (GB/T 22239-2019 8.1.4.3 security audit), with counts only."""
    from collections import defaultdict

    from yiyun.core.db import get_engine
    from yiyun.identity.audit import AuditEntry, append_committed

    by_resource: dict[tuple[str, str], dict] = defaultdict(lambda: {"versions": [], "resident_ids": 0, "phones": 0})
    for hit in report.hits:
        d = by_resource[(hit.tenant, hit.reference)]
        d["versions"].append(hit.version)
        d["resident_ids"] += hit.counts.get("resident-id", 0)
        d["phones"] += hit.counts.get("phone", 0)
    entries = [AuditEntry(tenant=t, actor="cli:security-scan", action="free-text-masked",
                          resource_type=ref.split("/", 1)[0], resource_id=ref.split("/", 1)[1], detail=d)
               for (t, ref), d in sorted(by_resource.items())]
    if entries:
        await append_committed(get_engine(), entries)


@security_app.command("events")
def security_events(
    tenant: str = typer.Option(..., "--tenant", help="Tenant whose events to list."),
    status: Optional[str] = typer.Option("open", "--status", help="open, acknowledged, closed or all."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
) -> None:
    """List security events, most recently seen first (one JSON object per line)."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.security_events import list_events

    async def go():
        async with unit_of_work(get_engine(), write=False) as conn:
            return await list_events(conn, tenant, status=None if status == "all" else status, limit=limit)

    for ev in _run(go):
        typer.echo(json.dumps(ev, ensure_ascii=False))


@security_app.command("policy")
def security_policy(
    tenant: str = typer.Option(..., "--tenant"),
    change: Optional[str] = typer.Option(None, "--set", help='JSON merged into the settings, e.g. '
                                         '\'{"after_hours": {"enabled": false}}\''),
) -> None:
    """Show (or change) a tenant's detector settings."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.core.errors import BadRequest
    from yiyun.identity.security_events import load_policy, set_policy

    try:
        changes = json.loads(change) if change else None
    except json.JSONDecodeError as exc:
        typer.echo(f"--set is not JSON: {exc}", err=True)
        raise typer.Exit(2) from exc

    async def go():
        async with unit_of_work(get_engine(), write=changes is not None) as conn:
            if changes is not None:
                return await set_policy(conn, tenant, changes, by="cli")
            return await load_policy(conn, tenant)

    try:
        policy = _run(go)
    except BadRequest as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(policy, ensure_ascii=False, indent=2))
