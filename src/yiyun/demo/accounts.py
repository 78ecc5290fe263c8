"""Demo sign-in accounts for the demo region's staff and patients (see docs/demo.md).

- one staff account per demo Practitioner: username = the staff number (工号) in lower case,
  e.g. `e0001`; role from its PractitionerRole (doctor, nurse, pharmacist); linked to
  `Practitioner/<id>`;
- per hospital and clinic: `<tenant>-admin` (admin) and `<tenant>-privacy` (privacy-officer);
- `auditor` (auditor in every hospital and clinic: the tenant switcher picks one);
- `cdc-officer` (cdc-officer of the CDC tenant);
- patient accounts for 50 demo patients (the first ones of each hospital and clinic), by
  their mobile number, linked to their Patient, and verified by real name with the
  Patient's (synthetic) resident ID number through the sandbox identity provider, so
  they can start online consultations (which need the real name).

All staff share `DEMO_PASSWORD`; it is hashed once (argon2id is deliberately slow) and the
hash reused. Staff enrol their TOTP second factor at first sign-in. Patients sign in with
their phone and an SMS code (development outbox) or with the same demo password.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.core.errors import Conflict

DEMO_PASSWORD = "Yiyun-Demo-2026"
DEMO_PATIENTS = 50
STAFF_ID_SYSTEM_PREFIX = "https://yiyun.example.cn/fhir/sid/staff/"
ROLE_CODES = {"doctor": "doctor", "nurse": "nurse", "pharmacist": "pharmacist"}


def _staff_number(practitioner: dict) -> str | None:
    for ident in practitioner.get("identifier", []):
        if str(ident.get("system", "")).startswith(STAFF_ID_SYSTEM_PREFIX) and ident.get("value"):
            return str(ident["value"]).lower()
    return None


def _name(resource: dict) -> str:
    for n in resource.get("name", []):
        if n.get("text"):
            return n["text"]
    return resource.get("id", "")


def _mobile(resource: dict) -> str | None:
    for t in resource.get("telecom", []):
        if t.get("system") == "phone" and t.get("value"):
            return t["value"]
    return None


def _resident_id(resource: dict) -> str | None:
    from yiyun.demo.fhirutil import RESIDENT_ID_SYSTEM

    for ident in resource.get("identifier", []):
        if ident.get("system") == RESIDENT_ID_SYSTEM and ident.get("value"):
            return str(ident["value"])
    return None


def plan_accounts(data) -> tuple[list[dict], list[dict]]:
    """(staff, patients) to create from the demo data: pure, for the loader and the docs."""
    roles_of: dict[str, str] = {}
    for _, r in data.resources:
        if r["resourceType"] == "PractitionerRole":
            ref = r.get("practitioner", {}).get("reference", "")
            codes = [c.get("code") for cc in r.get("code", []) for c in cc.get("coding", [])]
            role = next((ROLE_CODES[c] for c in codes if c in ROLE_CODES), None)
            if ref and role:
                roles_of.setdefault(ref, role)
    staff = []
    for tenant, r in data.resources:
        if r["resourceType"] != "Practitioner":
            continue
        ref = f"Practitioner/{r['id']}"
        number = _staff_number(r)
        if number and ref in roles_of:
            staff.append({"username": number, "name": _name(r), "tenant": tenant, "roles": [roles_of[ref]],
                          "fhir_ref": ref})
    care = [t for t in data.tenants if t.kind in ("hospital", "clinic")]
    for t in care:
        staff.append({"username": f"{t.slug}-admin", "name": f"{t.name}管理员", "tenant": t.slug, "roles": ["admin"]})
        staff.append({"username": f"{t.slug}-privacy", "name": f"{t.name}隐私保护专员", "tenant": t.slug,
                      "roles": ["privacy-officer"]})
    if care:
        staff.append({"username": "auditor", "name": "区域审计员", "tenant": care[0].slug, "roles": ["auditor"],
                      "also": [t.slug for t in care[1:]]})
    for t in data.tenants:
        if t.kind == "cdc":
            staff.append({"username": "cdc-officer", "name": f"{t.name}疾控专员", "tenant": t.slug,
                          "roles": ["cdc-officer"]})
            break
    patients: list[dict] = []
    per_tenant = -(-DEMO_PATIENTS // max(1, len(care)))  # spread over the hospitals and clinics
    taken: dict[str, int] = {}
    seen_phones: set[str] = set()
    for tenant, r in data.resources:
        if r["resourceType"] != "Patient" or tenant not in {t.slug for t in care}:
            continue
        phone = _mobile(r)
        if not phone or phone in seen_phones or taken.get(tenant, 0) >= per_tenant:
            continue
        seen_phones.add(phone)
        taken[tenant] = taken.get(tenant, 0) + 1
        patients.append({"phone": phone, "name": _name(r), "tenant": tenant, "fhir_ref": f"Patient/{r['id']}",
                         "resident_id": _resident_id(r)})
        if len(patients) >= DEMO_PATIENTS:
            break
    return staff, patients


async def create_demo_accounts(engine: AsyncEngine, data) -> dict:
    """Accounts for the demo's practitioners and some patients; returns counts by kind.
    Accounts that already exist are left as they are."""
    from yiyun.identity import accounts
    from yiyun.identity.passwords import hash_password
    from yiyun.identity.tables import membership

    staff, patients = plan_accounts(data)
    shared_hash = hash_password(DEMO_PASSWORD)
    counts = {"staff": 0, "patients": 0}
    async with unit_of_work(engine) as conn:
        for s in staff:
            try:
                acct = await accounts.create_staff(
                    conn, username=s["username"], display_name=s["name"], password="", tenant_slug=s["tenant"],
                    roles=s["roles"], fhir_ref=s.get("fhir_ref"), password_hash=shared_hash)
            except Conflict:
                continue
            for other in s.get("also", []):
                await conn.execute(membership.insert().values(account_id=acct.id, tenant=other,
                                                              roles=",".join(s["roles"])))
            counts["staff"] += 1
        for p in patients:
            try:
                acct = await accounts.create_patient_account(conn, p["phone"], p["name"], tenant=p["tenant"],
                                                             fhir_ref=p["fhir_ref"], password_hash=shared_hash)
            except Conflict:
                continue
            await _verify_real_name(conn, acct.id, p)
            counts["patients"] += 1
    return counts


async def _verify_real_name(conn, account_id: str, p: dict) -> None:
    """The demo patient's real name, checked by the sandbox provider whatever provider the
    deployment names: the demo's identities are synthetic and no real service knows them."""
    from yiyun.identity.auth import AuthContext
    from yiyun.identity.verification import SandboxIdentityProvider, verify_real_name

    if not p.get("resident_id"):
        return
    ctx = AuthContext(tenant=p["tenant"], subject="system:demo", roles=("patient",),
                      patient=p["fhir_ref"].split("/", 1)[1])
    await verify_real_name(conn, ctx, account_id, p["name"], p["resident_id"], provider=SandboxIdentityProvider())
