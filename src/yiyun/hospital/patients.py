"""Who the patient is at a hospital: their Patient record in that hospital's tenant.

Each hospital is a tenant with its own Patient records. A patient account is linked to its
Patient in a tenant by its membership (`yiyun.identity.accounts.patient_link`). When a
patient books at a hospital where they have no record yet, one is made from their record
where they signed in (name, sex, birth date, phone, resident identity number; matched on
that number so nobody gets two records) or, failing that, from the account itself, and the
account is linked to it.

    pid = await patient_in_hospital(conn, ctx, "cs-central-hospital", create=True)
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import Forbidden, NotFound
from yiyun.fhir.model import RequestContext
from yiyun.hospital.catalogue import directory_repo

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 居民身份证号码 in Chinese health IT
COPIED = ("name", "gender", "birthDate", "telecom", "communication")


async def patient_in_hospital(conn: AsyncConnection, ctx: RequestContext, hospital: str, *,
                              create: bool = False) -> str | None:
    """The caller's Patient id in `hospital` (None when there is none and `create` is False)."""
    from yiyun.identity.accounts import link_patient_account, patient_link

    own = getattr(ctx, "patient", None)
    if ctx.tenant == hospital and own:
        return own
    account_id = getattr(ctx, "account_id", None)
    if account_id:
        link = await patient_link(conn, account_id, hospital)
        if link and link.startswith("Patient/"):
            return link.split("/", 1)[1]
    if not create:
        return None
    record = await _home_record(conn, ctx)
    if record is None and not account_id:
        raise Forbidden("未找到您的就诊人档案，请先完善个人信息 (no patient record to book with)")
    patient, criteria = await _new_record(conn, record, account_id)
    result = await directory_repo(conn, hospital).create(patient, if_none_exist=criteria or None)
    pid = result.stored.res_id
    if account_id:
        await link_patient_account(conn, account_id, hospital, f"Patient/{pid}")
    return pid


async def _home_record(conn: AsyncConnection, ctx: RequestContext) -> dict | None:
    own = getattr(ctx, "patient", None)
    if not own:
        return None
    try:
        # the caller's own record in the tenant they signed in to: theirs to copy
        return (await directory_repo(conn, ctx.tenant).read("Patient", own)).resource
    except NotFound:
        return None


async def _new_record(conn: AsyncConnection, record: dict | None, account_id: str | None) -> tuple[dict, list]:
    patient: dict = {"resourceType": "Patient", "active": True}
    criteria: list[tuple[str, str]] = []
    if record is not None:
        for key in COPIED:
            if record.get(key):
                patient[key] = record[key]
        ids = [i for i in record.get("identifier") or [] if i.get("system") == RESIDENT_ID_SYSTEM and i.get("value")]
        if ids:
            patient["identifier"] = [{k: v for k, v in ids[0].items() if k in ("use", "type", "system", "value")}]
            criteria = [("identifier", f"{RESIDENT_ID_SYSTEM}|{ids[0]['value']}")]
        return patient, criteria
    from yiyun.identity.accounts import account_phone, get_account

    account = await get_account(conn, account_id)
    if account is None:
        raise Forbidden("账号不存在 (account not found)")
    patient["name"] = [{"use": "official", "text": account.display_name}]
    phone = await account_phone(conn, account_id)
    if phone:
        patient["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    return patient, criteria
