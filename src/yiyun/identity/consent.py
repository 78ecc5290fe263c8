"""Patient Consent for regional sharing and for research use, as FHIR R4 Consent resources.

A consent is one `Consent` (https://hl7.org/fhir/R4/consent.html) in the tenant holding the
patient's record:

- `status` active (granted) or inactive (revoked; consent-state-codes);
- `scope` patient-privacy (regional sharing) or research (consentscope);
- `category` LOINC 59284-0 "Patient Consent" and the kind
  (`https://yiyun.example.cn/fhir/CodeSystem/consent-kind` regional-sharing | research),
  the code the policy looks for;
- `policyRule` v3-ActCode OPTIN (the patient opted in; ppc-1 needs a policy or rule);
- `provision.type` permit, `provision.purpose` v3-ActReason TREAT (sharing for treatment)
  or HRESCH (health research), `provision.period.start` the time of the grant;
- `performer` who consented: the patient, or a guardian's RelatedPerson (also the
  `verification`; `consent_guardians`); a form signed on paper at the desk is the
  `sourceAttachment`, the staff member who recorded it an extension (`consent_desk`).

The same person in other tenants is matched by the resident ID number
(`urn:oid:2.16.156.10011.1.3`); granting or revoking on the patient's own page writes the
consent into every tenant holding that person, so each hospital holds the consent that
governs its own records (《个人信息保护法》第十四条: consent given voluntarily and explicitly;
第十五条: the individual may withdraw it, and the withdrawal acts at once; 第二十三条: a
separate consent to provide personal information to another handler). Nothing caches a
consent: every regional read asks the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.core.errors import BadRequest
from yiyun.fhir.model import RequestContext, StoredResource
from yiyun.fhir.repository import FhirRepository
from yiyun.identity.audit import AuditEntry, append

KIND_SYSTEM = "https://yiyun.example.cn/fhir/CodeSystem/consent-kind"
REGIONAL, RESEARCH = "regional-sharing", "research"
KINDS = (REGIONAL, RESEARCH)
_SCOPE = {REGIONAL: "patient-privacy", RESEARCH: "research"}
_PURPOSE = {REGIONAL: ("TREAT", "treatment"), RESEARCH: ("HRESCH", "healthcare research")}
_DISPLAY = {REGIONAL: "区域医疗机构间共享诊疗记录 (regional sharing of records)",
            RESEARCH: "去标识化数据用于医学研究 (research use of de-identified data)"}
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
RESIDENT_ID_SYSTEMS = ("urn:oid:2.16.156.10011.1.3", "urn:oid:2.16.156.10011.1.1")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise BadRequest(f"未知的授权类型 {kind!r}，可选 {', '.join(KINDS)} (unknown consent kind)")
    return kind


def _now_instant() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def consent_resource(kind: str, patient_id: str, *, status: str = "active") -> dict:
    code, display = _PURPOSE[kind]
    now = _now_instant()
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": _SCOPE[kind]}]},
        "category": [
            {"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]},
            {"coding": [{"system": KIND_SYSTEM, "code": kind}], "text": _DISPLAY[kind]},
        ],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": now,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": now},
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": code,
                         "display": display}],
        },
    }


def kind_of(consent: dict) -> str | None:
    for cat in consent.get("category") or []:
        for c in (cat or {}).get("coding") or []:
            if c.get("system") == KIND_SYSTEM and c.get("code") in KINDS:
                return c["code"]
    return None


def permits_now(consent: dict) -> bool:
    """An active consent whose provision permits, within its period (if it has one)."""
    if consent.get("status") != "active":
        return False
    provision = consent.get("provision") or {}
    if provision.get("type", "permit") != "permit":
        return False
    period = provision.get("period") or {}
    now = _now_instant()
    end = period.get("end")
    return not (isinstance(end, str) and end[:19] < now[:19])


async def active_consents(repo: FhirRepository, patient_id: str, kind: str) -> list[StoredResource]:
    """The consents of `kind` that permit now, for Patient/`patient_id` in `repo`'s tenant."""
    found = await repo.search("Consent", [
        ("patient", f"Patient/{patient_id}"), ("category", f"{KIND_SYSTEM}|{kind}"), ("status", "active"),
        ("_count", "50"),
    ])
    return [s for s in found.matches if permits_now(s.resource)]


