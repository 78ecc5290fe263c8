"""Real-name verification of patients (实名认证) and registration of practitioners.

Patients: the signed-in patient gives their name and resident ID number; the number must
pass GB 11643-1999 (format, birth date, ISO 7064 MOD 11-2 check character) and an identity
provider must match the name to the number. The outcome is stored per account (verified flag,
time, masked number, ciphertext and blind index; never the plain number). Unverified patients
may browse and consult; prescribing asks `is_real_name_verified` first (《互联网诊疗管理办法
（试行）》 2018 第十八条 and 《互联网诊疗监管细则（试行）》 2022 第十五条: patients of internet
diagnosis and treatment are identified by real name). Attempts are limited per day and audited
(action `real-name`).

Practitioners: a doctor signs up with a username, password, name, hospital, department and
practising-certificate number (医师执业证书编码, 15 digits; 《医师执业注册管理办法》 2017,
国家卫生计生委令第13号, 第十五条 and the certificate form it prescribes); the account stays
`pending` (it cannot sign in) until an administrator of that hospital approves it, which
activates the account, creates the Practitioner (the certificate number as its identifier)
and PractitionerRole in the hospital's tenant and links the account to it. Rejection keeps
the account disabled with the reason. Every step is audited.
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core import resident_id as gb11643
from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable, YiyunError
from yiyun.core.templating import render
from yiyun.fhir.model import RequestContext, now_us
from yiyun.fhir.repository import FhirRepository
from yiyun.identity.auth import AuthContext, require_subject
from yiyun.identity.protection import store as _protection_store  # noqa: F401  (seals IDs and phones in the FHIR store)
from yiyun.identity.protection.fields import RESIDENT_ID, blind_index, blind_indexes, encrypt
from yiyun.identity.protection.masking import mask_name, mask_resident_id
from yiyun.identity.verification_tables import practitioner_registration, real_name, real_name_attempt

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
# The national identifier of a physician's practising certificate (医师执业证书编码).
CERTIFICATE_SYSTEM = "https://yiyun.example.cn/fhir/sid/practising-certificate/doctor"
# Attempts per account in any 24 hours: enough for typing mistakes, too few to use the
# provider as an oracle for guessing numbers (OWASP Authentication Cheat Sheet, "limit
# failed attempts"; the figure is this platform's choice).
DAILY_ATTEMPTS = 5
DAY_US = 24 * 3600 * 1_000_000
# 医师执业证书编码: 15 digits (《医师执业注册管理办法》 and the certificate's national coding).
CERTIFICATE_RE = re.compile(r"^\d{15}$")
# Chinese names in Han characters (with the middle dot of transliterated names) or Latin letters.
NAME_RE = re.compile(r"^[\u3400-\u9fff\uf900-\ufaff·•]{2,30}$|^[A-Za-z][A-Za-z .'-]{1,59}$")
REGISTRATION_TENANT_KINDS = ("hospital", "clinic")


# ------------------------------------------------------------------ identity providers
@dataclass(frozen=True)
class VerificationResult:
    matched: bool
    reason: str  # matched | name-mismatch | not-found | deceased | revoked | invalid-id


class IdentityProvider(Protocol):
    name: str

    async def verify(self, name: str, resident_id: str) -> VerificationResult:
        """Whether `name` is the holder of `resident_id` (an 18-character, checked number)."""


def _sandbox_id(area: str, born: date, seq: int) -> str:
    return gb11643.build(area, born, seq)


# Test identities of the sandbox (all numbers are synthetic but well formed).
SANDBOX_IDENTITIES: dict[str, tuple[str, str]] = {
    "11010519491231002X": ("张三", "ok"),  # the worked example of GB 11643-1999
    _sandbox_id("430104", date(1985, 6, 15), 123): ("李四", "ok"),
    _sandbox_id("310101", date(1990, 1, 1), 246): ("王小明", "ok"),
    _sandbox_id("440305", date(2001, 9, 30), 357): ("欧阳娜娜", "ok"),
    "440524188001010014": ("赵老太", "deceased"),  # GB 11643-1999 example; a death registered
    _sandbox_id("320102", date(1978, 3, 8), 468): ("钱五", "revoked"),  # number cancelled (注销)
}


class SandboxIdentityProvider:
    """Offline and deterministic, for development, tests and demonstrations:

    1. a number listed in `SANDBOX_IDENTITIES` matches its listed name only; listed as
       `deceased` or `revoked` it never matches;
    2. a number whose sequence code (characters 15-17) is 999 is unknown to the sandbox
       (`not-found`), to exercise that outcome;
    3. any other well-formed number matches any well-formed name.
    """

    name = "sandbox"

    async def verify(self, name: str, resident_id: str) -> VerificationResult:
        if not gb11643.is_valid(resident_id, today=date.today()):
            return VerificationResult(False, "invalid-id")
        listed = SANDBOX_IDENTITIES.get(resident_id)
        if listed is not None:
            holder, status = listed
            if status != "ok":
                return VerificationResult(False, status)
            return VerificationResult(holder == name, "matched" if holder == name else "name-mismatch")
        if resident_id[14:17] == "999":
            return VerificationResult(False, "not-found")
        return VerificationResult(True, "matched")


PROVIDERS: dict[str, type] = {"sandbox": SandboxIdentityProvider}


def identity_provider() -> IdentityProvider:
    """The provider named by YIYUN_IDENTITY_PROVIDER (default `sandbox`). A production
    deployment registers its provider (e.g. the public-security identity service its region
    contracts) in `PROVIDERS` under a name and sets the variable."""
    name = os.environ.get("YIYUN_IDENTITY_PROVIDER", "sandbox").strip() or "sandbox"
    factory = PROVIDERS.get(name)
    if factory is None:
        raise RuntimeError(f"unknown identity provider {name!r} (YIYUN_IDENTITY_PROVIDER); known: {', '.join(PROVIDERS)}")
    return factory()


# ------------------------------------------------------------------ real-name verification
@dataclass(frozen=True)
class RealNameStatus:
    verified: bool
    reason: str
    name_masked: str = ""
    id_masked: str = ""
    verified_ts: int | None = None
    attempts_left: int = DAILY_ATTEMPTS

    def as_json(self) -> dict:
        at = None
        if self.verified_ts:
            at = datetime.fromtimestamp(self.verified_ts / 1e6, tz=timezone.utc).isoformat(timespec="seconds")
        return {"verified": self.verified, "reason": self.reason, "name": self.name_masked,
                "resident_id": self.id_masked, "verified_at": at, "attempts_left": self.attempts_left}


REASON_MESSAGES = {
    "matched": "实名认证已通过 (real-name verification passed)",
    "name-mismatch": "姓名与身份证号码不一致 (the name does not match the ID number)",
    "not-found": "未查到该身份证号码 (the ID number is unknown to the identity service)",
    "deceased": "该身份证号码不能用于认证 (this ID number cannot be verified)",
    "revoked": "该身份证号码不能用于认证 (this ID number cannot be verified)",
    "invalid-id": "身份证号码格式或校验位不正确 (the ID number is malformed or its check character is wrong, GB 11643-1999)",
    "invalid-name": "请填写身份证上的姓名 (enter the name as on the ID card)",
    "id-taken": "该身份证号码已被其他账号实名认证 (this ID number is verified for another account)",
    "none": "尚未实名认证 (not verified yet)",
}


async def is_real_name_verified(conn: AsyncConnection, account_id: str) -> bool:
    """Whether the patient account has passed real-name verification (for prescribing)."""
    row = (await conn.execute(select(real_name.c.verified).where(real_name.c.account_id == account_id))).first()
    return bool(row and row.verified)


async def is_patient_real_name_verified(conn: AsyncConnection, tenant: str, patient_id: str) -> bool:
    """Whether the account linked to Patient/`patient_id` in `tenant` has passed real-name
    verification (for callers that know the Patient rather than the account)."""
    from yiyun.identity.tables import membership

    rows = (await conn.execute(
        select(real_name.c.verified).select_from(
            membership.join(real_name, real_name.c.account_id == membership.c.account_id))
        .where(membership.c.tenant == tenant, membership.c.fhir_ref == f"Patient/{patient_id}")
    )).scalars().all()
    return any(rows)


async def _attempts_today(conn: AsyncConnection, account_id: str, now: int) -> int:
    return (await conn.execute(
        select(func.count()).select_from(real_name_attempt).where(
            real_name_attempt.c.account_id == account_id, real_name_attempt.c.ts > now - DAY_US)
    )).scalar_one()


async def real_name_status(conn: AsyncConnection, account_id: str) -> RealNameStatus:
    now = now_us()
    left = max(0, DAILY_ATTEMPTS - await _attempts_today(conn, account_id, now))
    row = (await conn.execute(select(real_name).where(real_name.c.account_id == account_id))).first()
    if row is None:
        return RealNameStatus(False, "none", attempts_left=left)
    return RealNameStatus(bool(row.verified), row.reason, row.name_masked, row.id_masked, row.verified_ts, left)


def _clean_name(name: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", name or "")).strip()


async def _audit(conn: AsyncConnection, ctx: AuthContext | RequestContext, action: str, outcome: str, detail: dict,
                 *, tenant: str | None = None, res_type: str | None = None, res_id: str | None = None,
                 patient: str | None = None) -> None:
    from yiyun.identity.audit import AuditEntry, append

    await append(conn, [AuditEntry(
        tenant=tenant or ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action=action,
        resource_type=res_type, resource_id=res_id, outcome=outcome, purpose=ctx.purpose,
        client_address=ctx.client_address, patient=patient, detail=detail,
    )])


def _patient_ref(ctx) -> str | None:
    patient = getattr(ctx, "patient", None)
    return f"Patient/{patient}" if patient else None


async def verify_real_name(
    conn: AsyncConnection, ctx: AuthContext, account_id: str, name: str, resident_id: str,
    *, provider: IdentityProvider | None = None,
) -> RealNameStatus:
    """Check `name` and `resident_id` for the patient account and store the outcome.

    The attempt and its audit entry are written in `conn` whatever the outcome; the caller
    commits, then raises for `invalid-id` / `invalid-name` (a 422) so the attempt still
    counts. Raises 429 when the day's attempts are used up, 409 when already verified or
    when the number is verified for another account."""
    now = now_us()
    current = await real_name_status(conn, account_id)
    if current.verified:
        raise Conflict("已完成实名认证，如需更改请联系医院 (already verified; contact the hospital to change it)")
    if current.attempts_left <= 0:
        await _audit(conn, ctx, "real-name", "denied", {"reason": "daily-limit"}, res_type="Patient",
                     res_id=ctx.patient, patient=_patient_ref(ctx))
        raise YiyunError(f"今日实名认证次数已用完（每天 {DAILY_ATTEMPTS} 次），请明天再试 (daily attempts used up)",
                         status=429, code="throttled")
    name = _clean_name(name)
    number = gb11643.normalize(unicodedata.normalize("NFKC", resident_id or "")).replace(" ", "")
    if not NAME_RE.match(name):
        result, provider_name = VerificationResult(False, "invalid-name"), "-"
    elif not gb11643.is_valid(number, today=date.today()):
        result, provider_name = VerificationResult(False, "invalid-id"), "-"
    else:
        provider = provider or identity_provider()
        result, provider_name = await provider.verify(name, number), provider.name
    masked = mask_resident_id(number) if len(number) in (15, 18) else "*" * min(len(number), 18)
    await conn.execute(insert(real_name_attempt).values(account_id=account_id, ts=now, outcome=result.reason))
    if result.matched:
        taken = (await conn.execute(select(real_name.c.account_id).where(
            real_name.c.id_index.in_(blind_indexes(number, RESIDENT_ID)), real_name.c.verified.is_(True),
            real_name.c.account_id != account_id))).first()
        if taken is not None:
            result = VerificationResult(False, "id-taken")
    detail = {"reason": result.reason, "provider": provider_name, "resident_id": masked}
    await _audit(conn, ctx, "real-name", "ok" if result.matched else "denied", detail,
                 res_type="Patient" if ctx.patient else None, res_id=ctx.patient, patient=_patient_ref(ctx))
    if result.reason in ("invalid-id", "invalid-name"):
        return RealNameStatus(False, result.reason, attempts_left=current.attempts_left - 1)
    if result.reason == "id-taken":
        return RealNameStatus(False, "id-taken", attempts_left=current.attempts_left - 1)
    values = dict(verified=result.matched, name_masked=mask_name(name)[:64], id_masked=masked,
                  id_sealed=encrypt(number, RESIDENT_ID), id_index=blind_index(number, RESIDENT_ID),
                  provider=provider_name, reason=result.reason, verified_ts=now if result.matched else None,
                  updated_ts=now)
    exists = (await conn.execute(select(real_name.c.account_id).where(real_name.c.account_id == account_id))).first()
    if exists:
        await conn.execute(update(real_name).where(real_name.c.account_id == account_id).values(**values))
    else:
        await conn.execute(insert(real_name).values(account_id=account_id, **values))
    if result.matched and ctx.patient:
        await _record_on_patient(conn, ctx.tenant, ctx.patient, number)
    return RealNameStatus(result.matched, result.reason, values["name_masked"], masked,
                          values["verified_ts"], current.attempts_left - 1)


async def _record_on_patient(conn: AsyncConnection, tenant: str, patient_id: str, number: str) -> None:
    """The verified number becomes the Patient's official identifier (sealed in the store),
    so records can be matched across hospitals (EMPI) and prescriptions name the holder."""
    # In-process: the verification service writes the identifier on the patient's behalf.
    repo = FhirRepository(conn, RequestContext(tenant=tenant, subject="service:real-name"))
    try:
        stored = await repo.read("Patient", patient_id)
    except YiyunError:
        return
    patient = dict(stored.resource)
    identifiers = [i for i in patient.get("identifier") or [] if i.get("system") != RESIDENT_ID_SYSTEM]
    identifiers.insert(0, {"use": "official", "system": RESIDENT_ID_SYSTEM, "value": number})
    patient["identifier"] = identifiers
    await repo.update("Patient", patient_id, patient)


async def _account_of(conn: AsyncConnection, ctx: AuthContext) -> str:
    """The patient account behind the caller (a session names it; a token names it by subject)."""
    from yiyun.identity.accounts import find_by_username, get_account

    if "patient" not in ctx.roles:
        raise Forbidden("仅患者本人可以进行实名认证 (real-name verification is for patients)")
    if getattr(ctx, "account_id", None):
        return ctx.account_id
    found = await get_account(conn, ctx.subject) or await find_by_username(conn, ctx.subject)
    if found is None or found.kind != "patient":
        raise Forbidden("未找到患者账号 (no patient account for this sign-in)")
    return found.id


# ------------------------------------------------------------------ practitioner registration
def check_certificate(number: str) -> str:
    """医师执业证书编码: 15 digits (《医师执业注册管理办法》; the certificate's national code)."""
    value = unicodedata.normalize("NFKC", number or "").strip()
    if not CERTIFICATE_RE.match(value):
        raise BadRequest("医师执业证书编码应为 15 位数字 (the practising-certificate number has 15 digits)")
    return value


@dataclass(frozen=True)
class Registration:
    id: str
    account_id: str
    tenant: str
    name: str
    department: str
    certificate: str
    status: str
    reason: str | None
    created_ts: int
    decided_ts: int | None
    decided_by: str | None
    practitioner_ref: str | None
    username: str | None = None

    def as_json(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "tenant", "name", "department", "certificate", "status", "reason",
                                              "created_ts", "decided_ts", "decided_by", "practitioner_ref", "username")}


