"""De-identification of FHIR R4 resources for exports, research and analytics.

`deidentify(resources, salt=...)` returns copies with the direct identifiers of the
HIPAA Safe Harbor method (45 CFR §164.514(b)(2)(i), the 18 identifiers) removed or
replaced, following the techniques of GB/T 37964-2019 个人信息去标识化指南 (§A.2
suppression, §A.3 pseudonymisation, §A.4 generalisation, §A.5 randomisation of dates):

- names (HumanName anywhere), telecom, photos, Patient/Organization contacts, the
  narrative (`text.div`), `meta.source`/`versionId`/`lastUpdated` are suppressed;
  `Reference.display` is dropped where a reference or identifier remains;
- identifier values, resource ids, references (relative, absolute, `urn:uuid:`,
  conditional) and DICOM UIDs become keyed pseudonyms (HMAC-SHA256 with the salt), so
  references between the exported resources still resolve and the same input always
  gives the same output for the same salt;
- addresses keep country, state and (by default) city: lines, district, text, geolocation
  and address extensions are removed and postal codes cut to their first three digits
  (Safe Harbor §164.514(b)(2)(i)(B); the seventeen three-digit ZIP areas of fewer than
  20,000 people become 000). `geo_level="state"` drops the city too (strict Safe Harbor);
- every date of a patient (in all of that patient's resources, and dates written in their
  free text) moves by one offset of 1-365 days, earlier or later, derived from the salt and
  the patient, so intervals between that patient's events are kept exactly;
- patients aged 90 or over (at death, or on `as_of`) get only a birth year, the same for
  everyone in the 90+ group (Safe Harbor §164.514(b)(2)(i)(C)); stated ages (`onsetAge`
  etc.) above 89 become ">= 90";
- all other free text (Annotation.text, description, comment, CodeableConcept.text,
  valueString, text attachments …) is scrubbed (`scrub.TextScrubber`) of the data set's own
  names, identifiers, telecoms and address parts and of patterns of ID numbers, phones,
  e-mails, URLs and addresses; non-text attachments and binary values are dropped;
- device identifiers and serial numbers (UDI carrier, serialNumber) are dropped.

The salt is a secret (≥ 16 bytes): with it, pseudonyms can be recomputed from real
identifiers. Use one salt per export recipient so that two recipients cannot link their
data sets (GB/T 37964-2019 §5.3 on linkability).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson

from yiyun.identity.protection.scrub import ADDRESS, ID, NAME, PHONE, KnownValues, TextScrubber

__all__ = ["deidentify", "deidentify_bundle", "date_offset_days"]

_DROP = object()

# Three-digit ZIP areas with 20,000 or fewer people (2000 census), Safe Harbor guidance §2.4.
_RESTRICTED_ZIP3 = frozenset("036 059 063 102 203 556 692 790 821 823 830 831 878 879 884 890 893".split())

# Extensions that name a person or pinpoint a place or a birth moment. (patient-birthPlace
# stays: its valueAddress is generalised like any address.)
_EXT_DROP = frozenset({
    "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
    "http://hl7.org/fhir/StructureDefinition/geolocation",
    "http://hl7.org/fhir/StructureDefinition/humanname-own-name",
    "http://hl7.org/fhir/StructureDefinition/humanname-partner-name",
    "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family",
    "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
})

# Elements whose content identifies a person or a device and is removed outright.
_DROP_KEYS = frozenset({
    "telecom", "photo", "position", "udiCarrier", "serialNumber", "distinctIdentifier",
    "valueBase64Binary", "valueHumanName", "valueContactPoint", "signature", "valueSignature",
})
# String elements that carry codes, URIs or machine values, never free text.
_KEEP_KEYS = frozenset({
    "system", "code", "version", "url", "use", "status", "gender", "resourceType", "unit", "language",
    "contentType", "mode", "intent", "priority", "kind", "currency", "method", "periodUnit", "durationUnit",
    "outcome", "lifecycleStatus", "criticality", "category", "comparator", "modality", "sopClass", "type",
    "profile", "valueCode", "valueUri", "valueUrl", "valueCanonical", "valueId", "valueOid", "valueUuid",
    "valueBoolean", "severity", "operator", "dayOfWeek", "when", "format", "implicitRules", "linkId",
    "definition", "instantiatesCanonical", "instantiatesUri", "questionnaire", "policy", "ifNoneExist",
    "etag", "fhirVersion", "location",
})
_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_YEAR_KEYS = frozenset({"start", "end", "issued", "recorded", "created", "authoredOn", "started", "birthDate"})
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REL_REF = re.compile(r"^(?:(?:https?://[^?#]*?/)?)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")
_PERSON_TYPES = frozenset({"Patient", "Person", "RelatedPerson", "Practitioner"})
_PATIENT_LINK_KEYS = ("subject", "patient", "beneficiary", "individual", "who", "focus")
_AGE_UNITS = {"a", "yr", "year", "years", "岁"}
_AGE_LOINC = {"30525-0", "21612-7", "29553-5"}  # Age; Age - Reported; Age calculated


def _hmac(salt: bytes, label: str, value: str) -> bytes:
    return hmac.new(salt, f"{label}\x00{value}".encode("utf-8"), hashlib.sha256).digest()


def date_offset_days(salt: bytes, patient_key: str) -> int:
    """The patient's date offset: ±1..365 days, never 0, the same for every resource."""
    h = _hmac(salt, "date-shift", patient_key)
    magnitude = 1 + int.from_bytes(h[:4], "big") % 365
    return -magnitude if h[4] & 1 else magnitude


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    m = _DATETIME.match(value)
    if not m:
        return None
    y, mo, d = int(m[1]), int(m[2] or 7), int(m[3] or (2 if not m[2] else 15))
    try:
        return date(y, mo, d)
    except ValueError:
        return None


