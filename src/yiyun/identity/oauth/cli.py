"""`yiyun client …`: register, list and disable OAuth clients (SMART apps, backend services).

Operators script these: keep names, options and exit codes stable (0 done, 2 refused).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

client_app = typer.Typer(help="OAuth clients: SMART apps and backend services allowed to ask for tokens.",
                         no_args_is_help=True)


def _run(coro):
    from yiyun.identity.commands import _run as run

    return run(coro)


@client_app.command("create")
def client_create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant slug the client belongs to."),
    name: str = typer.Option(..., "--name", help="Name shown on the consent page, e.g. 血压管家."),
    kind: str = typer.Option(..., "--type", help="public | confidential | backend"),
    redirect_uri: List[str] = typer.Option([], "--redirect-uri", help="Exact redirect URI (repeatable)."),
    scope: str = typer.Option(..., "--scope", help='Most the client may get, e.g. "launch/patient openid fhirUser '
                                                   'offline_access patient/*.rs" or "system/*.rs".'),
    jwks_file: Optional[Path] = typer.Option(None, "--jwks-file", exists=True, dir_okay=False,
                                             help="JSON Web Key Set with the client's public keys (private_key_jwt)."),
    jwks_url: Optional[str] = typer.Option(None, "--jwks-url", help="https URL of the client's JWKS."),
) -> None:
    """Register a client. Prints the client_id (and, once, the secret of a secret-based client)."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.core.errors import BadRequest
    from yiyun.identity.oauth.clients import create_client

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            typer.echo(f"错误: 密钥集文件不是 JSON (the JWKS file is not JSON): {exc}", err=True)
            raise typer.Exit(2) from exc

    async def go():
        async with unit_of_work(get_engine()) as conn:
            if jwks is not None and not isinstance(jwks, dict):
                raise BadRequest("密钥集须为 JSON 对象 (the JWKS must be a JSON object)")
            return await create_client(conn, tenant=tenant, name=name, kind=kind, redirect_uris=list(redirect_uri),
                                       scope=scope, jwks=jwks, jwks_url=jwks_url, created_by="cli")

    client, secret = _run(go())
    typer.echo(f"client_id: {client.client_id}")
    typer.echo(f"type: {client.kind}  tenant: {client.tenant}  scope: {client.scopes}")
    if secret:
        typer.echo(f"client_secret: {secret}")
        typer.echo("# 密钥只显示这一次，请妥善保存 (the secret is shown only once)", err=True)


@client_app.command("list")
def client_list(tenant: Optional[str] = typer.Option(None, "--tenant", help="Only this tenant's clients.")) -> None:
    """List clients: id, tenant, type, status, name, scopes."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.oauth.clients import list_clients

    async def go():
        async with unit_of_work(get_engine(), write=False) as conn:
            return await list_clients(conn, tenant)

    for c in _run(go()):
        typer.echo(f"{c.client_id}\t{c.tenant}\t{c.kind}\t{c.status}\t{c.name}\t{c.scopes}")


@client_app.command("disable")
def client_disable(client_id: str = typer.Argument(..., help="The client_id to disable.")) -> None:
    """Disable a client: no new tokens, and every grant it holds is revoked."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.oauth.clients import disable_client

    async def go():
        async with unit_of_work(get_engine()) as conn:
            return await disable_client(conn, client_id, by="cli")

    client = _run(go())
    typer.echo(f"client {client.client_id} ({client.name}) disabled")