def _registration(row) -> Registration:
    return Registration(row.id, row.account_id, row.tenant, row.name, row.department, row.certificate, row.status,
                        row.reason, row.created_ts, row.decided_ts, row.decided_by, row.practitioner_ref,
                        getattr(row, "username", None))


async def register_practitioner(
    conn: AsyncConnection, *, username: str, password: str, name: str, tenant: str, department: str,
    certificate: str, client_address: str | None = None,
) -> Registration:
    """A doctor's sign-up: a pending staff account (role doctor, not linked to any Practitioner
    yet, so it reaches no patient even with a token) and a registration record."""
    from yiyun.identity.accounts import create_staff, get_tenant, set_status

    certificate = check_certificate(certificate)
    name = _clean_name(name)
    if not NAME_RE.match(name):
        raise BadRequest("请填写执业证书上的姓名 (enter the name as on the practising certificate)")
    department = _clean_name(department)
    if not 1 <= len(department) <= 100:
        raise BadRequest("请填写科室 (enter the department)")
    hospital = await get_tenant(conn, (tenant or "").strip())
    if hospital.kind not in REGISTRATION_TENANT_KINDS or not hospital.active:
        raise BadRequest("只能注册到医院或诊所 (doctors register with a hospital or clinic)")
    if not re.match(r"^[A-Za-z0-9_.-]{3,64}$", username or ""):
        raise BadRequest("用户名为 3–64 个字母、数字、点、下划线或连字符 (username: 3-64 letters, digits, . _ -)")
    busy = (await conn.execute(select(practitioner_registration.c.id).where(
        practitioner_registration.c.certificate == certificate,
        practitioner_registration.c.status.in_(("pending", "approved"))))).first()
    if busy is None:
        # a doctor the hospital already keeps (e.g. entered by its staff office) registers no second time
        repo = FhirRepository(conn, RequestContext(tenant=hospital.slug, subject="service:registration"))
        busy = await repo.find("Practitioner", [("identifier", f"{CERTIFICATE_SYSTEM}|{certificate}")]) or None
    if busy is not None:
        raise Conflict("该执业证书编码已注册或正在审核 (this certificate number is already registered)")
    acct = await create_staff(conn, username=username, display_name=name, password=password,
                              tenant_slug=hospital.slug, roles=["doctor"])
    await set_status(conn, acct.id, "pending")
    reg_id = str(uuid.uuid4())
    now = now_us()
    await conn.execute(insert(practitioner_registration).values(
        id=reg_id, account_id=acct.id, tenant=hospital.slug, name=name, department=department,
        certificate=certificate, status="pending", created_ts=now))
    ctx = RequestContext(tenant=hospital.slug, subject=username, client_address=client_address)
    await _audit(conn, ctx, "practitioner-registration", "ok", {"status": "pending", "department": department},
                 res_type="PractitionerRegistration", res_id=reg_id)
    return Registration(reg_id, acct.id, hospital.slug, name, department, certificate, "pending", None, now,
                        None, None, None, username)