def shift_fhir_date(value: str, days: int) -> str | None:
    """A FHIR date/dateTime/instant moved by `days`, keeping its precision, time and zone."""
    m = _DATETIME.match(value)
    if not m:
        return None
    try:
        if m[3]:
            d = date(int(m[1]), int(m[2]), int(m[3])) + timedelta(days=days)
            return d.isoformat() + (m[4] or "")
        if m[2]:  # month precision: move the middle of the month
            d = date(int(m[1]), int(m[2]), 15) + timedelta(days=days)
            return f"{d.year:04d}-{d.month:02d}"
        d = date(int(m[1]), 7, 2) + timedelta(days=days)  # year precision: move the middle of the year
        return f"{d.year:04d}"
    except (ValueError, OverflowError):
        return None  # not a calendar date: left to the text scrubber


def _age_years(birth: date, at: date) -> int:
    return at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))


@dataclass
class _Patient:
    key: str
    offset: int
    birth_bucket: str | None = None


@dataclass
class _Context:
    salt: bytes
    geo_level: str
    as_of: date
    types_by_id: dict[str, str] = field(default_factory=dict)
    patients: dict[str, _Patient] = field(default_factory=dict)
    scrubber: TextScrubber = field(default_factory=TextScrubber)
    global_offset: int = 0