async def has_consent(engine: AsyncEngine, tenant: str, patient_id: str, kind: str) -> StoredResource | None:
    """The Consent of `kind` that lets Patient/`patient_id`'s records in `tenant` be used, or None.
    Other modules (research exports, analytics) call this before using a patient's data."""
    check_kind(kind)
    async with unit_of_work(engine, write=False) as conn:
        repo = FhirRepository(conn, RequestContext(tenant=tenant))
        found = await active_consents(repo, patient_id, kind)
    return found[0] if found else None


# ------------------------------------------------------------------ the same person elsewhere
def resident_id(patient: dict) -> str | None:
    """The plain resident ID number of a Patient, opening a sealed value if need be."""
    for ident in patient.get("identifier") or []:
        if not isinstance(ident, dict) or ident.get("system") not in RESIDENT_ID_SYSTEMS:
            continue
        value = ident.get("value")
        if isinstance(value, str) and value and "*" not in value:
            return value
        for ext in (ident.get("_value") or {}).get("extension") or []:
            token = ext.get("valueString") if isinstance(ext, dict) else None
            if isinstance(token, str) and token.startswith("v1."):
                from yiyun.identity.protection import RESIDENT_ID, DecryptionError, decrypt

                try:
                    return decrypt(token, RESIDENT_ID)
                except DecryptionError:
                    return None
    return None


@dataclass(frozen=True)
class PersonRecord:
    tenant: str
    tenant_name: str
    patient_id: str


async def same_person(engine: AsyncEngine, tenant: str, patient_id: str, *, include_own: bool = True) -> list[PersonRecord]:
    """Patient/`patient_id` of `tenant` and the records of the same person (same resident ID)
    in the region's other care tenants."""
    from yiyun.identity.accounts import list_tenants

    async with unit_of_work(engine, write=False) as conn:
        tenants = await list_tenants(conn)
        own = await FhirRepository(conn, RequestContext(tenant=tenant)).read("Patient", patient_id)
        number = resident_id(own.resource)
        names = {t.slug: t.name for t in tenants}
        out = [PersonRecord(tenant, names.get(tenant, tenant), patient_id)] if include_own else []
        if not number:
            return out
        for t in tenants:
            if t.slug == tenant or not t.active or t.kind == "cdc":
                continue
            repo = FhirRepository(conn, RequestContext(tenant=t.slug))
            found = await repo.search("Patient", [("identifier", f"{RESIDENT_ID_SYSTEM}|{number}"), ("_count", "5")])
            out.extend(PersonRecord(t.slug, t.name, m.res_id) for m in found.matches)
    return out


# ------------------------------------------------------------------ who gave the consent
# Extensions of this platform on Consent (R4 has no element for them).
RECORDED_BY_URL = "https://yiyun.example.cn/fhir/StructureDefinition/consent-recorded-by"
WITHDRAWN_BY_URL = "https://yiyun.example.cn/fhir/StructureDefinition/consent-withdrawn-by"
WITHDRAWAL_RECORDED_BY_URL = "https://yiyun.example.cn/fhir/StructureDefinition/consent-withdrawal-recorded-by"
WITHDRAWAL_SOURCE_URL = "https://yiyun.example.cn/fhir/StructureDefinition/consent-withdrawal-source"
# Identifiers naming, in another tenant, a guardian's RelatedPerson ("<tenant>/RelatedPerson/<id>")
# and a staff account ("<tenant>/<subject>"): the resources themselves live in one tenant only.
GUARDIAN_SYSTEM = "https://yiyun.example.cn/fhir/NamingSystem/guardian"
STAFF_SYSTEM = "https://yiyun.example.cn/fhir/NamingSystem/staff-account"


@dataclass(frozen=True)
class Guardian:
    """The guardian acting for a ward: the RelatedPerson recording the guardianship."""

    tenant: str
    related_person: str
    patient: str  # the guardian's own Patient id in `tenant`
    name: str

    def reference(self, in_tenant: str) -> dict:
        display = f"{self.name}（监护人）"
        if in_tenant == self.tenant:
            return {"reference": f"RelatedPerson/{self.related_person}", "display": display}
        return {"type": "RelatedPerson", "display": display, "identifier": {
            "system": GUARDIAN_SYSTEM, "value": f"{self.tenant}/RelatedPerson/{self.related_person}"}}