def _require_admin(ctx: AuthContext) -> None:
    if "admin" not in ctx.roles:
        raise Forbidden("仅医院管理员可以审核医师注册 (hospital administrators only)")


async def list_registrations(conn: AsyncConnection, tenant: str, status: str | None = None) -> list[Registration]:
    from yiyun.identity.tables import account

    q = (select(practitioner_registration, account.c.username)
         .select_from(practitioner_registration.outerjoin(account, account.c.id == practitioner_registration.c.account_id))
         .where(practitioner_registration.c.tenant == tenant)
         .order_by(practitioner_registration.c.created_ts.desc()).limit(500))
    if status:
        if status not in ("pending", "approved", "rejected"):
            raise BadRequest("status 只能是 pending、approved 或 rejected")
        q = q.where(practitioner_registration.c.status == status)
    return [_registration(r) for r in await conn.execute(q)]


async def _pending(conn: AsyncConnection, ctx: AuthContext, reg_id: str) -> Registration:
    row = (await conn.execute(select(practitioner_registration).where(and_(
        practitioner_registration.c.id == reg_id, practitioner_registration.c.tenant == ctx.tenant)))).first()
    if row is None:
        raise NotFound("未找到该注册申请 (registration not found)")
    if row.status != "pending":
        raise Conflict("该注册申请已处理 (this registration was already decided)")
    return _registration(row)