class _Deidentifier:
    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.days = ctx.global_offset
        self.patient: _Patient | None = None

    # ---------------------------------------------------------- pseudonyms
    def pid(self, res_id: str) -> str:
        h = _hmac(self.ctx.salt, "id", res_id)
        if _UUID.match(res_id):
            return str(uuid.UUID(bytes=h[:16], version=4))
        return h[:16].hex()

    def pidentifier(self, system: str | None, value: str) -> str:
        return _hmac(self.ctx.salt, "identifier", f"{system or ''}|{value}")[:16].hex()

    def puid(self, uid: str) -> str:
        """DICOM UIDs become UUID-derived OIDs under 2.25 (DICOM PS3.5 §B.2)."""
        return "2.25." + str(int.from_bytes(_hmac(self.ctx.salt, "uid", uid)[:16], "big"))

    def relink(self, ref: str) -> str:
        if ref.startswith("#"):
            return ref
        if ref.startswith("urn:uuid:"):
            return "urn:uuid:" + self.pid(ref[9:])
        m = _REL_REF.match(ref)
        if m:
            return f"{m[1]}/{self.pid(m[2])}"
        if "?" in ref and re.match(r"^[A-Z][A-Za-z]+\?", ref):  # conditional reference
            return f"{ref.split('?', 1)[0]}/{self.pid(ref)}"
        return "urn:uuid:" + str(uuid.UUID(bytes=_hmac(self.ctx.salt, "ref", ref)[:16], version=4))

    # ---------------------------------------------------------- resources
    def resource(self, res: dict, *, contained: bool = False) -> dict:
        saved = (self.days, self.patient)
        if not contained:
            self.patient = self._owner(res)
            self.days = self.patient.offset if self.patient else self.ctx.global_offset
        try:
            out: dict = {}
            rtype = res.get("resourceType")
            for key, value in res.items():
                if key == "resourceType":
                    out[key] = value
                elif key == "id":
                    out[key] = value if contained else self.pid(str(value))
                elif key == "text" and isinstance(value, dict):
                    continue  # narrative: free XHTML, suppressed rather than parsed
                elif key == "meta":
                    meta = {k: v for k, v in value.items() if k in ("profile", "security", "tag")}
                    if meta:
                        out[key] = meta
                elif key == "contained":
                    out[key] = [self.resource(c, contained=True) for c in value if isinstance(c, dict)]
                elif key == "birthDate" and rtype == "Patient" and self.patient and self.patient.birth_bucket:
                    out[key] = self.patient.birth_bucket
                elif key in ("name", "contact") and rtype in _PERSON_TYPES | {"Organization"}:
                    if key == "name" and rtype == "Organization":
                        out[key] = self.text(value)
                    continue
                elif key == "valueQuantity" and rtype == "Observation" and _is_age_observation(res):
                    out[key] = self.age(value)
                else:
                    v = self.value(key, value)
                    if v is not _DROP:
                        out[key] = v
            return out
        finally:
            if not contained:
                self.days, self.patient = saved

    def _owner(self, res: dict) -> _Patient | None:
        if res.get("resourceType") == "Patient" and "id" in res:
            return self.ctx.patients.get(str(res["id"]))
        for key in _PATIENT_LINK_KEYS:
            for ref in _references(res.get(key)):
                pid = _patient_id(ref, self.ctx.types_by_id)
                if pid and pid in self.ctx.patients:
                    return self.ctx.patients[pid]
        for ref in _references(res):
            pid = _patient_id(ref, self.ctx.types_by_id)
            if pid and pid in self.ctx.patients:
                return self.ctx.patients[pid]
        return None

    # ---------------------------------------------------------- values
    def value(self, key: str, value: Any) -> Any:
        if key in _DROP_KEYS:
            return _DROP
        if isinstance(value, list):
            items = [self.value(key, v) for v in value]
            items = [v for v in items if v is not _DROP]
            return items or _DROP
        if isinstance(value, dict):
            return self.element(key, value)
        if isinstance(value, str):
            return self.string(key, value)
        return value

    def element(self, key: str, d: dict) -> Any:
        if "resourceType" in d:
            return self.resource(d)
        if key == "name" and _is_human_name(d):
            return _DROP
        if key == "contact" and any(k in d for k in ("name", "telecom", "address")):
            return _DROP
        if key in ("address", "valueAddress") or (key == "birthPlace"):
            return self.address(d)
        if key in ("identifier", "valueIdentifier"):
            return self.identifier(d)
        if key in ("extension", "modifierExtension"):
            return self.extension(d)
        if isinstance(d.get("reference"), str) or (key in _REFERENCE_KEYS and ("display" in d or "identifier" in d)):
            return self.reference(d)
        if _is_attachment(key, d):
            return self.attachment(d)
        if key.endswith("Age") and key != "Age" and "value" in d:
            return self.age(d)
        return self.generic(d)

    def generic(self, d: dict) -> Any:
        out = {}
        for k, v in d.items():
            nv = self.value(k, v)
            if nv is not _DROP:
                out[k] = nv
        return out or _DROP

    def string(self, key: str, s: str) -> Any:
        if key in _KEEP_KEYS or key == "id":
            return s
        if key == "uid":
            return self.puid(s)
        if key == "fullUrl":
            return self.relink(s)
        if _DATETIME.match(s) and ("-" in s or key in _YEAR_KEYS or "date" in key.lower()):
            shifted = shift_fhir_date(s, self.days)
            if shifted is not None:
                return shifted
        return self.text(s)

    def text(self, s: str) -> str:
        return self.ctx.scrubber.scrub(s, shift_days=self.days)

    # ---------------------------------------------------------- datatypes
    def identifier(self, d: dict) -> Any:
        out = {}
        for k, v in d.items():
            if k == "value" and isinstance(v, str):
                out[k] = self.pidentifier(d.get("system"), v)
            elif k == "assigner":
                r = self.reference(v) if isinstance(v, dict) else _DROP
                if r is not _DROP:
                    out[k] = r
            else:
                nv = self.value(k, v)
                if nv is not _DROP:
                    out[k] = nv
        return out or _DROP

    def reference(self, d: dict) -> Any:
        out = {}
        keeps_target = isinstance(d.get("reference"), str) or isinstance(d.get("identifier"), dict)
        for k, v in d.items():
            if k == "reference" and isinstance(v, str):
                out[k] = self.relink(v)
            elif k == "identifier" and isinstance(v, dict):
                ident = self.identifier(v)
                if ident is not _DROP:
                    out[k] = ident
            elif k == "display":
                if not keeps_target and isinstance(v, str):
                    out[k] = self.text(v)
            elif k == "type":
                out[k] = v
            else:
                nv = self.value(k, v)
                if nv is not _DROP:
                    out[k] = nv
        return out or _DROP

    def address(self, d: dict) -> Any:
        level = self.ctx.geo_level
        out: dict = {}
        for k in ("use", "type", "city", "state", "country", "postalCode", "period"):
            if k not in d:
                continue
            if k == "city" and level != "city":
                continue
            if k == "state" and level == "country":
                continue
            if k == "postalCode":
                digits = re.sub(r"\D", "", str(d[k]))
                if len(digits) >= 3:
                    out[k] = "000" if digits[:3] in _RESTRICTED_ZIP3 else digits[:3]
                continue
            if k == "period":
                p = self.value("period", d[k])
                if p is not _DROP:
                    out[k] = p
                continue
            out[k] = d[k]
        return out or _DROP

    def extension(self, d: dict) -> Any:
        url = d.get("url")
        if url in _EXT_DROP:
            return _DROP
        out = {}
        for k, v in d.items():
            nv = v if k == "url" else self.value(k, v)
            if nv is not _DROP:
                out[k] = nv
        # ext-1: an extension keeps either a value or nested extensions, else it goes.
        if not any(k.startswith("value") or k == "extension" for k in out):
            return _DROP
        return out

    def attachment(self, d: dict) -> Any:
        out: dict = {}
        ctype = str(d.get("contentType", ""))
        for k, v in d.items():
            if k in ("contentType", "language"):
                out[k] = v
            elif k == "data":
                text = _decode_text(v, ctype)
                if text is not None:
                    out[k] = base64.b64encode(self.text(text).encode("utf-8")).decode("ascii")
            elif k in ("url", "hash", "size"):
                continue  # the URL points at unscrubbed content; hash and size describe the original
            elif k == "title":
                out[k] = self.text(v)
            elif k == "creation":
                out[k] = shift_fhir_date(v, self.days) or self.text(v)
            else:
                nv = self.value(k, v)
                if nv is not _DROP:
                    out[k] = nv
        return out or _DROP

    def age(self, d: dict) -> Any:
        out = self.generic(d)
        if out is _DROP:
            return out
        unit = str(d.get("code") or d.get("unit") or "").lower()
        value = d.get("value")
        if unit in _AGE_UNITS and isinstance(value, (int, float)) and value > 89:
            out["value"] = 90
            out["comparator"] = ">="
        return out


