"""Demo accounts: every demo practitioner, the tenants' admins and privacy officers, an
auditor, a CDC officer and 50 patients can sign in with the documented demo password."""

from __future__ import annotations

import time

import pytest

from yiyun.core.db import unit_of_work
from yiyun.identity import accounts, sessions
from yiyun.identity.passwords import verify_password
from yiyun.identity.tables import account

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def fresh_engine(db_url, tmp_path):
    """A database of its own: demo usernames and tenant slugs are fixed, and another test of
    the session may already have loaded the demo into the shared one."""
    from tests.conftest import _drop_pg_database, _make_pg_database
    from yiyun.core import migrations
    from yiyun.core.db import create_engine_for

    url = f"sqlite:///{tmp_path / 'demo-accounts.db'}" if db_url.startswith("sqlite") else _make_pg_database()
    migrations.upgrade("head", database_url=url)
    engine = create_engine_for(url)
    yield engine
    await engine.dispose()
    if not url.startswith("sqlite"):
        _drop_pg_database(url)


@pytest.fixture(scope="module")
def demo_data():
    from yiyun.demo import generate_demo

    return generate_demo(7, patients=400)


async def test_demo_accounts(fresh_engine, demo_data):
    engine = fresh_engine
    from sqlalchemy import select

    from yiyun.core.errors import Conflict
    from yiyun.demo.accounts import DEMO_PASSWORD, create_demo_accounts, plan_accounts

    async with unit_of_work(engine) as conn:
        for t in demo_data.tenants:
            try:
                await accounts.create_tenant(conn, t.slug, name=t.name, kind=t.kind)
            except Conflict:
                pass
    staff, patients = plan_accounts(demo_data)
    started = time.perf_counter()
    counts = await create_demo_accounts(engine, demo_data)
    elapsed = time.perf_counter() - started
    assert counts == {"staff": len(staff), "patients": len(patients)}
    assert len(patients) >= 45 and elapsed < 20, (counts, elapsed)
    practitioners = [r for _, r in demo_data.resources if r["resourceType"] == "Practitioner"]
    assert sum(1 for s in staff if s.get("fhir_ref")) == len(practitioners)
    assert {"auditor", "cdc-officer", "cs-central-hospital-admin", "cs-central-hospital-privacy"} <= {
        s["username"] for s in staff}
    async with unit_of_work(engine, write=False) as conn:
        doctor = await accounts.find_by_username(conn, staff[0]["username"])
        assert doctor.fhir_ref == staff[0]["fhir_ref"]
        assert (await accounts.memberships(conn, doctor.id))[staff[0]["tenant"]] == tuple(staff[0]["roles"])
        stored = (await conn.execute(select(account.c.password_hash).where(account.c.id == doctor.id))).scalar()
        assert verify_password(stored, DEMO_PASSWORD)
        auditor = await accounts.find_by_username(conn, "auditor")
        assert len(await accounts.memberships(conn, auditor.id)) >= 2
        p = patients[0]
        acct = await accounts.find_by_phone(conn, p["phone"])
        assert await accounts.patient_link(conn, acct.id, p["tenant"]) == p["fhir_ref"]
        from yiyun.identity.verification import is_real_name_verified

        assert await is_real_name_verified(conn, acct.id)  # demo patients can consult online
    async with unit_of_work(engine) as conn:
        cookie, _ = await sessions.open_session(conn, acct.id, p["tenant"])
        user = await sessions.signed_in(conn, cookie, base_url="http://testserver/fhir/R4")
    assert user.context.patient == p["fhir_ref"].split("/")[1] and user.context.scopes == ("patient/*.cruds",)
    # loading twice leaves the accounts as they are
    assert await create_demo_accounts(engine, demo_data) == {"staff": 0, "patients": 0}