async def approve_registration(conn: AsyncConnection, ctx: AuthContext, reg_id: str) -> Registration:
    """Activate the account, create the Practitioner and PractitionerRole in the tenant, link them."""
    from yiyun.identity.accounts import set_status
    from yiyun.identity.tables import account, membership

    _require_admin(ctx)
    reg = await _pending(conn, ctx, reg_id)
    # In-process: the approval writes the hospital's own staff records (the admin decided).
    repo = FhirRepository(conn, RequestContext(tenant=ctx.tenant, subject=ctx.subject, client_address=ctx.client_address))
    practitioner = {
        "resourceType": "Practitioner", "active": True,
        "identifier": [{"use": "official", "system": CERTIFICATE_SYSTEM, "value": reg.certificate,
                        "type": {"text": "执业证书编码"}}],
        "name": [{"use": "official", "text": reg.name}],
        "qualification": [{"identifier": [{"system": CERTIFICATE_SYSTEM, "value": reg.certificate}],
                           "code": {"text": "医师执业证书"}}],
    }
    made = await repo.create(practitioner)
    ref = f"Practitioner/{made.stored.res_id}"
    role = {
        "resourceType": "PractitionerRole", "active": True, "practitioner": {"reference": ref, "display": reg.name},
        "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "doctor",
                              "display": "Doctor"}], "text": "医师"}],
        "specialty": [{"text": reg.department}],
    }
    await repo.create(role)
    await set_status(conn, reg.account_id, "active")
    await conn.execute(update(account).where(account.c.id == reg.account_id).values(fhir_ref=ref))
    await conn.execute(update(membership).where(membership.c.account_id == reg.account_id,
                                                membership.c.tenant == reg.tenant).values(roles="doctor", fhir_ref=ref))
    now = now_us()
    await conn.execute(update(practitioner_registration).where(practitioner_registration.c.id == reg.id).values(
        status="approved", decided_ts=now, decided_by=ctx.subject, practitioner_ref=ref))
    await _audit(conn, ctx, "practitioner-registration", "ok", {"status": "approved", "practitioner": ref},
                 res_type="PractitionerRegistration", res_id=reg.id)
    return Registration(reg.id, reg.account_id, reg.tenant, reg.name, reg.department, reg.certificate, "approved",
                        None, reg.created_ts, now, ctx.subject, ref, reg.username)