@dataclass(frozen=True)
class DeskRecord:
    """A consent (or withdrawal) the patient signed on paper, recorded by staff at the desk."""

    tenant: str
    staff: str  # the staff member's subject
    staff_name: str
    attachment: dict  # FHIR Attachment of the scanned form (`consent_forms`)

    def recorder(self) -> dict:
        return {"display": self.staff_name, "identifier": {"system": STAFF_SYSTEM, "value": f"{self.tenant}/{self.staff}"}}


@dataclass(frozen=True)
class GivenBy:
    """Who makes the choice: the patient (neither field), a guardian, or the patient on paper."""

    guardian: Guardian | None = None
    desk: DeskRecord | None = None

    def performer(self, tenant: str, patient_id: str) -> dict:
        return self.guardian.reference(tenant) if self.guardian else {"reference": f"Patient/{patient_id}"}

    def detail(self) -> dict:
        out: dict = {}
        if self.guardian:
            out["guardian"] = f"{self.guardian.tenant}/RelatedPerson/{self.guardian.related_person}"
        if self.desk:
            out.update(recorded_at_desk=True, form=self.desk.attachment.get("url"))
        return out


SELF = GivenBy()


def given_consent(kind: str, patient_id: str, tenant: str, given_by: GivenBy) -> dict:
    """The Consent as `given_by` gives it in `tenant`: `performer` is who consented (the
    patient, or the guardian's RelatedPerson, also as a `verification`); a paper form is the
    `sourceAttachment`, and the staff member who recorded it an extension."""
    body = consent_resource(kind, patient_id)
    body["performer"] = [given_by.performer(tenant, patient_id)]
    if given_by.guardian:
        body["verification"] = [{"verified": True, "verifiedWith": given_by.guardian.reference(tenant),
                                 "verificationDate": body["dateTime"]}]
    if given_by.desk:
        body["sourceAttachment"] = given_by.desk.attachment
        body["extension"] = [{"url": RECORDED_BY_URL, "valueReference": given_by.desk.recorder()}]
    return body


def _by_guardian(ref: dict) -> bool:
    return ref.get("type") == "RelatedPerson" or str(ref.get("reference", "")).startswith("RelatedPerson/")


def giver(consent: dict) -> dict:
    """{"role": "patient" | "guardian", "name": display or None} of a stored Consent (one
    without a performer was given by the patient on their own page)."""
    for ref in consent.get("performer") or []:
        if isinstance(ref, dict) and _by_guardian(ref):
            return {"role": "guardian", "name": ref.get("display")}
    return {"role": "patient", "name": None}


def _extension(consent: dict, url: str) -> dict | None:
    for ext in consent.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def recorded_by(consent: dict) -> str | None:
    ext = _extension(consent, RECORDED_BY_URL)
    return ((ext or {}).get("valueReference") or {}).get("display")


def _same_giver(consent: dict, given_by: GivenBy, tenant: str, patient_id: str) -> bool:
    """An active consent already given the same way, which a repeated grant keeps. A paper form
    is new evidence, never a repeat."""
    if given_by.desk:
        return False
    wanted = given_by.performer(tenant, patient_id)
    performers = consent.get("performer") or [{"reference": f"Patient/{patient_id}"}]
    return any(p.get("reference") == wanted.get("reference") and p.get("identifier") == wanted.get("identifier")
               for p in performers if isinstance(p, dict))


# ------------------------------------------------------------------ grant and revoke
async def _audit(conn, ctx: RequestContext, tenant: str, patient_id: str, consent_id: str, what: str, kind: str,
                 given_by: GivenBy = SELF) -> None:
    await append(conn, [AuditEntry(
        tenant=tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action="consent",
        resource_type="Consent", resource_id=consent_id, patient=f"Patient/{patient_id}", purpose="PATADMIN",
        client_address=ctx.client_address, outcome="ok",
        detail={"change": what, "kind": kind, "by_tenant": ctx.tenant, **given_by.detail()},
    )])


async def _end(repo: FhirRepository, stored: StoredResource, withdrawal: list[dict] | None) -> None:
    """Set a consent inactive from now; `withdrawal` extensions say who withdrew it."""
    body = {**stored.resource, "status": "inactive"}
    provision = dict(body.get("provision") or {})
    provision["period"] = {**(provision.get("period") or {}), "end": _now_instant()}
    body["provision"] = provision
    if withdrawal:
        body["extension"] = [*(body.get("extension") or []), *withdrawal]
    await repo.update("Consent", stored.res_id, body)


