"""Break-glass: emergency access of a doctor or nurse to a patient without a care relationship.

The practitioner declares the emergency with a reason (at least 10 characters); the grant
lasts `LIFETIME_HOURS` and adds the patient to the practitioner's care set in the access
policy (`yiyun.identity.care.care_patients`). The declaration is written to the tenant's
audit chain in the same transaction as the grant (action `break-glass`, purpose ETREAT,
the reason in the detail), so there is never a grant without its entry; the tenant's
privacy officers are alerted by the security events built from those entries and see the
active grants at `GET /api/break-glass`. Reads the grant alone allows are audited with purpose
BTG (`yiyun.identity.policy.EMERGENCY_PURPOSE`). (IHE ATNA / DICOM DCM 110127 "Emergency Override
Started"; HL7 v3 ActReason ETREAT "emergency treatment"; 《医疗机构病历管理规定》第十九条: access to
records outside one's care must be authorised and recorded.)
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest, Forbidden, NotFound
from yiyun.fhir.model import RequestContext, now_us
from yiyun.fhir.repository import FhirRepository
from yiyun.identity.audit import AuditEntry, append
from yiyun.identity.care import no_grants, practitioner_id
from yiyun.identity.sharing_tables import break_glass

LIFETIME_HOURS = 4
MIN_REASON = 10
CLINICAL_ROLES = frozenset({"doctor", "nurse"})


@dataclass(frozen=True)
class Grant:
    grant_id: str
    tenant: str
    practitioner: str
    subject: str
    patient: str
    reason: str
    created_ts: int
    expires_ts: int
    ended_ts: int | None = None
    ended_by: str | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["active"] = self.ended_ts is None and self.expires_ts > now_us()
        return out


def _grant(row) -> Grant:
    return Grant(row.grant_id, row.tenant, row.practitioner, row.subject, row.patient, row.reason,
                 row.created_ts, row.expires_ts, row.ended_ts, row.ended_by)


def check_reason(reason: object) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if len(text) < MIN_REASON:
        raise BadRequest(f"请说明紧急调阅的理由（至少 {MIN_REASON} 个字）(a reason of at least {MIN_REASON} characters is required)")
    return text[:1000]


def clinician(ctx: RequestContext) -> str:
    """The Practitioner id of a doctor or nurse (403 for anyone else)."""
    pid = practitioner_id(getattr(ctx, "fhir_user", None))
    if not (CLINICAL_ROLES & set(ctx.roles)) or pid is None:
        raise Forbidden("仅医生和护士可以紧急调阅 (break-glass is for doctors and nurses)")
    return pid


async def declare(conn: AsyncConnection, ctx: RequestContext, patient: str, reason: object) -> Grant:
    """Open a grant for the caller (a doctor or nurse) to Patient/`patient`; audited in `conn`'s
    transaction (a write unit of work)."""
    practitioner = clinician(ctx)
    text = check_reason(reason)
    patient = patient.removeprefix("Patient/") if isinstance(patient, str) else ""
    system = FhirRepository(conn, RequestContext(tenant=ctx.tenant))
    if not patient or not await system.exists("Patient", patient):
        raise NotFound(f"未找到患者 Patient/{patient} (patient not found)")
    now = now_us()
    g = Grant(str(uuid.uuid4()), ctx.tenant, practitioner, ctx.subject, patient, text, now,
              now + LIFETIME_HOURS * 3600 * 1_000_000)
    await conn.execute(break_glass.insert().values(**{k: v for k, v in asdict(g).items()}))
    no_grants.grants_changed(ctx.tenant)
    await append(conn, [AuditEntry(
        tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="break-glass",
        resource_type="Patient", resource_id=patient, patient=f"Patient/{patient}", purpose="ETREAT",
        client_address=ctx.client_address, outcome="ok",
        detail={"reason": text, "grant": g.grant_id, "practitioner": f"Practitioner/{practitioner}",
                "expires_ts": g.expires_ts},
    )])
    return g


def committed(tenant: str) -> None:
    """Call once a grant's unit of work has committed: a request that looked for grants while
    it was being written may have remembered their absence (`care.NoGrantsCache`)."""
    no_grants.grants_changed(tenant)


async def active_grants(conn: AsyncConnection, tenant: str, *, include_ended: bool = False) -> list[Grant]:
    q = select(break_glass).where(break_glass.c.tenant == tenant)
    if not include_ended:
        q = q.where(break_glass.c.expires_ts > now_us(), break_glass.c.ended_ts.is_(None))
    rows = await conn.execute(q.order_by(break_glass.c.created_ts.desc()).limit(500))
    return [_grant(r) for r in rows]


async def end(conn: AsyncConnection, ctx: RequestContext, grant_id: str) -> Grant:
    """End a grant early: its practitioner or a privacy officer of the tenant."""
    row = (await conn.execute(select(break_glass).where(
        break_glass.c.grant_id == grant_id, break_glass.c.tenant == ctx.tenant))).first()
    mine = row is not None and row.practitioner == practitioner_id(getattr(ctx, "fhir_user", None))
    if row is None or not (mine or "privacy-officer" in ctx.roles):
        raise NotFound("未找到紧急调阅授权 (break-glass grant not found)")
    if row.ended_ts is None:
        now = now_us()
        await conn.execute(update(break_glass).where(break_glass.c.grant_id == grant_id)
                           .values(ended_ts=now, ended_by=ctx.subject))
        await append(conn, [AuditEntry(
            tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="break-glass-end",
            resource_type="Patient", resource_id=row.patient, patient=f"Patient/{row.patient}", purpose="ETREAT",
            client_address=ctx.client_address, outcome="ok", detail={"grant": grant_id},
        )])
        row = (await conn.execute(select(break_glass).where(break_glass.c.grant_id == grant_id))).first()
    return _grant(row)