async def reject_registration(conn: AsyncConnection, ctx: AuthContext, reg_id: str, reason: str) -> Registration:
    from yiyun.identity.accounts import set_status

    _require_admin(ctx)
    reason = _clean_name(reason)
    if not 2 <= len(reason) <= 500:
        raise BadRequest("请填写驳回理由 (give the reason for rejecting)")
    reg = await _pending(conn, ctx, reg_id)
    await set_status(conn, reg.account_id, "disabled")
    now = now_us()
    await conn.execute(update(practitioner_registration).where(practitioner_registration.c.id == reg.id).values(
        status="rejected", reason=reason, decided_ts=now, decided_by=ctx.subject))
    await _audit(conn, ctx, "practitioner-registration", "ok", {"status": "rejected", "reason": reason},
                 res_type="PractitionerRegistration", res_id=reg.id)
    return Registration(reg.id, reg.account_id, reg.tenant, reg.name, reg.department, reg.certificate, "rejected",
                        reason, reg.created_ts, now, ctx.subject, None, reg.username)


# ------------------------------------------------------------------ JSON API
class RealNameIn(BaseModel):
    name: str = Field(max_length=100)
    resident_id: str = Field(max_length=40)


class RegistrationIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    name: str = Field(max_length=100)
    tenant: str = Field(max_length=64)
    department: str = Field(max_length=100)
    certificate: str = Field(max_length=40)