_REFERENCE_KEYS = frozenset({
    "subject", "patient", "encounter", "performer", "requester", "author", "recorder", "asserter", "source",
    "coverage", "payor", "insurer", "provider", "organization", "assigner", "who", "onBehalfOf", "individual",
    "serviceProvider", "managingOrganization", "generalPractitioner", "location", "custodian", "beneficiary",
    "policyHolder", "subscriber", "actor", "agent", "focus", "basedOn", "partOf", "reasonReference", "result",
})


def _is_human_name(d: dict) -> bool:
    return any(k in d for k in ("family", "given", "text", "prefix", "suffix")) and not any(
        k in d for k in ("reference", "coding", "value", "resourceType")
    )


def _is_attachment(key: str, d: dict) -> bool:
    if key in ("attachment", "presentedForm", "valueAttachment", "contentAttachment", "photo", "content"):
        return any(k in d for k in ("contentType", "data", "url", "title", "hash", "size", "creation"))
    return "contentType" in d and any(k in d for k in ("data", "url", "hash", "size"))


def _is_age_observation(res: dict) -> bool:
    codings = (res.get("code") or {}).get("coding") or []
    return any(c.get("system") == "http://loinc.org" and c.get("code") in _AGE_LOINC for c in codings if isinstance(c, dict))


