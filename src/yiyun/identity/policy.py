"""The access policy every FHIR repository call passes: role + scope + compartment + relationship.

Installed by the composition root (`yiyun.fhir.access.install_policy`). One decision
function, `decide`, answers for every interaction; `search_filter` and `can_see` apply
the same answer to rows (searches, `_include`/`_revinclude`, chains, `_has`, history,
bulk export), so a resource hidden from a read is hidden everywhere. docs/sharing.md has
the whole matrix; in short:

Scopes are SMART App Launch v2
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):

- the interaction needs its permission letter: read/vread/history → `r`, search → `s`,
  create → `c`, update/patch → `u`, delete → `d`; `$export` needs `r` and `s` on every type
  it writes (https://hl7.org/fhir/uv/bulkdata/STU2/authorization.html); `$reindex` needs
  `system/*.u` or the admin role;
- `system/` scopes (backend services) reach the token's whole tenant;
- `patient/` scopes reach the Patient compartment of the token's `patient`
  (https://hl7.org/fhir/R4/compartmentdefinition-patient.html) and of the patients it is
  guardian of (`yiyun.identity.care.wards`);
- `user/` scopes reach what the token's roles allow, never more than the scope:

| role | patient-compartment types | other types (Organization, Practitioner, Location, Schedule, Medication …) |
| --- | --- | --- |
| doctor, nurse | patients with a care relationship or break-glass grant (`care.care_patients`), every permission; creating a new Patient (registration) | read, search |
| pharmacist | Patient, MedicationRequest (+u), MedicationDispense (+c u), MedicationAdministration, MedicationStatement, AllergyIntolerance, Condition: patients with a current prescription | read, search |
| admin | Patient and Appointment tenant-wide (registration, scheduling), every permission; nothing clinical | every permission |
| regional-admin | nothing | every permission |
| privacy-officer | Consent tenant-wide, read and search | read, search |
| cdc-officer | nothing (reportable cases: `/api/cdc/cases`) | read, search |
| auditor, patient, no role | nothing (auditors read the audit log) | nothing |

A token of several roles gets the union. The relationship is per Practitioner (the
token's `fhirUser`); relationships, guardianship and grants are resolved once per
request (one query, `care.load_patient_sets`) and cached on the request's context, never
longer, so a withdrawn consent or ended break-glass grant counts from the next request.
A patient's guardianship set and a practitioner's care relationships are kept longer
(`GuardianshipCache`: 30 s per process, dropped on every write of a type that can change
them), so that reads cost no extra query beyond the break-glass lookup.

A read that only a break-glass grant allowed is audited with purpose BTG (HL7 v3 ActReason
"break the glass", `EMERGENCY_PURPOSE`), from the same loaded sets. A guardian's wards are
those under 18 (`care.wards`: 《民法典》第十七条), unless the guardianship is of an adult
without full capacity.

A resource outside what the caller may see answers 404, exactly as a missing one
(https://hl7.org/fhir/R4/security.html#AccessDenied: "not found" rather than "forbidden"
when disclosing existence would itself leak information), and is audited as `denied`. A
type the token's scopes or roles give nothing on at all answers 403, as does a write that
would put a resource outside the caller's reach.

Another tenant's records are never reachable through `/fhir/R4` (the store is per
tenant); the regional sharing API (`yiyun.identity.sharing`) reads them under the patient's
Consent, and disease control reads reportable cases through `/api/cdc/cases`.

Granular scopes (`patient/Observation.rs?category=…|vital-signs`,
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#finer-grained-resource-constraints-using-search-parameters)
grant their letters only on resources their query matches, within the reach their context
gives (`Term`: a reach and a `yiyun.fhir.search.match.ResourceQuery`). A resource is
visible when the unqualified scopes reach it or any term does (a union); a term that an
unqualified scope covers is dropped. `can_see` matches the resource's own index rows,
`search_filter` adds the search engine's condition, so both answer alike. A write through a
term must match its query, as must the version it replaces or deletes (403). A query the
search module cannot apply (unknown parameter, unsupported type or modifier, bad value)
makes its scope grant nothing (fail closed, logged). Bulk export uses unqualified scopes
only. A token without granular scopes takes the path it took before: `Grants` keeps them
apart, and the terms are memoised per scope string, roles and type.

In-process services (loaders, jobs, domain workflows) use a plain `RequestContext`, not a
token: they act as the system of their tenant and are allowed everything within it. Only
`yiyun.identity.auth` builds `AuthContext`s, from verified tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, false, or_, select, tuple_
from sqlalchemy.orm import aliased

from yiyun.core.errors import Forbidden, NotFound
from yiyun.core.logging import get_logger
from yiyun.fhir.bulk import export_types, patient_compartment
from yiyun.fhir.model import RequestContext, StoredResource
from yiyun.fhir.search.match import QueryNotSupported, ResourceQuery, parse_query
from yiyun.fhir.search.registry import builtin_registry
from yiyun.fhir.search.tables import idx_reference
from yiyun.fhir.tables import resource as resource_t
from yiyun.fhir.types import resource_types
from yiyun.identity import care
from yiyun.identity.auth import AuthContext
from yiyun.identity.scopes import ResourceScope, parse_scopes

log = get_logger("yiyun.authz")

PERMISSION = {
    "read": "r", "vread": "r", "history": "r", "search": "s",
    "create": "c", "update": "u", "patch": "u", "delete": "d",
}
WRITES = frozenset({"create", "update", "patch", "delete"})
# Deleting a hidden resource answers as deleting a missing one (204), so only these check it.
INSTANCE_WRITES = frozenset({"update", "patch"})
TENANT, COMPARTMENT = "tenant", "compartment"
SYSTEM, USER = "system", "user"
# Patient sets a reach can name (see `Reach`).
OWN, CARE, PHARMACY = "own", "care", "pharmacy"
RELATED, GRANTED = "related", "granted"  # the two halves of CARE, loaded apart
# A longer set is embedded as its subquery rather than as bound values.
MAX_BOUND_PATIENTS = 500

CARE_ROLES = frozenset({"doctor", "nurse"})
# Purpose of use of an access made through a break-glass grant: HL7 v3 ActReason BTG "break
# the glass" (https://terminology.hl7.org/CodeSystem-v3-ActReason.html#v3-ActReason-BTG);
# the declaration itself is ETREAT (`yiyun.identity.breakglass`).
EMERGENCY_PURPOSE = "BTG"
# Search parameters that limit a search to one patient's records.
_SEARCH_PATIENT_PARAMS = frozenset({"patient", "subject", "subject:Patient", "patient:Patient", "beneficiary"})
# Medication review needs the diagnosis and allergies (《医疗机构处方审核规范》2018 第十五条:
# 处方用药与临床诊断的相符性, 过敏史).
PHARMACY_READ = frozenset({
    "Patient", "MedicationRequest", "MedicationDispense", "MedicationAdministration", "MedicationStatement",
    "AllergyIntolerance", "Condition",
})
PHARMACY_WRITE = {"MedicationDispense": "cu", "MedicationRequest": "u"}
REGISTRATION_TYPES = frozenset({"Patient", "Appointment"})


@lru_cache(maxsize=1)
def compartment_types() -> frozenset[str]:
    return frozenset({"Patient", *patient_compartment()})


# ------------------------------------------------------------------ grants
@dataclass(frozen=True)
class Grants:
    """What a token's scopes allow, parsed once per distinct scope string: the unqualified
    resource scopes, and apart from them the granular ones (with a query), which only
    `granular_terms` reads, so that a token without any costs nothing more."""

    scopes: tuple[ResourceScope, ...]
    granular: tuple[ResourceScope, ...] = ()
    contexts: frozenset[str] = frozenset()  # of both kinds: the patient sets to load

    def kinds(self, res_type: str, perm: str, patient: str | None) -> frozenset[str]:
        """The scope contexts (SYSTEM, USER, COMPARTMENT) of unqualified scopes that grant
        `perm` on `res_type`."""
        out = set()
        for s in self.scopes:
            if not s.allows(res_type, perm):
                continue
            if s.context == "system":
                out.add(SYSTEM)
            elif s.context == "user":
                out.add(USER)
            elif s.context == "patient" and patient:
                out.add(COMPARTMENT)
        return frozenset(out)

    def any_reach(self, perm: str, patient: str | None) -> bool:
        return any(
            perm in s.permissions and (s.context != "patient" or patient)
            for group in (self.scopes, self.granular) for s in group
        )


@lru_cache(maxsize=1024)
def grants_for(scopes: tuple[str, ...]) -> Grants:
    parsed = [s for s in parse_scopes(" ".join(scopes)) if isinstance(s, ResourceScope)]
    return Grants(
        tuple(s for s in parsed if s.query is None),
        tuple(s for s in parsed if s.query is not None),
        frozenset(s.context for s in parsed),
    )


def is_token_context(ctx: RequestContext) -> bool:
    return isinstance(ctx, AuthContext)


# ------------------------------------------------------------------ roles
@lru_cache(maxsize=4096)
def role_reach(roles: tuple[str, ...], res_type: str, perm: str) -> "Reach | None":
    """What `user/` scopes reach by role (the table in the module docstring)."""
    in_compartment_type = res_type in compartment_types()
    tenant, sets = False, set()
    for role in roles:
        if role in CARE_ROLES:
            if res_type == "Patient" and perm == "c":
                tenant = True  # registering a new patient discloses nothing; seeing it needs a relationship
            elif in_compartment_type:
                sets.add(CARE)
            elif perm in "rs":
                tenant = True
        elif role == "pharmacist":
            if res_type in PHARMACY_READ and (perm in "rs" or perm in PHARMACY_WRITE.get(res_type, "")):
                sets.add(PHARMACY)
            elif not in_compartment_type and perm in "rs":
                tenant = True
        elif role == "admin":
            tenant = tenant or not in_compartment_type or res_type in REGISTRATION_TYPES
        elif role == "regional-admin":
            tenant = tenant or not in_compartment_type
        elif role == "privacy-officer":
            tenant = tenant or (perm in "rs" and (not in_compartment_type or res_type == "Consent"))
        elif role == "cdc-officer":
            tenant = tenant or (perm in "rs" and not in_compartment_type)
    if tenant:
        return TENANT_REACH
    return Reach(frozenset(sets)) if sets else None


@dataclass(frozen=True)
class Reach:
    """How far an interaction reaches: the whole tenant, or the compartments of the patients
    in the named sets (OWN: the token's patient and their wards; CARE: the practitioner's
    patients; PHARMACY: patients with a current prescription)."""

    sets: frozenset[str] = frozenset()
    tenant: bool = False

    def __or__(self, other: "Reach | None") -> "Reach":
        if other is None:
            return self
        if self.tenant or other.tenant:
            return TENANT_REACH
        return Reach(self.sets | other.sets)


TENANT_REACH = Reach(tenant=True)


def reach_of(ctx: AuthContext, res_type: str, perm: str, grants: Grants | None = None) -> Reach | None:
    """How far `perm` on `res_type` reaches for this token through its unqualified scopes
    (None: not at all); granular scopes add `granular_terms`."""
    kinds = (grants if grants is not None else grants_for(ctx.scopes)).kinds(res_type, perm, ctx.patient)
    if SYSTEM in kinds:
        return TENANT_REACH
    reach = None
    if USER in kinds:
        reach = role_reach(tuple(ctx.roles), res_type, perm)
    if COMPARTMENT in kinds:
        own = Reach(frozenset({OWN}))
        reach = own if reach is None else reach | own
    return reach


def visible_reach(ctx: AuthContext, res_type: str, letters: str = "rs", grants: Grants | None = None) -> Reach | None:
    """How far the caller sees `res_type`: in results, read or search permission suffices
    (a search's primary type was already checked for `s`); as the target of a single
    interaction, any permission (the interaction itself was checked for its own letter)."""
    if grants is None:
        grants = grants_for(ctx.scopes)
    reach = None
    for p in letters:
        r = reach_of(ctx, res_type, p, grants)
        if r is not None:
            reach = r if reach is None else reach | r
    return reach


# ------------------------------------------------------------ granular scopes
@dataclass(frozen=True)
class Term:
    """What one granular scope adds on a type: `reach`, limited to the resources a search
    with its query would find."""

    reach: Reach
    query: ResourceQuery


def granular_terms(ctx: AuthContext, res_type: str, letters: str, grants: Grants | None = None) -> tuple[Term, ...]:
    """The terms of the token's granular scopes on `res_type` under any of `letters`.

    A resource is within them when it is within one of them (several combine as a union).
    A term an unqualified scope already covers is left out: it could add nothing."""
    if grants is None:
        grants = grants_for(ctx.scopes)
    if not grants.granular:
        return ()
    return _granular_terms(tuple(ctx.scopes), tuple(ctx.roles), ctx.patient is not None, res_type, letters)


@lru_cache(maxsize=4096)
def _granular_terms(scopes: tuple[str, ...], roles: tuple[str, ...], has_patient: bool, res_type: str,
                    letters: str) -> tuple[Term, ...]:
    probe = AuthContext(tenant="-", scopes=scopes, roles=roles, patient="-" if has_patient else None)
    plain = visible_reach(probe, res_type, letters)
    if plain is not None and plain.tenant:
        return ()
    terms: list[Term] = []
    for scope in grants_for(scopes).granular:
        for perm in letters:
            if not scope.allows(res_type, perm):
                continue
            reach = _scope_reach(scope, roles, res_type, perm, has_patient)
            if reach is None or _covers(plain, reach):
                continue
            query = scope_query(res_type, scope.query or "")
            if query is not None and Term(reach, query) not in terms:
                terms.append(Term(reach, query))
    return tuple(terms)


def _scope_reach(scope: ResourceScope, roles: tuple[str, ...], res_type: str, perm: str,
                 has_patient: bool) -> Reach | None:
    """How far one scope reaches, as `reach_of` answers for an unqualified one."""
    if scope.context == "system":
        return TENANT_REACH
    if scope.context == "user":
        return role_reach(roles, res_type, perm)
    return Reach(frozenset({OWN})) if has_patient else None


def _covers(plain: Reach | None, reach: Reach) -> bool:
    return plain is not None and (plain.tenant or (not reach.tenant and reach.sets <= plain.sets))


@lru_cache(maxsize=1024)
def scope_query(res_type: str, text: str) -> ResourceQuery | None:
    """A granular scope's query on `res_type`, parsed by the search engine's registry; None
    (the scope grants nothing on the type: fail closed) when it cannot be applied."""
    try:
        return parse_query(res_type, text)
    except QueryNotSupported as e:
        log.warning("granular_scope_not_supported", resource_type=res_type, query=text, reason=str(e))
        return None


def within_reach(ctx: AuthContext, resource: dict | None, reach: Reach | None, terms: tuple[Term, ...]) -> bool:
    """Whether `resource` (its content) lies within `reach`, or matches a term's query and
    lies within that term's reach."""
    patients = compartment_patients(resource or {})
    if reach is not None and (reach.tenant or patients & patients_in_reach(ctx, reach)):
        return True
    return any(
        t.query.matches(resource, ctx.base_url) and (t.reach.tenant or bool(patients & patients_in_reach(ctx, t.reach)))
        for t in terms
    )


# ------------------------------------------------------------- patient sets
@dataclass
class RequestScope:
    """Per-request cache on the token's context: the patient sets, loaded once."""

    sets: dict[str, frozenset[str]] = field(default_factory=dict)
    loaded: bool = False
    hidden: set[tuple[str, str]] = field(default_factory=set)
    # (type, id) → the patient a set-limited caller reached it through, for the audit entry
    patient_of: dict[tuple[str, str], str] = field(default_factory=dict)
    # patients reached only through a break-glass grant, and the (type, id) read that way:
    # their audit entries carry purpose BTG (see `EMERGENCY_PURPOSE`)
    granted_only: frozenset[str] = frozenset()
    emergency: set[tuple[str, str]] = field(default_factory=set)


_SCOPE_ATTR = "_yiyun_request_scope"


def request_scope(ctx: AuthContext) -> RequestScope:
    scope = ctx.__dict__.get(_SCOPE_ATTR)
    if scope is None:
        scope = RequestScope()
        ctx.__dict__[_SCOPE_ATTR] = scope
    return scope


def needed_sets(ctx: AuthContext) -> dict[str, Any]:
    """The patient sets this token's reach can name: {name: function building its select}
    (built only when a set must be queried)."""
    contexts = grants_for(ctx.scopes).contexts
    out: dict[str, Any] = {}
    tenant = ctx.tenant
    if "patient" in contexts and ctx.patient:
        patient = ctx.patient
        out[OWN] = lambda: care.own_and_wards(tenant, patient)
    if "user" in contexts:
        roles = set(ctx.roles)
        practitioner = care.practitioner_id(ctx.fhir_user)
        if roles & CARE_ROLES and practitioner:
            out[CARE] = lambda: care.care_patients(tenant, practitioner)
        if "pharmacist" in roles:
            out[PHARMACY] = lambda: care.pharmacy_patients(tenant)
    return out


def patients_in_reach(ctx: AuthContext, reach: Reach) -> frozenset[str]:
    """The loaded patients of `reach`'s sets; before loading, only the token's own patient."""
    scope = request_scope(ctx)
    if not scope.loaded:
        return frozenset({ctx.patient}) if OWN in reach.sets and ctx.patient else frozenset()
    out: frozenset[str] = frozenset()
    for name in reach.sets:
        out |= scope.sets.get(name, frozenset())
    return out


def patients_expr(ctx: AuthContext, reach: Reach):
    """The patients of `reach` for SQL: bound values when loaded and few, else subqueries."""
    scope = request_scope(ctx)
    if scope.loaded:
        ids = patients_in_reach(ctx, reach)
        if len(ids) <= MAX_BOUND_PATIENTS:
            return sorted(ids)
    selects = needed_sets(ctx)
    parts = [selects[n]() for n in sorted(reach.sets) if n in selects]
    if not parts:
        return []
    if len(parts) == 1:
        return parts[0].select()
    params: dict = {}
    for p in parts:
        params.update(p.params)
    return care.PatientSet(" UNION ".join(p.sql for p in parts), params).select()


# ------------------------------------------------------------- compartment
@lru_cache(maxsize=1)
def _compartment_pairs() -> tuple[tuple[str, str], ...]:
    return tuple((t, p) for t, params in patient_compartment().items() for p in params)


def compartment_patients(resource: dict) -> frozenset[str]:
    """The patients whose compartment `resource` is in, from its content."""
    rt = resource.get("resourceType")
    out = set()
    if rt == "Patient" and isinstance(resource.get("id"), str):
        out.add(resource["id"])
    params = patient_compartment().get(rt) if isinstance(rt, str) else None
    if params:
        sink: dict[str, list] = {"reference": []}
        for cp in builtin_registry().compiled(rt):
            if cp.code in params and cp.defn.type == "reference":
                cp.extract(resource, sink)
        out.update(tid for _, tt, tid, url in sink["reference"] if tt == "Patient" and url is None and tid)
    return frozenset(out)


def in_compartment(resource: dict, patient: str) -> bool:
    """Whether `resource` is in the Patient compartment of `patient`, from its content."""
    return patient in compartment_patients(resource)


def compartment_condition(table: Any, tenant: str, res_type: str | None, patients: Any):
    """SQL: the row of `table` (a resource or version table) is in the compartment of one of
    `patients` (an id, a list of ids or a select of ids).

    Membership comes from the reference index of the resource's current version, the
    same rows `Observation?subject=Patient/<id>` searches."""
    if isinstance(patients, str):
        patients = [patients]
    if isinstance(patients, (list, tuple, frozenset, set)) and not patients:
        return false()
    ref = aliased(idx_reference, name="cmp")
    linked = select(ref.c.rid).where(
        ref.c.tenant == tenant, ref.c.target_type == "Patient", ref.c.target_id.in_(patients), ref.c.url.is_(None)
    )
    if res_type is None:
        linked = linked.where(tuple_(ref.c.res_type, ref.c.param).in_(_compartment_pairs()))
        itself = and_(table.c.res_type == "Patient", table.c.res_id.in_(patients))
        return or_(itself, table.c.rid.in_(linked))
    params = patient_compartment().get(res_type)
    conds = []
    if res_type == "Patient":
        conds.append(table.c.res_id.in_(patients))
    if params:
        conds.append(table.c.rid.in_(linked.where(ref.c.res_type == res_type, ref.c.param.in_(params))))
    return or_(*conds) if conds else false()


def related_person_links(resource: dict | None) -> frozenset[str]:
    """The RelatedPerson references of a Patient's `link` (how guardianship is recorded)."""
    out = set()
    for link in (resource or {}).get("link") or []:
        other = link.get("other") if isinstance(link, dict) else None
        ref = other.get("reference") if isinstance(other, dict) else None
        if isinstance(ref, str) and "RelatedPerson/" in ref:
            out.add(ref)
    return frozenset(out)


# ---------------------------------------------------------------- decision
@dataclass(frozen=True)
class Decision:
    allowed: bool
    reach: Reach | None = None
    reason: str = ""
    terms: tuple[Term, ...] = ()  # granular scopes the decision relied on, for the existing resource


def decide(ctx: AuthContext, action: str, res_type: str | None, resource: dict | None = None) -> Decision:
    """The one decision point: role, then scope, then compartment and relationship.

    Writes (create, update) of a compartment type must land in the compartment of a
    patient within reach (403 otherwise). Whether an existing resource is within reach is
    answered by `can_see` (404 when it is not). The patient sets must be loaded
    (`AuthorizationPolicy.prepare`) before a set-limited write is decided.
    """
    grants = grants_for(ctx.scopes)
    if action == "reindex":
        ok = "admin" in ctx.roles or any(
            s.context == "system" and s.resource_type == "*" and "u" in s.permissions and s.query is None
            for s in grants.scopes
        )
        return Decision(ok, TENANT_REACH if ok else None, "" if ok else "needs system/*.u or the admin role")
    perm = PERMISSION.get(action)
    if perm is None:
        return Decision(False, reason=f"unknown interaction {action}")
    if res_type is None:  # system-level search or history: narrowed per type by search_filter
        ok = grants.any_reach(perm, ctx.patient)
        return Decision(ok, Reach() if ok else None, "" if ok else f"no scope grants {perm!r}")
    reach = reach_of(ctx, res_type, perm, grants)
    terms = granular_terms(ctx, res_type, perm, grants) if grants.granular else ()
    if reach is None and not terms:
        if grants.kinds(res_type, perm, ctx.patient):
            return Decision(False, reason=f"the role {','.join(ctx.roles) or '(none)'} gives no {perm!r} on {res_type}")
        if any(s.allows(res_type, perm) for s in grants.granular):
            return Decision(False, reason=f"the query of the scope granting {perm!r} on {res_type} is not supported")
        return Decision(False, reason=f"no scope grants {perm!r} on {res_type}")
    if terms:
        return _decide_granular(ctx, action, reach, terms, resource)
    if reach.tenant or resource is None or action not in ("create", "update"):
        return Decision(True, reach)
    if not compartment_patients(resource) & patients_in_reach(ctx, reach):
        return Decision(False, reason="the resource is outside the patients within reach")
    return Decision(True, reach)


def _decide_granular(ctx: AuthContext, action: str, reach: Reach | None, terms: tuple[Term, ...],
                     resource: dict | None) -> Decision:
    """A decision that granular scopes take part in. The reach is never tenant-wide, so
    that the existing resource of a write is checked too (`AuthorizationPolicy._check`)."""
    sets = frozenset().union(*(t.reach.sets for t in terms), reach.sets if reach is not None else frozenset())
    limited = Reach(sets)
    if resource is not None and action in ("create", "update") and not within_reach(ctx, resource, reach, terms):
        return Decision(False, reason="the resource does not match the query of the scope that grants this "
                                      "or is outside the patients within reach")
    return Decision(True, limited, terms=terms)


# ------------------------------------------------------------------ policy
class AuthorizationPolicy:
    """`yiyun.fhir.access.AccessPolicy` with scope, role, compartment and relationship rules
    and the audit trail."""

    def __init__(self, recorder: "AuditRecorder | None" = None) -> None:
        if recorder is None:
            from yiyun.core.settings import get_settings

            recorder = AuditRecorder(interval=get_settings().audit_flush_seconds)
        self.recorder = recorder

    def bind(self, conn) -> "BoundPolicy":
        """The policy for one unit of work: audit entries of writes go into its transaction."""
        return BoundPolicy(self, conn)

    # -- AccessPolicy
    async def check(self, ctx, action, res_type, res_id, resource) -> None:
        await self._check(ctx, action, res_type, res_id, resource, None)

    def can_see(self, ctx: RequestContext, stored: StoredResource) -> bool:
        return self._can_see(ctx, stored, None)

    def _can_see(self, ctx: RequestContext, stored: StoredResource, conn) -> bool:
        if stored.tenant != ctx.tenant:
            return False
        if not is_token_context(ctx):
            return True
        grants = grants_for(ctx.scopes)
        # creating never shows an existing resource, so `c` reaches nothing here
        reach = visible_reach(ctx, stored.res_type, "ruds", grants)
        if reach is not None and reach.tenant:
            return True
        terms = granular_terms(ctx, stored.res_type, "ruds", grants) if grants.granular else ()
        if (reach is None and not terms) or stored.deleted:
            return False
        patients = compartment_patients(stored.resource)
        through = patients & patients_in_reach(ctx, reach) if reach is not None else frozenset()
        if not through and terms:
            matched = [t for t in terms if t.query.matches(stored.resource, ctx.base_url)]
            if any(t.reach.tenant for t in matched):
                return True
            for t in matched:
                through |= patients & patients_in_reach(ctx, t.reach)
            if not matched:
                self._hidden(ctx, stored, conn, "outside the query of the token's granular scopes")
                return False
        if through:
            scope = request_scope(ctx)
            key = (stored.res_type, stored.res_id)
            ordinary = through - scope.granted_only
            scope.patient_of[key] = min(ordinary or through)
            if not ordinary:
                scope.emergency.add(key)
            return True
        self._hidden(ctx, stored, conn)
        return False

    def _hidden(self, ctx: AuthContext, stored: StoredResource, conn,
                reason: str = "no relationship with the patient") -> None:
        """A resource exists but is out of reach: the caller gets 404, the audit log `denied`."""
        scope = request_scope(ctx)
        key = (stored.res_type, stored.res_id)
        if key in scope.hidden:
            return
        scope.hidden.add(key)
        patients = compartment_patients(stored.resource)
        if patients:  # the patient whose record was refused, for "who tried to see my record"
            scope.patient_of[key] = min(patients)
        self.recorder.record_nowait(conn, ctx, "read", stored.res_type, stored.res_id, "denied",
                                    {"reason": reason})

    def search_filter(self, ctx: RequestContext, table: Any, res_type: str | None):
        if not is_token_context(ctx):
            return None
        if res_type is not None:
            grants = grants_for(ctx.scopes)
            reach = visible_reach(ctx, res_type, "rs", grants)
            if reach is not None and reach.tenant:
                return None
            terms = granular_terms(ctx, res_type, "rs", grants) if grants.granular else ()
            if terms:
                return self._granular_filter(ctx, table, res_type, reach, terms)
            if reach is None:
                return false()
            return compartment_condition(table, ctx.tenant, res_type, patients_expr(ctx, reach))
        return self._typeless_filter(ctx, table)

    def _granular_filter(self, ctx: AuthContext, table: Any, res_type: str, reach: Reach | None,
                         terms: tuple[Term, ...]):
        """Rows within `reach`, or matching a term's query within that term's reach; the
        query is the search engine's own condition, so it reads the same index rows."""
        conds = []
        if reach is not None:
            conds.append(compartment_condition(table, ctx.tenant, res_type, patients_expr(ctx, reach)))
        for t in terms:
            cond = t.query.condition(table, ctx.tenant, ctx.base_url)
            if not t.reach.tenant:
                cond = and_(compartment_condition(table, ctx.tenant, res_type, patients_expr(ctx, t.reach)), cond)
            conds.append(cond)
        return or_(*conds)

    def _typeless_filter(self, ctx: AuthContext, table: Any):
        """A search or history across all types: each type as far as the caller sees it."""
        tenant_types, by_reach, granular = _type_buckets(tuple(ctx.scopes), tuple(ctx.roles), bool(ctx.patient))
        if tenant_types is None:
            return None
        conds = [table.c.res_type.in_(tenant_types)] if tenant_types else []
        for reach, types in by_reach:
            cond = compartment_condition(table, ctx.tenant, None, patients_expr(ctx, reach))
            conds.append(and_(table.c.res_type.in_(types), cond))
        for t in granular:  # types that granular scopes add to: each filtered as its own search is
            conds.append(and_(table.c.res_type == t, self.search_filter(ctx, table, t)))
        return or_(*conds) if conds else false()

    async def record(self, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        if is_token_context(ctx) and not _already_denied(ctx, res_type, res_id, outcome):
            await self.recorder.record(None, ctx, action, res_type, res_id, outcome, detail)

    # -- shared
    async def prepare(self, ctx: AuthContext, conn) -> RequestScope:
        """Load the token's patient sets once per request (one query; a patient's own set
        comes from `_guardianship_cache` when it is fresh)."""
        scope = request_scope(ctx)
        if scope.loaded:
            return scope
        selects = needed_sets(ctx)
        cached = _guardianship_cache.get(ctx.tenant, ctx.patient) if OWN in selects else None
        if cached is not None:
            scope.sets[OWN] = cached
            del selects[OWN]
        built = {name: build() for name, build in selects.items() if name != CARE}
        found: dict[str, frozenset[str]] = {}
        practitioner = care.practitioner_id(ctx.fhir_user)
        related = None
        if CARE in selects:
            # relationships may come from the cache; break-glass grants are asked unless this
            # practitioner was just found to hold none (care.NoGrantsCache)
            related = _care_cache.get(ctx.tenant, practitioner)
            if related is None:
                built[RELATED] = care.related_patients(ctx.tenant, practitioner)
            if not care.no_grants.known_none(ctx.tenant, practitioner):
                built[GRANTED] = care.break_glass_patients(ctx.tenant, practitioner)
        if built:
            if conn is None:
                from yiyun.core.db import get_engine, unit_of_work

                async with unit_of_work(get_engine(), write=False) as own:
                    found = await care.load_patient_sets(own, built)
            else:
                found = await care.load_patient_sets(conn, built)
            if OWN in found:
                scope.sets[OWN] = found[OWN]
                _guardianship_cache.put(ctx.tenant, ctx.patient, found[OWN])
            if PHARMACY in found:
                scope.sets[PHARMACY] = found[PHARMACY]
            if RELATED in found:
                related = found[RELATED]
                _care_cache.put(ctx.tenant, practitioner, related)
            if GRANTED in built and not found.get(GRANTED):
                care.no_grants.remember_none(ctx.tenant, practitioner)
        if CARE in selects:
            granted = found.get(GRANTED, frozenset())
            scope.sets[CARE] = (related or frozenset()) | granted
            if granted:
                # reached through the grant and through nothing else this token has
                others = frozenset().union(*(v for k, v in scope.sets.items() if k != CARE))
                scope.granted_only = granted - (related or frozenset()) - others
        scope.loaded = True
        return scope

    async def _check(self, ctx, action, res_type, res_id, resource, conn) -> None:
        if not is_token_context(ctx):
            return
        await self.prepare(ctx, conn)
        if action == "export":
            return await self._check_export(ctx, res_type, res_id, resource, conn)
        decision = decide(ctx, action, res_type, resource)
        if not decision.allowed:
            await self._deny(ctx, action, res_type, res_id, decision.reason, conn)
        reach = decision.reach
        if reach is None or reach.tenant:
            return
        existing = None
        if action in INSTANCE_WRITES and res_id:
            existing = await self._check_existing(ctx, action, res_type, res_id, conn)
        if decision.terms and res_id and action in ("update", "patch", "delete"):
            await self._check_granular_existing(ctx, action, res_type, res_id, existing, conn)
        if res_type == "Patient" and action in ("create", "update") and reach.sets == {OWN}:
            # guardianship is registered by staff, never claimed by the guardian's own token
            added = related_person_links(resource) - related_person_links(existing.resource if existing else None)
            if added:
                await self._deny(ctx, action, res_type, res_id, "a patient may not link their record to a RelatedPerson",
                                 conn)

    async def _check_existing(self, ctx, action, res_type, res_id, conn) -> StoredResource | None:
        """A write to an existing resource needs it within reach too (also inside a
        transaction Bundle, whose writes reach the policy only here)."""
        if conn is None:
            return None  # the repository checks `can_see` on its own path
        stored = await _current(ctx, res_type, res_id, conn)
        if stored is not None and not stored.deleted and not self._can_see(ctx, stored, conn):
            raise NotFound(f"未找到资源 {res_type}/{res_id} (resource not found)")
        return stored

    async def _check_granular_existing(self, ctx, action, res_type, res_id, existing, conn) -> None:
        """A write allowed by a granular scope changes or deletes only a resource that its
        query matches too (an update may not turn a laboratory result into a vital sign)."""
        if existing is None and conn is not None:
            existing = await _current(ctx, res_type, res_id, conn)
        if existing is None or existing.deleted or not self._can_see(ctx, existing, conn):
            return  # missing or hidden: answered as missing, as without granular scopes
        perm = PERMISSION[action]
        terms = granular_terms(ctx, res_type, perm)
        if not within_reach(ctx, existing.resource, reach_of(ctx, res_type, perm), terms):
            await self._deny(ctx, action, res_type, res_id,
                             "the existing resource does not match the query of the scope that grants this", conn)

    async def _deny(self, ctx, action, res_type, res_id, reason, conn) -> None:
        await self.recorder.record(conn, ctx, action, res_type, res_id, "denied", {"reason": reason})
        raise Forbidden(f"访问令牌的授权范围不允许此操作 (insufficient scope: {reason})",
                        headers={"WWW-Authenticate": 'Bearer realm="yiyun", error="insufficient_scope"'})

    async def _check_export(self, ctx: AuthContext, res_type, res_id, params: dict | None, conn) -> None:
        """Narrow a bulk export to what the token may read and search
        (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#bulk-data-kick-off-request:
        the server limits the data to the resources the client is authorised for)."""
        params = params if params is not None else {}
        wanted = params.get("types") or export_types(params.get("level", "system"), None)
        allowed, limited = [], None
        for t in wanted:
            r, s = reach_of(ctx, t, "r"), reach_of(ctx, t, "s")
            if r is None or s is None:
                continue
            allowed.append(t)
            if not (r.tenant and s.tenant):
                both = Reach(r.sets & s.sets) if not (r.tenant or s.tenant) else Reach(r.sets | s.sets)
                limited = both if limited is None else limited | both
        if not allowed:
            await self._deny(ctx, "export", res_type, res_id, "no scope grants r and s on the exported types", conn)
        if limited is not None:
            # a set-limited export writes those patients' compartments only, at any level
            params["level"] = "patient"
            params["patients"] = sorted(patients_in_reach(ctx, limited))
            allowed = [t for t in allowed if t in set(export_types("patient", None))]
        params["types"] = allowed


async def _current(ctx: AuthContext, res_type: str, res_id: str, conn) -> StoredResource | None:
    row = (await conn.execute(
        select(resource_t.c.rid, resource_t.c.tenant, resource_t.c.res_type, resource_t.c.res_id,
               resource_t.c.version_id, resource_t.c.ts, resource_t.c.deleted, resource_t.c.content)
        .where(resource_t.c.tenant == ctx.tenant, resource_t.c.res_type == res_type, resource_t.c.res_id == res_id)
    )).first()
    return StoredResource.from_row(row) if row is not None else None


class GuardianshipCache:
    """A patient's own set (themselves and their wards) per (tenant, patient), kept for
    `ttl` seconds so that a patient's every read does not repeat the guardianship query.

    Guardianship changes only by writing a Patient (its `link`) or a RelatedPerson: a write
    hook on both types drops the tenant's entries before and after the write commits, so a
    change counts from the next request in this process; another process's copy ages out
    within `ttl` seconds. Break-glass grants are never cached (only their absence, briefly).
    """

    def __init__(self, ttl: float = 30.0, max_entries: int = 50_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._by_tenant: dict[str, dict[str, tuple[float, frozenset[str]]]] = {}
        self._size = 0

    def get(self, tenant: str, patient: str | None) -> frozenset[str] | None:
        import time

        hit = self._by_tenant.get(tenant, {}).get(patient or "")
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, tenant: str, patient: str | None, value: frozenset[str]) -> None:
        import time

        if self._size >= self.max_entries:
            self._by_tenant.clear()
            self._size = 0
        entries = self._by_tenant.setdefault(tenant, {})
        self._size += (patient or "") not in entries
        entries[patient or ""] = (time.monotonic() + self.ttl, value)

    def invalidate(self, tenant: str) -> None:
        self._size -= len(self._by_tenant.pop(tenant, {}))


_guardianship_cache = GuardianshipCache()
# A practitioner's care relationships (not their break-glass grants: see care.NoGrantsCache),
# kept the same way and dropped on every write of a relationship type.
_care_cache = GuardianshipCache()


async def _guardianship_written(repo, plans) -> None:
    tenant = repo.ctx.tenant
    _guardianship_cache.invalidate(tenant)
    repo.after_commit.append(lambda: _guardianship_cache.invalidate(tenant))


async def _relationship_written(repo, plans) -> None:
    tenant = repo.ctx.tenant
    _care_cache.invalidate(tenant)
    repo.after_commit.append(lambda: _care_cache.invalidate(tenant))


def _register_hooks() -> None:
    from yiyun.fhir.hooks import register_write_hook

    for res_type in ("Patient", "RelatedPerson"):
        register_write_hook(res_type, _guardianship_written)
    for res_type, _who, _whom in care.RELATIONSHIPS:
        register_write_hook(res_type, _relationship_written)


_register_hooks()


def _already_denied(ctx: AuthContext, res_type, res_id, outcome: str) -> bool:
    """A 404 for a resource `can_see` hid was recorded as `denied` already."""
    if outcome != "not-found" or not res_type or not res_id:
        return False
    return (res_type, res_id) in request_scope(ctx).hidden


@lru_cache(maxsize=512)
def _type_buckets(scopes: tuple[str, ...], roles: tuple[str, ...], has_patient: bool):
    """For a search across types: (types seen tenant-wide, [(reach, types)], types granular
    scopes add to); (None, [], ()) when every type is seen tenant-wide."""
    grants = grants_for(scopes)
    wild = [s for s in grants.scopes if s.resource_type == "*" and s.permissions & {"r", "s"}]
    if any(s.context == "system" for s in wild):
        return None, [], ()
    probe = AuthContext(tenant="-", scopes=scopes, roles=roles, patient="-" if has_patient else None)
    granular = _granular_types(grants, scopes, roles, has_patient) if grants.granular else ()
    candidates = resource_types() if wild else {s.resource_type for s in grants.scopes if s.resource_type != "*"}
    tenant_types, by_reach = [], {}
    for t in sorted(candidates):
        reach = visible_reach(probe, t)
        if reach is None:
            continue
        if reach.tenant:
            tenant_types.append(t)
        elif t in compartment_types() and t not in granular:
            by_reach.setdefault(reach, []).append(t)
    return tenant_types, sorted(by_reach.items(), key=lambda kv: sorted(kv[0].sets)), granular


def _granular_types(grants: Grants, scopes: tuple[str, ...], roles: tuple[str, ...],
                    has_patient: bool) -> tuple[str, ...]:
    """The types, not seen tenant-wide, that granular scopes add to (each then filtered as
    a search of its own type is)."""
    wild = any(s.resource_type == "*" for s in grants.granular)
    candidates = resource_types() if wild else {s.resource_type for s in grants.granular}
    return tuple(sorted(t for t in candidates if _granular_terms(scopes, roles, has_patient, t, "rs")))


def _searched_patient(params) -> str | None:
    """The one patient a search was limited to (`patient=x`, `subject=Patient/x`), if any."""
    if not isinstance(params, list):
        return None
    for pair in params:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2) or pair[0] not in _SEARCH_PATIENT_PARAMS:
            continue
        value = str(pair[1])
        pid = value.removeprefix("Patient/")
        if pid and "," not in pid and "/" not in pid:
            return pid
    return None


class BoundPolicy:
    """`AuthorizationPolicy` bound to one unit of work's connection.

    Entries for the writes of a token's request wait here and are appended by `flush`
    just before the unit of work commits (the audit chain's head stays locked from the
    append to the commit, so appending last keeps that short and lets two requests that
    write several resources never wait on each other in opposite orders). The FHIR API
    calls `flush`; in-process callers' writes are appended at once.
    """

    def __init__(self, policy: AuthorizationPolicy, conn) -> None:
        self.policy, self.conn = policy, conn
        self.pending: list = []

    async def check(self, ctx, action, res_type, res_id, resource) -> None:
        await self.policy._check(ctx, action, res_type, res_id, resource, self.conn)

    def can_see(self, ctx, stored) -> bool:
        return self.policy._can_see(ctx, stored, self.conn)

    def search_filter(self, ctx, table, res_type):
        return self.policy.search_filter(ctx, table, res_type)

    async def record(self, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        await self.record_batch(ctx, [(action, res_type, res_id, outcome)], detail)

    async def record_batch(self, ctx, events, detail=None) -> None:
        rec = self.policy.recorder
        writes = [e for e in events if e[0] in WRITES and e[3] == "ok"]
        others = [e for e in events if not (e[0] in WRITES and e[3] == "ok")]
        if is_token_context(ctx):
            # In-process services read as the system on behalf of a workflow whose own
            # caller is audited; their reads are not recorded one by one (their writes are).
            for action, res_type, res_id, outcome in others:
                if _already_denied(ctx, res_type, res_id, outcome):
                    continue
                await rec.record(self.conn, ctx, action, res_type, res_id, outcome, detail)
        if not writes:
            return
        entries = [rec.entry(ctx, a, t, i, o, detail) for a, t, i, o in writes]
        if is_token_context(ctx):
            self.pending.extend(entries)
        else:
            await rec.append_in(self.conn, entries)

    async def flush(self) -> None:
        """Append the pending write entries inside this unit of work (before it commits)."""
        entries, self.pending = self.pending, []
        if entries:
            await self.policy.recorder.append_in(self.conn, entries)


# ------------------------------------------------------------------- audit
class AuditRecorder:
    """Writes the audit trail (`yiyun.identity.audit`) for the policy.

    Writes: appended in the unit of work of the write, so an entry commits if and only if
    its write does. Reads, searches, exports and refusals: buffered in memory and appended
    in batches, every `interval` seconds (`YIYUN_AUDIT_FLUSH_SECONDS`, default 1) or `batch`
    entries, in transactions of their own
    (reads on PostgreSQL run in AUTOCOMMIT units with nothing to append into, and a refusal
    must stay recorded although its request fails). The trade-off: a process that dies
    abruptly loses at most the last `interval` seconds of read entries; a clean shutdown
    flushes them (the application's lifespan calls `close`). The buffer is bounded: a
    request that finds `max_pending` entries waiting appends them itself before it goes on,
    so memory stays bounded and no entry is dropped while the database answers.
    """

    def __init__(self, *, batch: int = 500, interval: float = 1.0, max_pending: int = 10_000) -> None:
        self.batch, self.interval, self.max_pending = batch, interval, max_pending
        self._pending: list[tuple[Any, Any]] = []  # (engine, AuditEntry)
        self._timer = None
        self._tasks: set = set()
        self.failures = 0

    @staticmethod
    def entry(ctx, action, res_type, res_id, outcome, detail=None):
        from yiyun.identity.audit import entry_from_context

        reached, emergency = None, False
        if is_token_context(ctx):
            scope = request_scope(ctx)
            reached = scope.patient_of.get((res_type, res_id))
            emergency = (res_type, res_id) in scope.emergency
            if action == "search" and scope.granted_only and outcome == "ok":
                searched = _searched_patient(detail)
                if searched in scope.granted_only:
                    reached, emergency = searched, True
        patient = reached or getattr(ctx, "patient", None) or (res_id if res_type == "Patient" else None)
        entry = entry_from_context(ctx, action, res_type, res_id, outcome, detail, patient=patient)
        if emergency and outcome == "ok":
            entry.purpose = EMERGENCY_PURPOSE
        return entry

    async def record(self, conn, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        from yiyun.core.db import get_engine

        engine = conn.engine if conn is not None else get_engine()
        self._pending.append((engine, self.entry(ctx, action, res_type, res_id, outcome, detail)))
        if len(self._pending) >= self.max_pending:
            await self.flush()  # back-pressure instead of dropping entries
        else:
            self._schedule(now=len(self._pending) >= self.batch)

    def record_nowait(self, conn, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        """`record` from synchronous code (`can_see`): buffered, appended by the next flush."""
        from yiyun.core.db import get_engine

        engine = conn.engine if conn is not None else get_engine()
        self._pending.append((engine, self.entry(ctx, action, res_type, res_id, outcome, detail)))
        self._schedule(now=len(self._pending) >= self.batch)

    async def append_in(self, conn, entries) -> None:
        from yiyun.identity.audit import AuditChainError, append

        try:
            await append(conn, entries)
        except AuditChainError:  # a read-only unit of work: append in a transaction of its own
            self._pending.extend((conn.engine, e) for e in entries)
            self._schedule(now=True)

    def _schedule(self, *, now: bool) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if now:
            task = loop.create_task(self.flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self._timer is None or self._timer.cancelled() or getattr(self._timer, "_loop", loop) is not loop:
            self._timer = loop.call_later(self.interval, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._pending:
            self._schedule(now=True)

    async def flush(self) -> int:
        """Append every buffered entry now; returns how many were written."""
        from yiyun.identity.audit import append_committed

        batch, self._pending = self._pending, []
        by_engine: dict[int, tuple[Any, list]] = {}
        for engine, entry in batch:
            by_engine.setdefault(id(engine), (engine, []))[1].append(entry)
        written = 0
        for engine, entries in by_engine.values():
            try:
                await append_committed(engine, entries)
                written += len(entries)
            except Exception:  # the database is away: keep the entries while there is room
                self.failures += 1
                log.exception("audit_flush_failed", entries=len(entries))
                room = self.max_pending - len(self._pending)
                self._pending[:0] = [(engine, e) for e in entries[:max(room, 0)]]
        return written

    async def close(self) -> None:
        """Flush at shutdown, after the requests in flight have finished."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            await task
        await self.flush()