async def grant(engine: AsyncEngine, ctx: RequestContext, patient_id: str, kind: str,
                given_by: GivenBy = SELF) -> list[dict]:
    """Record the consent of `kind`, given by `given_by`, in every tenant holding the patient;
    returns [{tenant, consent, created}]. An active consent given the same way is kept, not
    duplicated; one given otherwise (by the guardian, when the patient now chooses) is
    superseded: set inactive, and the new choice recorded."""
    check_kind(kind)
    out = []
    for rec in await same_person(engine, ctx.tenant, patient_id):
        async with unit_of_work(engine, write=True) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=rec.tenant, subject=ctx.subject))
            existing = await active_consents(repo, rec.patient_id, kind)
            kept = [e for e in existing if _same_giver(e.resource, given_by, rec.tenant, rec.patient_id)]
            if kept:
                out.append({"tenant": rec.tenant, "consent": f"Consent/{kept[0].res_id}", "created": False})
                continue
            for old in existing:
                await _end(repo, old, None)
                await _audit(conn, ctx, rec.tenant, rec.patient_id, old.res_id, "superseded", kind, given_by)
            created = await repo.create(given_consent(kind, rec.patient_id, rec.tenant, given_by))
            await _audit(conn, ctx, rec.tenant, rec.patient_id, created.stored.res_id, "granted", kind, given_by)
            out.append({"tenant": rec.tenant, "consent": f"Consent/{created.stored.res_id}", "created": True})
    return out


def _withdrawal(given_by: GivenBy, tenant: str, patient_id: str) -> list[dict]:
    out = [{"url": WITHDRAWN_BY_URL, "valueReference": given_by.performer(tenant, patient_id)}]
    if given_by.desk:
        out += [{"url": WITHDRAWAL_RECORDED_BY_URL, "valueReference": given_by.desk.recorder()},
                {"url": WITHDRAWAL_SOURCE_URL, "valueAttachment": given_by.desk.attachment}]
    return out


async def revoke(engine: AsyncEngine, ctx: RequestContext, patient_id: str, kind: str,
                 given_by: GivenBy = SELF) -> list[dict]:
    """Set every active consent of `kind` of the person inactive, in every tenant holding them,
    noting who withdrew it (and the signed withdrawal form when recorded at the desk)."""
    check_kind(kind)
    out = []
    for rec in await same_person(engine, ctx.tenant, patient_id):
        async with unit_of_work(engine, write=True) as conn:
            repo = FhirRepository(conn, RequestContext(tenant=rec.tenant, subject=ctx.subject))
            found = await repo.search("Consent", [
                ("patient", f"Patient/{rec.patient_id}"), ("category", f"{KIND_SYSTEM}|{kind}"),
                ("status", "active"), ("_count", "50"),
            ])
            for s in found.matches:
                await _end(repo, s, _withdrawal(given_by, rec.tenant, rec.patient_id))
                await _audit(conn, ctx, rec.tenant, rec.patient_id, s.res_id, "revoked", kind, given_by)
                out.append({"tenant": rec.tenant, "consent": f"Consent/{s.res_id}"})
    return out


def _state(c: StoredResource | None) -> dict:
    if c is None:
        return {"active": False, "consent": None, "since": None, "given_by": None, "recorded_by": None, "form": None}
    source = c.resource.get("sourceAttachment") or None
    return {"active": True, "consent": f"Consent/{c.res_id}", "since": c.resource.get("dateTime"),
            "given_by": giver(c.resource), "recorded_by": recorded_by(c.resource),
            "form": {k: source.get(k) for k in ("url", "title", "contentType", "size")} if source else None}


async def status(engine: AsyncEngine, tenant: str, patient_id: str) -> dict[str, dict]:
    """{kind: {"active", "consent": "Consent/<id>" | None, "since", "given_by": {"role", "name"},
    "recorded_by": staff name | None, "form": {url, title, contentType, size} | None}} in `tenant`."""
    out = {}
    async with unit_of_work(engine, write=False) as conn:
        repo = FhirRepository(conn, RequestContext(tenant=tenant))
        for kind in KINDS:
            found = await active_consents(repo, patient_id, kind)
            out[kind] = _state(found[0] if found else None)
    return out
