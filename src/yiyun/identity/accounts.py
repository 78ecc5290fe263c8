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
    roles: list[str], fhir_ref: str | None = None, status: str = "active", password_hash: str | None = None,
) -> Account:
    """A staff account with a password; the tenant must exist. `status` "pending" makes an
    account that cannot sign in until approved. `password_hash` (an argon2id hash made
    earlier, e.g. the demo's shared password) skips hashing `password` again."""
    await get_tenant(conn, tenant_slug)
    check_roles(roles)
    if status not in ("active", "pending", "disabled"):
        raise BadRequest("账号状态只能是 active、pending 或 disabled")
    if password_hash is None:
        check_password_strength(password, username=username)
        password_hash = hash_password(password)
    if not username or len(username) > 100 or username.strip() != username or username.lower() in ("system", "anonymous"):
        raise BadRequest(f"用户名 {username!r} 不可用 (username not allowed)")
    account_id = str(uuid.uuid4())
    try:
        async with conn.begin_nested():
            await conn.execute(insert(account).values(
                id=account_id, username=username, display_name=display_name, kind="staff",
                password_hash=password_hash, status=status, failed_logins=0,
                fhir_ref=fhir_ref, created_ts=now_us(),
            ))
            await conn.execute(insert(membership).values(account_id=account_id, tenant=tenant_slug,
                                                         roles=",".join(roles)))
    except IntegrityError as exc:
        raise Conflict(f"用户名 {username} 已被使用") from exc
    return Account(account_id, username, display_name, "staff", status, fhir_ref)


async def memberships(conn: AsyncConnection, account_id: str) -> dict[str, tuple[str, ...]]:
    rows = await conn.execute(select(membership).where(membership.c.account_id == account_id))
    return {r.tenant: tuple(x for x in r.roles.split(",") if x) for r in rows}


async def find_by_username(conn: AsyncConnection, username: str) -> Account | None:
    row = (await conn.execute(select(account).where(account.c.username == username))).first()
    if row is None:
        return None
    return Account(row.id, row.username, row.display_name, row.kind, row.status, row.fhir_ref)


async def get_account(conn: AsyncConnection, account_id: str) -> Account | None:
    row = (await conn.execute(select(account).where(account.c.id == account_id))).first()
    if row is None:
        return None
    return Account(row.id, row.username, row.display_name, row.kind, row.status, row.fhir_ref)


# ------------------------------------------------------------------ patients
def check_mobile(phone_number: str) -> str:
    """A mainland China mobile number (11 digits starting with 1, GB/T 28524 / MIIT numbering),
    normalised to its digits; anything else is a 400."""
    from yiyun.identity.protection.fields import normalize_phone

    digits = normalize_phone(phone_number or "")
    if not (len(digits) == 11 and digits.startswith("1") and digits[1] in "3456789"):
        raise BadRequest("请输入 11 位手机号码 (enter an 11-digit mobile number)")
    return digits


async def find_by_phone(conn: AsyncConnection, phone_number: str) -> Account | None:
    """The patient account registered with this mobile number (found by its blind index)."""
    from yiyun.identity.protection.fields import PHONE, blind_indexes
    from yiyun.identity.signin_tables import phone

    indexes = blind_indexes(check_mobile(phone_number), PHONE)
    row = (await conn.execute(
        select(account).join(phone, phone.c.account_id == account.c.id).where(phone.c.phone_index.in_(indexes))
    )).first()
    if row is None:
        return None
    return Account(row.id, row.username, row.display_name, row.kind, row.status, row.fhir_ref)


async def account_phone(conn: AsyncConnection, account_id: str) -> str | None:
    """The account's mobile number, decrypted (None when it has none)."""
    from yiyun.identity.protection.fields import PHONE, decrypt
    from yiyun.identity.signin_tables import phone

    value = (await conn.execute(select(phone.c.phone).where(phone.c.account_id == account_id))).scalar()
    return decrypt(value, PHONE) if value else None


async def linked_account_phone(conn: AsyncConnection, tenant: str, fhir_ref: str) -> str | None:
    """The mobile number of the patient account linked to `fhir_ref` ("Patient/<id>") in
    `tenant`, decrypted (None when no account with a number is linked): where a hospital
    reaches a patient whose record has no phone, e.g. for booking reminders."""
    from yiyun.identity.protection.fields import PHONE, decrypt
    from yiyun.identity.signin_tables import phone

    value = (await conn.execute(
        select(phone.c.phone).join(membership, membership.c.account_id == phone.c.account_id)
        .where(membership.c.tenant == tenant, membership.c.fhir_ref == fhir_ref).limit(1))).scalar()
    return decrypt(value, PHONE) if value else None


