"""Whose records a caller reaches: care relationships, guardianship, break-glass.

Each function returns a SQL `Select` of Patient ids (one column, `patient`) in one tenant,
built on the reference index (`fhir_idx_reference`, the rows `Encounter?participant=…`
searches), so it costs index lookups only. The access policy runs them once per request
(`load_patient_sets`, one round trip) and keeps the result on the request's context; when
a search runs before anything was loaded, the same selects are embedded as subqueries.

Care relationship of Practitioner/X with Patient/P (docs/sharing.md):

| resource | X named in | P named in |
| --- | --- | --- |
| Encounter | `participant` (participant.individual) | `subject` / `patient` |
| Appointment (not cancelled, noshow, entered-in-error) | `actor` / `practitioner` | `actor` / `patient` |
| CareTeam | `participant` | `subject` / `patient` |
| ServiceRequest (a referral or order) | `requester` / `performer` | `subject` / `patient` |
| EpisodeOfCare | `care-manager` | `patient` |

Entered-in-error resources never count. An active break-glass grant
(`sharing_break_glass`) adds its patient for its practitioner until it expires.

Guardianship (patients): Patient/G is guardian of Patient/C when G's `Patient.link`
references a RelatedPerson R (`link.other`, "the same person"; https://hl7.org/fhir/R4/patient-definitions.html#Patient.link)
whose `patient` is C, whose `relationship` is a parent or guardian code of
v3-RoleCode (GUARD, PRN, MTH, FTH …; 民法典 第二十七条: parents are the guardians of their
minor children, 第二十八条: guardians of adults without full capacity) and which is not
`active = false`. Only staff write that link (the policy refuses it from a patient token).
"""

from __future__ import annotations

from sqlalchemy import func, literal, or_, select, union, union_all
from sqlalchemy.orm import aliased

from yiyun.fhir.model import now_us
from yiyun.fhir.search.tables import idx_reference, idx_token
from yiyun.fhir.tables import resource as resource_t
from yiyun.identity.sharing_tables import break_glass

# (resource type, parameters naming the practitioner, parameters naming the patient)
RELATIONSHIPS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Encounter", ("participant", "practitioner"), ("subject", "patient")),
    ("Appointment", ("actor", "practitioner"), ("actor", "patient")),
    ("CareTeam", ("participant",), ("subject", "patient")),
    ("ServiceRequest", ("requester", "performer"), ("subject", "patient")),
    ("EpisodeOfCare", ("care-manager",), ("patient",)),
)
# Statuses that end a relationship before it began (appointmentstatus, *-status value sets).
NOT_A_RELATIONSHIP = ("cancelled", "noshow", "entered-in-error", "revoked")

# PatientRelationshipType codes (v3-RoleCode) that make a RelatedPerson a guardian.
V3_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
GUARDIAN_CODES = (
    "GUARD", "PRN", "NPRN", "MTH", "FTH", "NMTH", "NFTH", "ADOPTP", "ADOPTF", "ADOPTM",
    "STPPRN", "STPMTH", "STPFTH", "PRNFOST", "MTHFOST", "FTHFOST",
)
# Prescriptions a pharmacist works on: waiting for review, dispensing or in use.
PHARMACY_STATUSES = ("active", "on-hold", "draft")


def practitioner_id(fhir_user: str | None) -> str | None:
    """`Practitioner/<id>` (relative or absolute) → `<id>`; anything else → None."""
    if not fhir_user:
        return None
    tail = fhir_user.rstrip("/").split("/")
    if len(tail) >= 2 and tail[-2] == "Practitioner" and tail[-1]:
        return tail[-1]
    return None


def _status_excluded(tenant: str, res_type: str):
    tok = aliased(idx_token, name="rel_status")
    return select(tok.c.rid).where(
        tok.c.tenant == tenant, tok.c.res_type == res_type, tok.c.param == "status",
        tok.c.code.in_(NOT_A_RELATIONSHIP),
    )