def _decode_text(data: Any, content_type: str) -> str | None:
    ct = content_type.split(";")[0].strip().lower()
    if not isinstance(data, str) or not (ct.startswith("text/") or ct in ("application/json", "application/xml")):
        return None
    try:
        return base64.b64decode(data, validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def _references(value: Any):
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            yield ref
        for k, v in value.items():
            if k != "reference" and k != "contained":
                yield from _references(v)
    elif isinstance(value, list):
        for v in value:
            yield from _references(v)


def _patient_id(ref: str, types_by_id: dict[str, str]) -> str | None:
    if ref.startswith("urn:uuid:"):
        rid = ref[9:]
        return rid if types_by_id.get(rid) == "Patient" else None
    m = _REL_REF.match(ref)
    if m and m[1] == "Patient":
        return m[2]
    return None


# ------------------------------------------------------------------ known values
def _collect_known(res: dict, known: KnownValues) -> None:
    """Names, identifiers, telecoms and address parts of the people in `res`."""
    rtype = res.get("resourceType")
    people = rtype in _PERSON_TYPES
    _walk_known(res, known, people=people, key=None)
    if people and isinstance(res.get("id"), str):
        known.add(res["id"], ID)


def _walk_known(node: Any, known: KnownValues, *, people: bool, key: str | None) -> None:
    if isinstance(node, list):
        for item in node:
            _walk_known(item, known, people=people, key=key)
        return
    if not isinstance(node, dict):
        return
    if key in ("name", "valueHumanName") and _is_human_name(node):
        _add_name(node, known)
    elif key == "telecom" or key == "valueContactPoint":
        value = node.get("value")
        known.add(value, PHONE if node.get("system") in ("phone", "fax", "sms", "pager") else ID)
        if isinstance(value, str) and node.get("system") in ("phone", "fax", "sms"):
            digits = re.sub(r"\D", "", value)
            if len(digits) >= 7:
                known.add(digits, PHONE)
    elif key in ("address", "valueAddress"):
        for line in node.get("line") or []:
            known.add(line, ADDRESS)
        for k in ("text", "district"):
            known.add(node.get(k), ADDRESS)
        pc = node.get("postalCode")
        if isinstance(pc, str) and len(re.sub(r"\D", "", pc)) >= 5:
            known.add(pc, ADDRESS)
    elif key == "identifier" and people:
        known.add(node.get("value"), ID)
    elif key == "extension" and node.get("url") == "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName":
        known.add(node.get("valueString"), NAME)
    for k, v in node.items():
        if isinstance(v, (dict, list)):
            _walk_known(v, known, people=people, key=k)


def _add_name(name: dict, known: KnownValues) -> None:
    family = name.get("family") if isinstance(name.get("family"), str) else ""
    given = [g for g in name.get("given") or [] if isinstance(g, str)]
    known.add(name.get("text"), NAME)
    han = bool(re.match(r"[\u3400-\u9fff]", family or (given[0] if given else "")))
    if family and (not han or len(family) >= 2):
        known.add(family, NAME)  # a single-character surname alone is not matched
    for g in given:
        known.add(g, NAME)
    if family and given:
        joined_given = "".join(given) if han else " ".join(given)
        if han:
            known.add(family + joined_given, NAME)
        else:
            known.add(f"{joined_given} {family}", NAME)
            known.add(f"{family}, {joined_given}", NAME)
            known.add(f"{family} {joined_given}", NAME)


# ------------------------------------------------------------------ entry points
def _flatten(resources: list[dict]):
    for r in resources:
        if not isinstance(r, dict):
            continue
        yield r
        if r.get("resourceType") == "Bundle":
            yield from _flatten([e.get("resource") for e in r.get("entry") or [] if isinstance(e, dict)])
        for c in r.get("contained") or []:
            if isinstance(c, dict):
                yield c


def _prepare(resources: list[dict], salt: bytes, geo_level: str, as_of: date | None) -> _Context:
    if not isinstance(salt, (bytes, bytearray)) or len(salt) < 16:
        raise ValueError("the de-identification salt must be at least 16 secret bytes")
    if geo_level not in ("city", "state", "country"):
        raise ValueError("geo_level is city, state or country")
    ctx = _Context(salt=bytes(salt), geo_level=geo_level, as_of=as_of or datetime.now(timezone.utc).date())
    ctx.global_offset = date_offset_days(ctx.salt, "*")
    known = KnownValues()
    for r in _flatten(resources):
        rid, rtype = r.get("id"), r.get("resourceType")
        if isinstance(rid, str) and isinstance(rtype, str):
            ctx.types_by_id.setdefault(rid, rtype)
        _collect_known(r, known)
        if rtype == "Patient" and isinstance(rid, str):
            ctx.patients[rid] = _patient_profile(r, ctx)
    ctx.scrubber = TextScrubber(known)
    return ctx


def _patient_profile(patient: dict, ctx: _Context) -> _Patient:
    key = f"Patient/{patient['id']}"
    offset = date_offset_days(ctx.salt, key)
    p = _Patient(key=key, offset=offset)
    birth = _parse_date(patient.get("birthDate"))
    died = _parse_date(patient.get("deceasedDateTime"))
    at = died or ctx.as_of
    if birth and _age_years(birth, at) >= 90:
        # Safe Harbor: one category "90 or older"; the birth year of its youngest member.
        ref_year = (at + timedelta(days=offset)).year if died else ctx.as_of.year
        p.birth_bucket = f"{ref_year - 90:04d}"
    return p


def deidentify(
    resources: list[dict], *, salt: bytes, geo_level: str = "city", as_of: date | None = None
) -> list[dict]:
    """De-identified copies of `resources` (see the module documentation for the rules).

    Resources of one patient should be passed together (with the Patient) so that its
    dates move by the same offset and its identifiers are scrubbed from all free text.
    """
    ctx = _prepare(resources, salt, geo_level, as_of)
    worker = _Deidentifier(ctx)
    out = []
    for r in resources:
        copy = orjson.loads(orjson.dumps(r))
        out.append(worker.resource(copy))
    return out


def deidentify_bundle(bundle: dict, *, salt: bytes, geo_level: str = "city", as_of: date | None = None) -> dict:
    """A Bundle with each entry's resource de-identified and `fullUrl`s re-linked."""
    return deidentify([bundle], salt=salt, geo_level=geo_level, as_of=as_of)[0]
