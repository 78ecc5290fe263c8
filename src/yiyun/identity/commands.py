"""Operator commands (kept stable: operators and monitoring script them):
`yiyun tenant create`, `yiyun user create`, `yiyun token issue`."""

from __future__ import annotations

import asyncio
import getpass
import os

import typer

from yiyun.core.errors import YiyunError

tenant_app = typer.Typer(help="Tenants: the region's hospitals, clinics, pharmacies and the CDC.", no_args_is_help=True)
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens for scripts and backend services.", no_args_is_help=True)


def _run(coro):
    from yiyun.core.db import dispose_engines

    async def wrapper():
        try:
            return await coro
        finally:
            await dispose_engines()

    try:
        return asyncio.run(wrapper())
    except YiyunError as err:
        typer.echo(f"错误: {err.message}", err=True)
        raise typer.Exit(2) from err


@tenant_app.command("create")
def tenant_create(
    slug: str = typer.Argument(..., help="Short id, e.g. cs-central-hospital."),
    name: str = typer.Option(..., "--name", help="Full name, e.g. 长沙市中心医院."),
    kind: str = typer.Option(..., "--kind", help="hospital | clinic | pharmacy | cdc"),
) -> None:
    """Create a tenant."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.accounts import create_tenant

    async def go():
        async with unit_of_work(get_engine()) as conn:
            return await create_tenant(conn, slug, name=name, kind=kind)

    t = _run(go())
    typer.echo(f"tenant {t.slug} ({t.kind}) created: {t.name}")


@tenant_app.command("list")
def tenant_list() -> None:
    """List tenants."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.accounts import list_tenants

    async def go():
        async with unit_of_work(get_engine(), write=False) as conn:
            return await list_tenants(conn)

    for t in _run(go()):
        typer.echo(f"{t.slug}\t{t.kind}\t{t.name}")


@user_app.command("create")
def user_create(
    username: str = typer.Argument(...),
    tenant: str = typer.Option(..., "--tenant", help="Tenant slug the user works in."),
    role: list[str] = typer.Option(..., "--role", help="Role(s): doctor, nurse, pharmacist, admin, auditor, cdc-officer …"),
    name: str = typer.Option(..., "--name", help="Display name, e.g. 李医生."),
    practitioner: str = typer.Option(None, "--practitioner", help="Linked FHIR Practitioner id."),
    password_env: str = typer.Option("YIYUN_NEW_PASSWORD", "--password-env",
                                     help="Environment variable holding the password (else asked for)."),
    status: str = typer.Option("active", "--status", help="active | pending (cannot sign in until approved) | disabled"),
) -> None:
    """Create a staff account with a password."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.accounts import create_staff

    password = os.environ.get(password_env) or getpass.getpass("密码 (password): ")
    roles = [r.strip() for value in role for r in value.split(",") if r.strip()]

    async def go():
        async with unit_of_work(get_engine()) as conn:
            return await create_staff(conn, username=username, display_name=name, password=password,
                                      tenant_slug=tenant, roles=roles, status=status,
                                      fhir_ref=f"Practitioner/{practitioner}" if practitioner else None)

    acct = _run(go())
    typer.echo(f"user {acct.username} created in {tenant} as {', '.join(roles)} (id {acct.id})")


@token_app.command("issue")
def token_issue(
    tenant: str = typer.Option(..., "--tenant", help="Tenant slug the service acts for."),
    scope: str = typer.Option(..., "--scope", help='SMART scopes, e.g. "system/*.cruds".'),
    minutes: int = typer.Option(15, "--minutes", min=1, max=24 * 60, help="Lifetime."),
    client: str = typer.Option("cli", "--client", help="Name of the script or service, recorded in the audit log."),
) -> None:
    """Print a short-lived bearer token for a backend service; the last line is the token."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.accounts import get_tenant
    from yiyun.identity.scopes import parse_scopes
    from yiyun.identity.tokens import issue_access_token

    try:
        contexts = {getattr(s, "context", None) for s in parse_scopes(scope)}
    except YiyunError as err:
        typer.echo(f"错误: {err.message}", err=True)
        raise typer.Exit(2) from err
    if contexts - {None, "system"}:
        typer.echo("错误: 服务令牌只能使用 system/ 范围 (backend tokens take system/ scopes)", err=True)
        raise typer.Exit(2)

    async def go():
        async with unit_of_work(get_engine()) as conn:
            await get_tenant(conn, tenant)
            token, claims = issue_access_token(subject=f"service:{client}", tenant=tenant, scope=scope, minutes=minutes)
            await record_token_issued(conn, claims)
            return token, claims

    token, claims = _run(go())
    typer.echo(f"# tenant={claims.tenant} scope={claims.scope} expires_in={minutes * 60}s", err=True)
    typer.echo(token)


async def record_token_issued(conn, claims) -> None:
    """Every issued token is written to the audit log."""
    from yiyun.identity import audit

    await audit.append(conn, [audit.AuditEntry(
        tenant=claims.tenant, actor=claims.subject, role="service", action="token-issued",
        purpose="SYSADMIN", outcome="ok",
        detail={"scope": claims.scope, "jti": claims.token_id, "expires": claims.expires},
    )])
