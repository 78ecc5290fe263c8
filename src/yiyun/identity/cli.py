"""`yiyun audit …` (verify and anchor the audit chains) and `yiyun keys …` (key rings).

Operators and monitoring script these: keep names, options and exit codes stable.
`audit verify` exits 0 when every chain is intact and 1 when any problem is found.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Optional

import typer

# Every command that writes the FHIR store (import, demo load) seals resident IDs and phones.
from yiyun.identity.protection import store as _protection_store  # noqa: F401

audit_app = typer.Typer(help="Tamper-evident audit log: verify the hash chains, print their heads.", no_args_is_help=True)
keys_app = typer.Typer(help="Key rings of field encryption and the audit chain.", no_args_is_help=True)


def _run(coro_fn):
    from yiyun.core.db import dispose_engines

    async def wrapper():
        try:
            return await coro_fn()
        finally:
            await dispose_engines()

    return asyncio.run(wrapper())


async def _snapshot(engine):
    """A read transaction over one consistent snapshot of the database."""
    from yiyun.core.db import is_sqlite

    conn = await engine.connect()
    if not is_sqlite(engine):
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def _read_anchors(path: Path | None) -> list[tuple[str, int, str]]:
    if path is None:
        return []
    anchors = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            item = json.loads(line)
            anchors.append((item["tenant"], int(item["seq"]), item["hash"]))
    return anchors


@audit_app.command("verify")
def audit_verify(
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Verify one tenant's chain (default: all)."),
    start: Optional[int] = typer.Option(None, "--start", min=1, help="Begin at this entry number."),
    anchors: Optional[Path] = typer.Option(None, "--anchors", exists=True, dir_okay=False,
                                           help="JSON lines from `yiyun audit heads --json` recorded earlier."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check every entry's hash and link; report each changed, removed or reordered entry."""
    from yiyun.core.db import get_engine
    from yiyun.identity.audit import verify

    async def go():
        conn = await _snapshot(get_engine())
        try:
            async with conn.begin():
                return await verify(conn, tenant=tenant, start=start, anchors=_read_anchors(anchors))
        finally:
            await conn.close()

    report = _run(go)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
    elif report.ok:
        typer.echo(f"OK: {report.checked} entries in {report.chains} chain(s) verified")
    else:
        for p in report.problems:
            typer.echo(f"PROBLEM tenant={p.tenant} seq={p.seq} {p.kind}: {p.message}")
        more = f" (+{report.more_problems} more)" if report.more_problems else ""
        typer.echo(f"FAILED: {len(report.problems)} problem(s){more} in {report.checked} entries checked")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("heads")
def audit_heads(as_json: bool = typer.Option(False, "--json", help="One JSON object per line (for --anchors).")) -> None:
    """Print each chain's newest entry number and hash, to keep outside the database."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.audit import heads

    async def go():
        async with unit_of_work(get_engine(), write=False) as conn:
            return await heads(conn)

    for t, seq, h in _run(go):
        if as_json:
            typer.echo(json.dumps({"tenant": t, "seq": seq, "hash": h}, ensure_ascii=False))
        else:
            typer.echo(f"{t}\t{seq}\t{h}")


@keys_app.command("new")
def keys_new(prefix: str = typer.Option("k", "--prefix", help="Start of the key id, e.g. k (fields) or a (audit).")) -> None:
    """Print a fresh `id:base64` key line to put first in a key ring."""
    from yiyun.identity.protection.keyring import new_key_line

    typer.echo(new_key_line(prefix))


@keys_app.command("status")
def keys_status() -> None:
    """Show the key ids of both rings (never the keys) and which one is current."""
    from yiyun.identity.protection.keyring import audit_keyring, field_keyring

    for name, ring in (("encryption", field_keyring()), ("audit", audit_keyring())):
        typer.echo(f"{name}: current={ring.current_id} ids={','.join(ring.ids)} source={ring.source}")


@keys_app.command("rotate")
def keys_rotate(batch: int = typer.Option(500, "--batch", min=1, max=10000, help="Rows per transaction.")) -> None:
    """Re-encrypt every registered encrypted column under the current key, batch by batch.

    Put the new key first in YIYUN_ENCRYPTION_KEYS (keep the old ones after it), run this,
    then remove the old keys once it reports nothing left to rotate. The FHIR store's
    resident IDs and phone numbers are re-sealed too (current and historical versions, with
    their blind indexes), including values stored before protection was switched on.
    """
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.fhir.protection import reseal_batch
    from yiyun.identity import signin_tables, verification_tables  # noqa: F401  (register their encrypted columns)
    from yiyun.identity.protection import store as _store  # noqa: F401  (installs the FHIR protector)
    from yiyun.identity.protection.fields import encrypted_columns, protector, rotate_batch

    async def go():
        fp = protector()
        totals = {}
        unreadable: list = []
        for col in encrypted_columns():
            total, after, missed = 0, None, []
            while True:
                async with unit_of_work(get_engine()) as conn:
                    changed, after = await rotate_batch(conn, col, after=after, batch=batch, fp=fp, unreadable=missed)
                total += changed
                if after is None:
                    break
            totals[col.name] = total
            unreadable.extend((col.name, str(pk)) for pk in missed)
        total, after = 0, 0
        while after is not None:
            async with unit_of_work(get_engine()) as conn:
                changed, after = await reseal_batch(conn, after=after, batch=batch, unreadable=unreadable)
            total += changed
        totals["fhir_resource (resident IDs, phones)"] = total
        return fp.ring.current_id, totals, unreadable

    current, totals, unreadable = _run(go)
    for where, ref in unreadable[:20]:
        typer.echo(f"UNREADABLE {where} {ref}: no key of the ring opens it", err=True)
    if unreadable:
        typer.echo(f"{len(unreadable)} value(s) could not be re-encrypted: put their key back in the ring", err=True)
    for name, n in totals.items():
        typer.echo(f"{name}: {n} value(s) re-encrypted under {current}")