class DecisionIn(BaseModel):
    reason: str = Field(default="", max_length=500)


api = APIRouter(prefix="/api/identity", tags=["identity"])


async def submit_real_name(ctx: AuthContext, name: str, number: str) -> RealNameStatus:
    """One attempt, committed whatever its outcome; malformed input then answers 422."""
    async with unit_of_work(get_engine()) as conn:
        account_id = await _account_of(conn, ctx)
        status = await verify_real_name(conn, ctx, account_id, name, number)
    if status.reason in ("invalid-id", "invalid-name"):
        raise Unprocessable(REASON_MESSAGES[status.reason], expression=[
            "resident_id" if status.reason == "invalid-id" else "name"])
    return status


def _status_json(status: RealNameStatus) -> dict:
    return {**status.as_json(), "message": REASON_MESSAGES.get(status.reason, "")}


@api.get("/real-name")
async def get_real_name(ctx: AuthContext = Depends(require_subject)) -> dict:
    async with unit_of_work(get_engine(), write=False) as conn:
        return _status_json(await real_name_status(conn, await _account_of(conn, ctx)))


@api.post("/real-name")
async def post_real_name(body: RealNameIn, ctx: AuthContext = Depends(require_subject)) -> dict:
    return _status_json(await submit_real_name(ctx, body.name, body.resident_id))


@api.post("/practitioner-registrations", status_code=201)
async def post_registration(body: RegistrationIn, request: Request) -> dict:
    """Public: a doctor signs up; an administrator of the hospital decides."""
    async with unit_of_work(get_engine()) as conn:
        reg = await register_practitioner(conn, **body.model_dump(),
                                          client_address=request.client.host if request.client else None)
    return reg.as_json()


@api.get("/practitioner-registrations")
async def get_registrations(status: str | None = None, ctx: AuthContext = Depends(require_subject)) -> dict:
    _require_admin(ctx)
    async with unit_of_work(get_engine(), write=False) as conn:
        regs = await list_registrations(conn, ctx.tenant, status)
    return {"registrations": [r.as_json() for r in regs]}


@api.post("/practitioner-registrations/{reg_id}/approve")
async def post_approve(reg_id: str, ctx: AuthContext = Depends(require_subject)) -> dict:
    async with unit_of_work(get_engine()) as conn:
        return (await approve_registration(conn, ctx, reg_id)).as_json()


