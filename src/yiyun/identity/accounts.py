"""Tenants, accounts and memberships: the region's organisations and the people in them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest, Conflict, NotFound
from yiyun.fhir.model import now_us
from yiyun.identity.passwords import check_password_strength, hash_password
from yiyun.identity.tables import account, membership, tenant

TENANT_KINDS = ("hospital", "clinic", "pharmacy", "cdc")
# Role codes; what each may do is decided by the access policy.
ROLES = ("patient", "doctor", "nurse", "pharmacist", "admin", "auditor", "cdc-officer", "regional-admin", "privacy-officer")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")


@dataclass(frozen=True)
class Tenant:
    slug: str
    name: str
    kind: str
    active: bool


@dataclass(frozen=True)
class Account:
    id: str
    username: str | None
    display_name: str
    kind: str
    status: str
    fhir_ref: str | None


async def create_tenant(conn: AsyncConnection, slug: str, *, name: str, kind: str) -> Tenant:
    if not SLUG_RE.match(slug):
        raise BadRequest(f"租户标识 {slug!r} 不合法：只能用小写字母、数字和连字符，3–64 个字符")
    if kind not in TENANT_KINDS:
        raise BadRequest(f"机构类型必须是 {', '.join(TENANT_KINDS)} 之一")
    if not name.strip():
        raise BadRequest("机构名称不能为空")
    try:
        async with conn.begin_nested():
            await conn.execute(insert(tenant).values(slug=slug, name=name.strip(), kind=kind, active=True,
                                                     created_ts=now_us()))
    except IntegrityError as exc:
        raise Conflict(f"租户 {slug} 已存在") from exc
    return Tenant(slug, name.strip(), kind, True)


async def get_tenant(conn: AsyncConnection, slug: str) -> Tenant:
    row = (await conn.execute(select(tenant).where(tenant.c.slug == slug))).first()
    if row is None:
        raise NotFound(f"租户 {slug} 不存在")
    return Tenant(row.slug, row.name, row.kind, bool(row.active))


async def list_tenants(conn: AsyncConnection) -> list[Tenant]:
    rows = await conn.execute(select(tenant).order_by(tenant.c.slug))
    return [Tenant(r.slug, r.name, r.kind, bool(r.active)) for r in rows]


def check_roles(roles: list[str]) -> list[str]:
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise BadRequest(f"未知角色 {', '.join(unknown) or '(空)'}；可用角色：{', '.join(ROLES)}")
    return roles


async def create_staff(
    conn: AsyncConnection, *, username: str, display_name: str, password: str, tenant_slug: str,
    roles: list[str], fhir_ref: str | None = None,
) -> Account:
    """A staff account with a password; the tenant must exist."""
    await get_tenant(conn, tenant_slug)
    check_roles(roles)
    check_password_strength(password, username=username)
    account_id = str(uuid.uuid4())
    try:
        async with conn.begin_nested():
            await conn.execute(insert(account).values(
                id=account_id, username=username, display_name=display_name, kind="staff",
                password_hash=hash_password(password), status="active", failed_logins=0,
                fhir_ref=fhir_ref, created_ts=now_us(),
            ))
            await conn.execute(insert(membership).values(account_id=account_id, tenant=tenant_slug,
                                                         roles=",".join(roles)))
    except IntegrityError as exc:
        raise Conflict(f"用户名 {username} 已被使用") from exc
    return Account(account_id, username, display_name, "staff", "active", fhir_ref)


async def memberships(conn: AsyncConnection, account_id: str) -> dict[str, tuple[str, ...]]:
    rows = await conn.execute(select(membership).where(membership.c.account_id == account_id))
    return {r.tenant: tuple(x for x in r.roles.split(",") if x) for r in rows}


async def find_by_username(conn: AsyncConnection, username: str) -> Account | None:
    row = (await conn.execute(select(account).where(account.c.username == username))).first()
    if row is None:
        return None
    return Account(row.id, row.username, row.display_name, row.kind, row.status, row.fhir_ref)
