"""Patients who have passed real-name verification, made the way a patient does it: a
patient account linked to the Patient, verified by the sandbox identity provider.

Online consultations need it (《互联网诊疗监管细则（试行）》 第十五条, see
yiyun.hospital.consultations.admission)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from yiyun.core import resident_id as gb11643
from yiyun.core.db import unit_of_work


def unique_resident_id() -> str:
    """A well-formed resident ID number nobody in the database has verified (the sandbox
    matches any name to an unlisted number; sequence 999 is its "not found", avoided)."""
    n = uuid.uuid4().int
    return gb11643.build("110101", date(1950, 1, 1) + timedelta(days=n % 20000), (n >> 20) % 998)


def unique_mobile() -> str:
    return "139" + str(uuid.uuid4().int)[:8]


async def verify_patients(engine, tenant: str, patients: dict[str, str]) -> dict[str, str]:
    """Patient id → name, each given a verified patient account in `tenant` (made if
    missing); returns Patient id → account id."""
    from yiyun.core.errors import NotFound
    from yiyun.identity import accounts
    from yiyun.identity.auth import AuthContext
    from yiyun.identity.verification import SandboxIdentityProvider, verify_real_name

    out = {}
    async with unit_of_work(engine) as conn:
        try:
            await accounts.get_tenant(conn, tenant)
        except NotFound:
            await accounts.create_tenant(conn, tenant, name="测试医院", kind="hospital")
        for pid, name in patients.items():
            acct = await accounts.create_patient_account(conn, unique_mobile(), name, tenant=tenant,
                                                         fhir_ref=f"Patient/{pid}")
            ctx = AuthContext(tenant=tenant, subject=acct.id, roles=("patient",), patient=pid)
            status = await verify_real_name(conn, ctx, acct.id, name, unique_resident_id(),
                                            provider=SandboxIdentityProvider())
            assert status.verified, status
            out[pid] = acct.id
    return out
