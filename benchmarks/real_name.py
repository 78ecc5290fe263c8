"""Benchmark patients verified by real name, as online consultations need
(yiyun.hospital.consultations.admission): a patient account per Patient, checked by the
sandbox identity provider with a synthetic, well-formed resident ID number."""

from __future__ import annotations

from datetime import date, timedelta


NAME = "测试患者"  # a name as on an ID card (Han characters only); the sandbox matches it to any unlisted number


async def verify_patients(engine, tenant: str, patient_ids) -> None:
    """Each Patient id gets a verified patient account in `tenant` (made when missing)."""
    from yiyun.core import resident_id
    from yiyun.core.db import unit_of_work
    from yiyun.core.errors import NotFound
    from yiyun.identity import accounts
    from yiyun.identity.auth import AuthContext
    from yiyun.identity.verification import SandboxIdentityProvider, verify_real_name

    provider = SandboxIdentityProvider()
    async with unit_of_work(engine) as conn:
        try:
            await accounts.get_tenant(conn, tenant)
        except NotFound:
            await accounts.create_tenant(conn, tenant, name=tenant, kind="hospital")
        for i, pid in enumerate(patient_ids):
            phone = f"1370{i:07d}"
            number = resident_id.build("110101", date(1960, 1, 1) + timedelta(days=i // 900), i % 900 + 1)
            acct = await accounts.create_patient_account(conn, phone, NAME, tenant=tenant, fhir_ref=f"Patient/{pid}")
            ctx = AuthContext(tenant=tenant, subject=acct.id, roles=("patient",), patient=pid)
            status = await verify_real_name(conn, ctx, acct.id, NAME, number, provider=provider)
            assert status.verified, (pid, status)