def care_patients(tenant: str, practitioner: str, *, now: int | None = None):
    """Patients of `tenant` that Practitioner/`practitioner` has a care relationship with,
    or an active break-glass grant for."""
    parts = []
    for res_type, who, whom in RELATIONSHIPS:
        rel = aliased(idx_reference, name=f"rel_{res_type.lower()}")
        pat = aliased(idx_reference, name=f"pat_{res_type.lower()}")
        parts.append(
            select(pat.c.target_id.label("patient"))
            .select_from(rel.join(pat, pat.c.rid == rel.c.rid))
            .where(
                rel.c.tenant == tenant, rel.c.res_type == res_type, rel.c.param.in_(who),
                # url IS NULL is tested through coalesce so that SQLite looks the practitioner up by
                # target_id (the lookup index) rather than scanning every local reference of the type
                rel.c.target_id == practitioner, rel.c.target_type == "Practitioner", func.coalesce(rel.c.url, "") == "",
                pat.c.param.in_(whom), pat.c.target_type == "Patient", pat.c.url.is_(None),
                rel.c.rid.not_in(_status_excluded(tenant, res_type)),
            )
        )
    parts.append(
        select(break_glass.c.patient.label("patient")).where(
            break_glass.c.tenant == tenant, break_glass.c.practitioner == practitioner,
            break_glass.c.expires_ts > (now if now is not None else now_us()), break_glass.c.ended_ts.is_(None),
        )
    )
    return union(*parts)


def pharmacy_patients(tenant: str):
    """Patients of `tenant` with a prescription the pharmacy works on."""
    ref = aliased(idx_reference, name="mr_subject")
    tok = aliased(idx_token, name="mr_status")
    current = select(tok.c.rid).where(
        tok.c.tenant == tenant, tok.c.res_type == "MedicationRequest", tok.c.param == "status",
        tok.c.code.in_(PHARMACY_STATUSES),
    )
    return select(ref.c.target_id.label("patient")).where(
        ref.c.tenant == tenant, ref.c.res_type == "MedicationRequest", ref.c.param == "subject",
        ref.c.target_type == "Patient", ref.c.url.is_(None), ref.c.rid.in_(current),
    ).distinct()


def wards(tenant: str, guardian: str):
    """Patients of `tenant` whose guardian is Patient/`guardian` (see the module docstring)."""
    me = select(resource_t.c.rid).where(
        resource_t.c.tenant == tenant, resource_t.c.res_type == "Patient", resource_t.c.res_id == guardian,
        resource_t.c.deleted.is_(False),
    )
    link = aliased(idx_reference, name="g_link")
    linked = select(link.c.target_id).where(
        link.c.rid.in_(me), link.c.param == "link", link.c.target_type == "RelatedPerson", link.c.url.is_(None),
    )
    rp = aliased(resource_t, name="g_rp")
    persons = select(rp.c.rid).where(
        rp.c.tenant == tenant, rp.c.res_type == "RelatedPerson", rp.c.res_id.in_(linked), rp.c.deleted.is_(False),
    )
    rel = aliased(idx_token, name="g_rel")
    guardians = select(rel.c.rid).where(
        rel.c.tenant == tenant, rel.c.res_type == "RelatedPerson", rel.c.param == "relationship",
        rel.c.code.in_(GUARDIAN_CODES), or_(rel.c.system.is_(None), rel.c.system == V3_ROLE_CODE),
        rel.c.rid.in_(persons),
    )
    inactive = aliased(idx_token, name="g_inactive")
    ended = select(inactive.c.rid).where(
        inactive.c.tenant == tenant, inactive.c.res_type == "RelatedPerson", inactive.c.param == "active",
        inactive.c.code == "false",
    )
    ward = aliased(idx_reference, name="g_ward")
    return select(ward.c.target_id.label("patient")).where(
        ward.c.rid.in_(guardians), ward.c.rid.not_in(ended), ward.c.param == "patient",
        ward.c.target_type == "Patient", ward.c.url.is_(None),
    )


def own_and_wards(tenant: str, patient: str):
    return union(select(literal(patient).label("patient")), wards(tenant, patient))


async def load_patient_sets(conn, selects: dict[str, object]) -> dict[str, frozenset[str]]:
    """Run several patient selects in one round trip: {name: select} → {name: ids}."""
    if not selects:
        return {}
    labelled = [
        select(literal(name).label("kind"), s.subquery().c.patient) for name, s in selects.items()
    ]
    stmt = labelled[0] if len(labelled) == 1 else union_all(*labelled)
    out: dict[str, set[str]] = {name: set() for name in selects}
    for kind, patient in (await conn.execute(stmt)).all():
        if patient:
            out[kind].add(patient)
    return {k: frozenset(v) for k, v in out.items()}


__all__ = [
    "GUARDIAN_CODES", "RELATIONSHIPS", "care_patients", "load_patient_sets", "own_and_wards", "pharmacy_patients",
    "practitioner_id", "wards",
]
