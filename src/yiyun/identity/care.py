"""Whose records a caller reaches: care relationships, guardianship, break-glass.

Each function returns a `PatientSet`: SQL selecting Patient ids (one column, `patient`) in
one tenant, built on the reference index (`fhir_idx_reference`, the rows
`Encounter?participant=…` searches), so it costs index lookups only. The access policy runs them once per request
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

Guardianship of a minor ends when the ward comes of age: 《民法典》第十七条 "十八周岁以上的自然人
为成年人", 第十八条 an adult has full civil capacity and acts for themselves. A ward whose
`Patient.birthDate` shows them to be 18 or older today (Beijing date) leaves the guardian's
set at once, with no write needed. Exceptions, decided here:

- an adult declared by a court to lack full capacity (第二十四条) keeps a guardian (第二十八条);
  staff record that by adding the code `adult-guardian` of `GUARDIANSHIP_SYSTEM` to the
  RelatedPerson's `relationship` (next to v3-RoleCode GUARD or the parent's code), after
  seeing the court's judgment. The generic GUARD code alone does not show that: minors have
  non-parent guardians too (第二十七条).
- a ward without a birthDate, or one whose partial birthDate (`2008`, `2008-05`) could
  still be a minor's, keeps the link: staff registered the guardianship after checking
  documents, FHIR makes birthDate optional (newborns are often registered before it is
  known), and a missing date is no evidence of adulthood. The link ends as soon as staff
  record a birthDate that shows 18 years, or set `RelatedPerson.active` to false.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from sqlalchemy import String, text

from yiyun.fhir.model import now_us

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
# Age of majority: 《民法典》第十七条 "十八周岁以上的自然人为成年人".
ADULT_AGE = 18
# This platform's code for the guardian of an adult without full capacity (《民法典》第二十四条、
# 第二十八条): the only relationship that outlives the ward's 18th birthday.
GUARDIANSHIP_SYSTEM = "https://yiyun.example.cn/fhir/CodeSystem/guardianship"
ADULT_GUARDIAN_CODE = "adult-guardian"
# Birthdays are reckoned on the calendar where the patients live.
LOCAL_TIME = ZoneInfo("Asia/Shanghai")
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


# The queries are plain SQL over the index tables, written once: built as SQLAlchemy
# constructs they cost more to assemble and compile on every request than to run. Only
# constants of this module are spelled into the text; every value is a bound parameter.
def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


@dataclass(frozen=True)
class PatientSet:
    """SQL selecting one column `patient`, with its parameters."""

    sql: str
    params: dict

    def select(self):
        return text(self.sql).bindparams(**self.params).columns(patient=String)


@lru_cache(maxsize=1)
def _care_sql() -> str:
    parts = []
    for res_type, who, whom in RELATIONSHIPS:
        parts.append(
            "SELECT pat.target_id AS patient FROM fhir_idx_reference rel "
            "JOIN fhir_idx_reference pat ON pat.rid = rel.rid "
            f"WHERE rel.tenant = :tenant AND rel.res_type = '{res_type}' AND rel.param IN {_in(who)} "
            "AND rel.target_id = :practitioner AND rel.target_type = 'Practitioner' "
            # url through coalesce: SQLite then looks the practitioner up by target_id (the
            # lookup index) rather than scanning every local reference of the type
            "AND COALESCE(rel.url, '') = '' "
            f"AND pat.param IN {_in(whom)} AND pat.target_type = 'Patient' AND pat.url IS NULL "
            "AND rel.rid NOT IN (SELECT st.rid FROM fhir_idx_token st WHERE st.tenant = :tenant "
            f"AND st.res_type = '{res_type}' AND st.param = 'status' AND st.code IN {_in(NOT_A_RELATIONSHIP)})"
        )
    return " UNION ".join(parts)


_GRANTS_SQL = (
    "SELECT bg.patient AS patient FROM sharing_break_glass bg WHERE bg.tenant = :tenant "
    "AND bg.practitioner = :practitioner AND bg.expires_ts > :now AND bg.ended_ts IS NULL"
)


def related_patients(tenant: str, practitioner: str) -> PatientSet:
    """Patients of `tenant` that Practitioner/`practitioner` has a care relationship with."""
    return PatientSet(_care_sql(), {"tenant": tenant, "practitioner": practitioner})


def break_glass_patients(tenant: str, practitioner: str, *, now: int | None = None) -> PatientSet:
    """Patients of `tenant` with an active break-glass grant for Practitioner/`practitioner`."""
    return PatientSet(_GRANTS_SQL, {"tenant": tenant, "practitioner": practitioner,
                                    "now": now if now is not None else now_us()})


class NoGrantsCache:
    """Practitioners known to hold no active break-glass grant, per tenant, for `ttl` seconds.

    Only the absence of grants is kept, never a grant: a grant ended early stops counting at
    the next request everywhere. A new grant drops the tenant's entries in this process at
    once (`grants_changed`); another process may keep refusing for up to `ttl` seconds,
    which errs on the side of refusing. It spares a clinician's every request one query in
    the usual case of no emergency access."""

    def __init__(self, ttl: float = 5.0, max_entries: int = 50_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._until: dict[str, dict[str, float]] = {}
        self._size = 0

    def known_none(self, tenant: str, practitioner: str) -> bool:
        import time

        until = self._until.get(tenant, {}).get(practitioner)
        return until is not None and until > time.monotonic()

    def remember_none(self, tenant: str, practitioner: str) -> None:
        import time

        if self._size >= self.max_entries:
            self._until.clear()
            self._size = 0
        entries = self._until.setdefault(tenant, {})
        self._size += practitioner not in entries
        entries[practitioner] = time.monotonic() + self.ttl

    def grants_changed(self, tenant: str) -> None:
        self._size -= len(self._until.pop(tenant, {}))


no_grants = NoGrantsCache()


def care_patients(tenant: str, practitioner: str, *, now: int | None = None) -> PatientSet:
    """Both: the practitioner's care set."""
    grants = break_glass_patients(tenant, practitioner, now=now)
    return PatientSet(_care_sql() + " UNION " + grants.sql, grants.params)