async def create_patient_account(
    conn: AsyncConnection, phone_number: str, display_name: str, tenant: str | None = None,
    fhir_ref: str | None = None, *, password_hash: str | None = None,
) -> Account:
    """A patient account identified by its mobile number (stored encrypted, with a blind
    index for lookup). With `tenant`, also the patient's membership there (role `patient`,
    linked to `fhir_ref` = "Patient/<id>" when given). 409 when the number is registered."""
    from yiyun.identity.protection.fields import PHONE, blind_index, encrypt
    from yiyun.identity.signin_tables import phone

    digits = check_mobile(phone_number)
    if fhir_ref is not None and not fhir_ref.startswith("Patient/"):
        raise BadRequest("患者账号只能关联 Patient 资源 (a patient account links to Patient/<id>)")
    if tenant:
        await get_tenant(conn, tenant)
    account_id = str(uuid.uuid4())
    name = (display_name or "").strip() or f"患者{digits[-4:]}"
    try:
        async with conn.begin_nested():
            await conn.execute(insert(account).values(
                id=account_id, username=None, display_name=name[:200], kind="patient", password_hash=password_hash,
                status="active", failed_logins=0, fhir_ref=None, created_ts=now_us(),
            ))
            await conn.execute(insert(phone).values(account_id=account_id, phone=encrypt(digits, PHONE),
                                                    phone_index=blind_index(digits, PHONE)))
    except IntegrityError as exc:
        raise Conflict("该手机号已注册 (this mobile number already has an account)") from exc
    if tenant:
        await link_patient_account(conn, account_id, tenant, fhir_ref)
    return Account(account_id, None, name, "patient", "active", None)


async def link_patient_account(conn: AsyncConnection, account_id: str, tenant: str, fhir_ref: str | None) -> None:
    """Make the account a patient of `tenant`, linked to its Patient there (`Patient/<id>`, or
    None to leave it unlinked for now). Existing roles in the tenant are kept; a link already
    set is replaced only by a non-null one. The hospital module calls this when it creates
    the Patient at booking."""
    from sqlalchemy import update

    if fhir_ref is not None and not fhir_ref.startswith("Patient/"):
        raise BadRequest("患者账号只能关联 Patient 资源 (a patient account links to Patient/<id>)")
    row = (await conn.execute(select(membership).where(
        membership.c.account_id == account_id, membership.c.tenant == tenant))).first()
    if row is None:
        try:
            async with conn.begin_nested():
                await conn.execute(insert(membership).values(account_id=account_id, tenant=tenant, roles="patient",
                                                             fhir_ref=fhir_ref))
            return
        except IntegrityError:  # a concurrent first sign-in linked it meanwhile
            row = (await conn.execute(select(membership).where(
                membership.c.account_id == account_id, membership.c.tenant == tenant))).first()
    roles = [r for r in row.roles.split(",") if r]
    if "patient" not in roles:
        roles.append("patient")
    await conn.execute(update(membership).where(
        membership.c.account_id == account_id, membership.c.tenant == tenant,
    ).values(roles=",".join(roles), fhir_ref=fhir_ref or row.fhir_ref))


async def patient_link(conn: AsyncConnection, account_id: str, tenant: str) -> str | None:
    """The Patient (`Patient/<id>`) the account is linked to in `tenant`, or None."""
    return (await conn.execute(select(membership.c.fhir_ref).where(
        membership.c.account_id == account_id, membership.c.tenant == tenant))).scalar()


async def set_password(conn: AsyncConnection, account_id: str, password: str, *, username: str | None = None) -> None:
    """Set the account's password after the strength checks (argon2id hash)."""
    from sqlalchemy import update

    check_password_strength(password, username=username)
    await conn.execute(update(account).where(account.c.id == account_id).values(password_hash=hash_password(password)))


async def set_status(conn: AsyncConnection, account_id: str, status: str) -> None:
    """active | pending (awaiting approval) | disabled; non-active accounts cannot sign in."""
    from sqlalchemy import update

    if status not in ("active", "pending", "disabled"):
        raise BadRequest("账号状态只能是 active、pending 或 disabled")
    await conn.execute(update(account).where(account.c.id == account_id).values(status=status))