@api.post("/practitioner-registrations/{reg_id}/reject")
async def post_reject(reg_id: str, body: DecisionIn, ctx: AuthContext = Depends(require_subject)) -> dict:
    async with unit_of_work(get_engine()) as conn:
        return (await reject_registration(conn, ctx, reg_id, body.reason)).as_json()


# ------------------------------------------------------------------ pages
pages = APIRouter(include_in_schema=False)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _page_user(request: Request, patient: bool):
    from yiyun.identity.sessions import check_csrf, current_user, require_page_user, require_patient_page_user

    ctx = await (require_patient_page_user(request) if patient else require_page_user(request))
    if request.method == "POST":
        await check_csrf(request, await current_user(request))
    return ctx


@pages.get("/me/real-name")
@pages.post("/me/real-name")
async def real_name_page(request: Request):
    ctx = await _page_user(request, patient=True)
    error = None
    form: dict[str, str] = {}
    if request.method == "POST":
        form = await _form(request)
        try:
            await submit_real_name(ctx, form.get("name", ""), form.get("resident_id", ""))
        except YiyunError as exc:
            error = exc.message
    if "patient" not in ctx.roles:
        raise Forbidden("仅患者本人可以进行实名认证 (real-name verification is for patients)")
    async with unit_of_work(get_engine(), write=False) as conn:
        status = await real_name_status(conn, await _account_of(conn, ctx))
    if status.reason in ("name-mismatch", "not-found", "deceased", "revoked", "id-taken") and request.method == "POST" \
            and not error:
        error = REASON_MESSAGES[status.reason]
    return render(request, "identity/real_name.html", status=status, error=error, name=form.get("name", ""),
                  message=REASON_MESSAGES.get(status.reason, ""))


@pages.get("/register/doctor")
@pages.post("/register/doctor")
async def register_page(request: Request):
    from yiyun.identity.accounts import list_tenants
    form: dict[str, str] = {}
    error = done = None
    if request.method == "POST":
        form = await _form(request)
        try:
            async with unit_of_work(get_engine()) as conn:
                done = await register_practitioner(
                    conn, username=form.get("username", ""), password=form.get("password", ""),
                    name=form.get("name", ""), tenant=form.get("tenant", ""), department=form.get("department", ""),
                    certificate=form.get("certificate", ""), client_address=request.client.host if request.client else None)
        except YiyunError as exc:
            error = exc.message
    async with unit_of_work(get_engine(), write=False) as conn:
        hospitals = [t for t in await list_tenants(conn) if t.kind in REGISTRATION_TENANT_KINDS and t.active]
    form.pop("password", None)
    response = render(request, "identity/register_doctor.html", hospitals=hospitals, form=form, error=error, done=done)
    if error:
        response.status_code = 400
    return response


@pages.get("/admin/registrations")
@pages.post("/admin/registrations/{reg_id}/{decision}")
async def approvals_page(request: Request, reg_id: str | None = None, decision: str | None = None):
    ctx = await _page_user(request, patient=False)
    if "admin" not in ctx.roles:
        raise Forbidden("仅医院管理员可以审核医师注册 (hospital administrators only)")
    if request.method == "POST":
        form = await _form(request)
        async with unit_of_work(get_engine()) as conn:
            if decision == "approve":
                await approve_registration(conn, ctx, reg_id)
            elif decision == "reject":
                await reject_registration(conn, ctx, reg_id, form.get("reason", ""))
            else:
                raise NotFound("未知操作 (unknown decision)")
        return RedirectResponse("/admin/registrations", status_code=303)
    status = request.query_params.get("status") or "pending"
    async with unit_of_work(get_engine(), write=False) as conn:
        regs = await list_registrations(conn, ctx.tenant, None if status == "all" else status)
    return render(request, "identity/approvals.html", registrations=regs, status=status)


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    app.include_router(api)
    app.include_router(pages)


__all__ = [
    "DAILY_ATTEMPTS", "IdentityProvider", "RealNameStatus", "Registration", "SandboxIdentityProvider",
    "VerificationResult", "approve_registration", "check_certificate", "identity_provider",
    "is_patient_real_name_verified", "is_real_name_verified", "list_registrations", "real_name_status", "register_practitioner",
    "reject_registration", "verify_real_name",
]