_PHARMACY_SQL = (
    "SELECT DISTINCT ref.target_id AS patient FROM fhir_idx_reference ref WHERE ref.tenant = :tenant "
    "AND ref.res_type = 'MedicationRequest' AND ref.param = 'subject' AND ref.target_type = 'Patient' "
    "AND ref.url IS NULL AND ref.rid IN (SELECT tok.rid FROM fhir_idx_token tok WHERE tok.tenant = :tenant "
    f"AND tok.res_type = 'MedicationRequest' AND tok.param = 'status' AND tok.code IN {_in(PHARMACY_STATUSES)})"
)


def pharmacy_patients(tenant: str) -> PatientSet:
    """Patients of `tenant` with a prescription the pharmacy works on."""
    return PatientSet(_PHARMACY_SQL, {"tenant": tenant})


_WARDS_SQL = (
    "SELECT ward.target_id AS patient FROM fhir_idx_reference ward "
    "WHERE ward.param = 'patient' AND ward.target_type = 'Patient' AND ward.url IS NULL "
    "AND ward.rid IN (SELECT rel.rid FROM fhir_idx_token rel WHERE rel.tenant = :tenant "
    "AND rel.res_type = 'RelatedPerson' AND rel.param = 'relationship' "
    f"AND rel.code IN {_in(GUARDIAN_CODES)} AND (rel.system IS NULL OR rel.system = '{V3_ROLE_CODE}') "
    "AND rel.rid IN (SELECT rp.rid FROM fhir_resource rp WHERE rp.tenant = :tenant "
    "AND rp.res_type = 'RelatedPerson' AND rp.deleted = false AND rp.res_id IN ("
    "SELECT link.target_id FROM fhir_idx_reference link WHERE link.param = 'link' "
    "AND link.target_type = 'RelatedPerson' AND link.url IS NULL AND link.rid IN ("
    "SELECT me.rid FROM fhir_resource me WHERE me.tenant = :tenant AND me.res_type = 'Patient' "
    "AND me.res_id = :patient AND me.deleted = false)))) "
    "AND ward.rid NOT IN (SELECT ia.rid FROM fhir_idx_token ia WHERE ia.tenant = :tenant "
    "AND ia.res_type = 'RelatedPerson' AND ia.param = 'active' AND ia.code = 'false') "
    # the ward has come of age (its whole birthDate interval lies 18 years back) ...
    "AND (NOT EXISTS (SELECT 1 FROM fhir_resource wp JOIN fhir_idx_date bd ON bd.rid = wp.rid "
    "AND bd.param = 'birthdate' WHERE wp.tenant = :tenant AND wp.res_type = 'Patient' "
    "AND wp.res_id = ward.target_id AND bd.high <= :adults_born_before) "
    # ... unless the guardianship is of an adult without full capacity
    "OR EXISTS (SELECT 1 FROM fhir_idx_token ag WHERE ag.rid = ward.rid AND ag.param = 'relationship' "
    f"AND ag.system = '{GUARDIANSHIP_SYSTEM}' AND ag.code = '{ADULT_GUARDIAN_CODE}'))"
)


