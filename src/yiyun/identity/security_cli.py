"""`yiyun security …`: scan the audit log for abuse signals, list events, tune the detectors.

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
) -> None:
    """Scan the audit entries written since the last scan and raise security events."""
    from yiyun.core.db import get_engine
    from yiyun.identity.security_events import scan

    report = _run(lambda: scan(get_engine(), tenant=tenant))
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
    else:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(report.by_kind.items())) or "none"
        typer.echo(f"scanned {report.scanned} entries in {report.tenants} tenant(s): "
                   f"{report.raised} new event(s) ({kinds}), {report.repeated} repeat(s)")


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