def today_local() -> date:
    return datetime.now(LOCAL_TIME).date()


def adults_born_before(today: date | None = None) -> float:
    """Epoch seconds (UTC, as the date index keeps birthDate): someone whose birthDate
    interval ends at or before this instant is 18 or older on `today`. Born on 29 February,
    one comes of age on 1 March in a common year."""
    today = today or today_local()
    year = today.year - ADULT_AGE
    day = min(today.day, calendar.monthrange(year, today.month)[1])
    end = date(year, today.month, day) + timedelta(days=1)  # born before this day: 18 today
    return float(calendar.timegm((end.year, end.month, end.day, 0, 0, 0)))


def _ward_params(tenant: str, guardian: str, today: date | None) -> dict:
    return {"tenant": tenant, "patient": guardian, "adults_born_before": adults_born_before(today)}


def wards(tenant: str, guardian: str, *, today: date | None = None) -> PatientSet:
    """Patients of `tenant` whose guardian is Patient/`guardian` (see the module docstring)."""
    return PatientSet(_WARDS_SQL, _ward_params(tenant, guardian, today))


def own_and_wards(tenant: str, patient: str, *, today: date | None = None) -> PatientSet:
    return PatientSet("SELECT CAST(:patient AS VARCHAR(64)) AS patient UNION " + _WARDS_SQL,
                      _ward_params(tenant, patient, today))


async def load_patient_sets(conn, sets: dict[str, PatientSet]) -> dict[str, frozenset[str]]:
    """Run several patient sets in one round trip: {name: set} → {name: ids}. The sets'
    parameters share names (tenant, patient, practitioner, now) and must agree."""
    if not sets:
        return {}
    params: dict = {}
    parts = []
    for i, (name, ps) in enumerate(sets.items()):
        params.update(ps.params)
        parts.append(f"SELECT '{name}' AS kind, s{i}.patient AS patient FROM ({ps.sql}) s{i}")
    out: dict[str, set[str]] = {name: set() for name in sets}
    for kind, patient in (await conn.execute(text(" UNION ALL ".join(parts)), params)).all():
        if patient:
            out[kind].add(patient)
    return {k: frozenset(v) for k, v in out.items()}


__all__ = [
    "ADULT_GUARDIAN_CODE", "GUARDIANSHIP_SYSTEM", "GUARDIAN_CODES", "adults_born_before", "RELATIONSHIPS", "NoGrantsCache", "PatientSet", "break_glass_patients", "no_grants", "care_patients", "load_patient_sets",
    "own_and_wards", "pharmacy_patients", "practitioner_id", "related_patients", "wards",
]
