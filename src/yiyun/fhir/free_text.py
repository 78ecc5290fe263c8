"""Resident ID numbers and mobile numbers written into free text: masked before they are stored.

Structured identifiers and telecoms are sealed by `yiyun.fhir.protection`; this module covers
what people type into narratives, notes and messages ("患者张三，身份证11010519491231002X，
电话13812345678"). On every write (`protection.seal_resource`, called by
`FhirRepository._persist`) each free-text element listed in `FREE_TEXT_PATHS` is searched and
every number found is replaced by its display mask, in the stored content, its history row
and the search index alike:

    身份证11010519491231002X，电话13812345678  →  身份证110105********002X，电话138****5678

The original is not kept anywhere (no ciphertext, no hash): a number belongs in
`Patient.identifier` / `telecom`, where it is sealed and searchable; free text is read by
everyone with access to the record (GB/T 35273-2020 个人信息安全规范 §6.2 de-identified
display; 《个人信息保护法》第五十一条 de-identification as a security measure).

What counts as a number, conservatively (a clinical note full of stars is worse than useless):

- an 18-character resident ID (GB 11643-1999): a province code of GB/T 2260, a real birth
  date not in the future and a correct ISO 7064 MOD 11-2 check character; not touching other
  letters or digits;
- a 15-digit first-generation ID only right after 身份证/身份证号(码)/公民身份号码/居民身份证,
  with a province code and a real 19YY birth date (a bare 15-digit number is as likely an order
  or specimen number);
- a mainland mobile number 1[3-9]X XXXX XXXX (blanks or dashes between the groups allowed,
  +86 / 0086 before it kept), not part of a longer run of digits or letters, not a decimal.

One pass over the serialized JSON (`may_hold`) decides whether a resource can hold a number at
all; only then is the resource walked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from yiyun.core import resident_id as _rid
from yiyun.core.logging import get_logger

log = get_logger("yiyun.protection")

RESIDENT_ID = "resident-id"  # the kinds of `yiyun.fhir.protection`
PHONE = "phone"
STAR = "*"
TEXT, XHTML = "text", "xhtml"


@dataclass(frozen=True)
class FreeTextPath:
    """A string element people write freely into. `path` is dotted element names from the
    resource (lists are walked through); `**` stands for any depth."""

    resource_type: str  # "*": every resource type
    path: str
    syntax: str  # TEXT (string, markdown) or XHTML (Narrative.div)
    reason: str


# Which elements are free text, and why. Coded elements (CodeableConcept.text, display) and
# identifiers are not: they repeat a code's meaning or are sealed by `protection`.
# Attachments (base64 `data`) are documents, not scanned.
FREE_TEXT_PATHS: tuple[FreeTextPath, ...] = (
    FreeTextPath("*", "**.text.div", XHTML,
                 "Narrative: the human-readable summary of any resource, contained resource or Composition "
                 "section (https://hl7.org/fhir/R4/narrative.html)"),
    FreeTextPath("*", "**.note.text", TEXT,
                 "Annotation.text: notes written by people, wherever a resource has `note` "
                 "(https://hl7.org/fhir/R4/datatypes.html#Annotation)"),
    FreeTextPath("CarePlan", "activity.progress.text", TEXT, "Annotation: progress notes of a care-plan activity"),
    FreeTextPath("Communication", "payload.contentString", TEXT,
                 "the messages of an online consultation between a patient and a doctor"),
    FreeTextPath("CommunicationRequest", "payload.contentString", TEXT, "a message to be sent"),
    FreeTextPath("Observation", "valueString", TEXT, "a result recorded as text (e.g. a nurse's observation)"),
    FreeTextPath("Observation", "component.valueString", TEXT, "a component result recorded as text"),
    FreeTextPath("ClinicalImpression", "summary", TEXT, "the clinician's written assessment"),
    FreeTextPath("ClinicalImpression", "description", TEXT, "why and how the assessment was made"),
    FreeTextPath("ClinicalImpression", "finding.basis", TEXT, "the written reasoning behind a finding"),
    FreeTextPath("DiagnosticReport", "conclusion", TEXT, "the report's written conclusion"),
    FreeTextPath("DocumentReference", "description", TEXT, "a human-readable description of a document"),
    FreeTextPath("QuestionnaireResponse", "**.answer.valueString", TEXT,
                 "answers typed by the patient (questionnaires, epidemic self-checks)"),
    FreeTextPath("Task", "description", TEXT, "what the task asks of a person, written freely"),
    FreeTextPath("Appointment", "description", TEXT, "the booking's description"),
    FreeTextPath("Appointment", "comment", TEXT, "comments on a booking"),
    FreeTextPath("Appointment", "patientInstruction", TEXT, "instructions written for the patient"),
    FreeTextPath("ServiceRequest", "patientInstruction", TEXT, "instructions written for the patient"),
    FreeTextPath("AllergyIntolerance", "reaction.description", TEXT, "the reaction as the patient told it"),
    FreeTextPath("ImagingStudy", "description", TEXT, "study description, often copied from the modality"),
    FreeTextPath("Goal", "description.text", TEXT, "the goal as agreed with the patient, usually uncoded"),
    FreeTextPath("DetectedIssue", "detail", TEXT, "the written detail of a detected issue"),
)

# The pre-check: a superset of every match below, 11 digits in a row or a mobile number in
# 3-4-4 groups, not after a decimal point (the long fractions of measured values). Rather than
# a regular expression (Python's engine steps through every byte, ~30 µs a kilobyte), the
# bytes are mapped to a skeleton (digit → 0; blank, dash and point kept; anything else → x)
# and searched for literal runs, both in C.
_SKELETON = bytes(
    ord("0") if 48 <= b <= 57 else b if b in b" -." else ord("x") for b in range(256)
)
_RUNS = (b"0" * 11, b"000 0000 0000", b"000-0000-0000")

# GB/T 2260 province-level codes: the first two digits of every address code.
_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82".split()
)
_ID18 = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{16}[0-9Xx](?![0-9A-Za-z])", re.ASCII)
_ID15 = re.compile(r"(?:居民身份证|公民身份号码|身份证)(?:号码|号)?[\s:：为是]{0,3}(?<!\d)(\d{15})(?![0-9A-Za-z])", re.ASCII)
_MOBILE = re.compile(
    r"(?<![0-9A-Za-z_])(?<!\d\.)((?:\+86|0086)[ -]?)?(1[3-9]\d)([ -]?)(\d{4})\3(\d{4})(?![0-9A-Za-z_])(?!\.\d)", re.ASCII
)
_MARKUP = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<[^<>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^<>\"']*)*>", re.S)
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")


# ------------------------------------------------------------------ recognising numbers
def is_resident_id18(value: str) -> bool:
    return value[:2] in _PROVINCES and _rid.is_valid(value, today=date.today())


def is_resident_id15(value: str) -> bool:
    """First-generation numbers: address code, birth date YYMMDD (all of the 1900s), sequence."""
    if value[:2] not in _PROVINCES:
        return False
    try:
        date(1900 + int(value[6:8]), int(value[8:10]), int(value[10:12]))
    except ValueError:
        return False
    return True


def _mask_id18(m: re.Match, counts: Counter) -> str:
    if not is_resident_id18(m.group(0)):
        return m.group(0)
    counts[RESIDENT_ID] += 1
    return _rid.mask(m.group(0).upper())


def _mask_id15(m: re.Match, counts: Counter) -> str:
    number = m.group(1)
    if not is_resident_id15(number):
        return m.group(0)
    counts[RESIDENT_ID] += 1
    start = m.start(1) - m.start(0)
    return m.group(0)[:start] + number[:6] + STAR * 6 + number[12:]


def _mask_mobile(m: re.Match, counts: Counter) -> str:
    counts[PHONE] += 1
    prefix, head, sep, _middle, tail = m.groups()
    return f"{prefix or ''}{head}{sep}{STAR * 4}{sep}{tail}"


def mask_text(text: str, counts: Counter) -> str:
    """`text` with every resident ID and mobile number masked; `counts` counts them by kind."""
    if not may_hold(text.encode(), json=False):
        return text
    text = _ID18.sub(lambda m: _mask_id18(m, counts), text)
    text = _ID15.sub(lambda m: _mask_id15(m, counts), text)
    return _MOBILE.sub(lambda m: _mask_mobile(m, counts), text)


def mask_xhtml(div: str, counts: Counter) -> str:
    """Masks numbers in an XHTML fragment's text, comments and attribute values (a
    `href="tel:…"` holds the number too); element and attribute names are left alone, and a
    digit only ever becomes `*`, so the markup stays well-formed."""
    out, pos = [], 0
    for m in _MARKUP.finditer(div):
        out.append(mask_text(div[pos:m.start()], counts))
        markup = m.group(0)
        if markup.startswith("<!"):
            out.append(mask_text(markup, counts))
        else:
            out.append(_QUOTED.sub(lambda q: mask_text(q.group(0), counts), markup))
        pos = m.end()
    out.append(mask_text(div[pos:], counts))
    return "".join(out)


# ------------------------------------------------------------------ walking resources
def _locate(node: Any, segs: tuple[str, ...], i: int, out: list[tuple[Any, Any]]) -> None:
    """Append (container, key) of every string at `segs[i:]` below `node`."""
    if type(node) is list:
        for item in node:
            _locate(item, segs, i, out)
        return
    if type(node) is not dict:
        return
    seg = segs[i]
    if seg == "**":
        _locate(node, segs, i + 1, out)
        for v in node.values():
            if type(v) is dict or type(v) is list:
                _locate(v, segs, i, out)
        return
    if seg not in node:
        return
    child = node[seg]
    if i < len(segs) - 1:
        _locate(child, segs, i + 1, out)
    elif type(child) is str:
        out.append((node, seg))
    elif type(child) is list:
        out.extend((child, j) for j, item in enumerate(child) if type(item) is str)


_SEGMENTS = {rule: tuple(rule.path.split(".")) for rule in FREE_TEXT_PATHS}
_FREE_TEXT_KEYS = frozenset(rule.path.rsplit(".", 1)[-1].encode() for rule in FREE_TEXT_PATHS)


def _embedded(resource: dict) -> Iterator[dict]:
    """The resource itself, its contained resources and a Bundle's entries (a document or a
    message is stored as one Bundle)."""
    stack = [resource]
    while stack:
        res = stack.pop()
        yield res
        for c in res.get("contained") or ():
            if type(c) is dict:
                stack.append(c)
        if res.get("resourceType") == "Bundle":
            for e in res.get("entry") or ():
                if type(e) is dict and type(e.get("resource")) is dict:
                    stack.append(e["resource"])


def free_text_elements(resource: dict) -> Iterator[tuple[Any, Any, FreeTextPath]]:
    """(container, key, rule) of every free-text string of `resource`, each once."""
    seen: set[tuple[int, Any]] = set()
    for res in _embedded(resource):
        res_type = res.get("resourceType")
        for rule in FREE_TEXT_PATHS:
            if rule.resource_type != "*" and rule.resource_type != res_type:
                continue
            found: list[tuple[Any, Any]] = []
            _locate(res, _SEGMENTS[rule], 0, found)
            for container, key in found:
                if (id(container), key) not in seen:
                    seen.add((id(container), key))
                    yield container, key, rule


@dataclass
class Masked:
    """What masking one resource found: values by kind and the rules' paths they were in."""

    counts: Counter = field(default_factory=Counter)
    paths: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _candidate(content: bytes, skeleton: bytes, at: int, json: bool) -> bool:
    """Whether the run of digits at `at` may be a number in free text: not the tail of a longer
    run or a decimal fraction, and not the whole start of a JSON string of an element that
    is never free text (`"code":"428191000124101"`, a structured `"value":"13812345678"`)."""
    before = skeleton[at - 1] if at else 0
    if before == 48 or (before == 46 and at > 1 and skeleton[at - 2] == 48):  # a digit; a "." after one
        return False
    if json and at > 3 and content[at - 3:at] == b'":"':
        key = content[content.rfind(b'"', 0, at - 3) + 1:at - 3]
        return key in _FREE_TEXT_KEYS
    return True


def may_hold(content: bytes, *, json: bool = True) -> bool:
    """The cheap test on a serialized resource (or, `json=False`, one text) before anything is
    walked (or masked)."""
    skeleton = content.translate(_SKELETON)
    for run in _RUNS:
        at = skeleton.find(run)
        while at != -1:
            if _candidate(content, skeleton, at, json):
                return True
            end = at + len(run)
            while end < len(skeleton) and skeleton[end] == 48:  # past the rest of this run of digits
                end += 1
            at = skeleton.find(run, end)
    return False


def mask_resource(resource: dict) -> Masked:
    """Masks, in place, every number in `resource`'s free text."""
    result = Masked()
    for container, key, rule in free_text_elements(resource):
        if not may_hold(container[key].encode(), json=False):
            continue  # most of a resource's text, and what made the whole resource a candidate lies elsewhere
        before = sum(result.counts.values())
        masker: Callable[[str, Counter], str] = mask_xhtml if rule.syntax == XHTML else mask_text
        container[key] = masker(container[key], result.counts)
        if sum(result.counts.values()) != before:
            result.paths.add(f"{rule.resource_type}.{rule.path}" if rule.resource_type != "*" else rule.path)
    return result


# ------------------------------------------------------------------ the write guard
_enabled = True
_totals: Counter = Counter()  # values masked by this process since start, by kind


def enable_guard(on: bool) -> None:
    """Switched by `YIYUN_MASK_FREE_TEXT` (the identity module installs it); on by default."""
    global _enabled
    _enabled = on


def guard_enabled() -> bool:
    return _enabled


def masked_totals() -> dict[str, int]:
    return dict(_totals)


def guard(body: dict, content: bytes) -> Masked | None:
    """Masks `body` (a parsed copy of `content` the caller owns) in place before it is stored;
    None when the guard is off or nothing was found. Logs counts and paths, never values."""
    if not _enabled or not may_hold(content):
        return None
    result = mask_resource(body)
    if not result.total:
        return None
    _totals.update(result.counts)
    log.info("free_text_masked", resource=f"{body.get('resourceType')}/{body.get('id')}",
             resident_ids=result.counts[RESIDENT_ID], phones=result.counts[PHONE], paths=sorted(result.paths))
    return result


# ------------------------------------------------------------------ data stored before the guard
@dataclass
class StoredHit:
    """One stored version holding numbers in its free text (never the numbers themselves)."""

    tenant: str
    reference: str  # "Type/id"
    version: int
    current: bool  # the resource's current row (else a history row)
    counts: dict[str, int]
    paths: list[str]

    def as_dict(self) -> dict:
        return {"tenant": self.tenant, "reference": self.reference, "version": self.version, "current": self.current,
                "resident_ids": self.counts.get(RESIDENT_ID, 0), "phones": self.counts.get(PHONE, 0),
                "paths": self.paths}


@dataclass
class StoredScan:
    resources: int = 0  # resources looked at
    rewritten: int = 0  # stored rows rewritten (with --rewrite): current rows and history rows
    hits: list[StoredHit] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"resources": self.resources, "versions": len(self.hits), "rewritten": self.rewritten,
                "resident_ids": sum(h.counts.get(RESIDENT_ID, 0) for h in self.hits),
                "phones": sum(h.counts.get(PHONE, 0) for h in self.hits),
                "hits": [h.as_dict() for h in self.hits]}


def _masked_content(content: bytes) -> tuple[bytes, dict, Masked] | None:
    if not may_hold(content):
        return None
    body = orjson.loads(content)
    if type(body) is not dict:
        return None
    result = mask_resource(body)
    if not result.total:
        return None
    return orjson.dumps(body), body, result


async def scan_stored_batch(
    conn: Any, report: StoredScan, *, after: int = 0, batch: int = 500, tenant: str | None = None,
    rewrite: bool = False,
) -> int | None:
    """Looks for numbers in the free text of up to `batch` stored resources after row id
    `after` (current rows and history), adding what it finds to `report`; with `rewrite`, masks
    them in place and rewrites the live versions' search index. Versions keep their number
    and `meta` (like key rotation, this corrects how a version is stored, not what it says).
    Returns the last row id seen, or None when the store is done. Runs in the caller's
    transaction."""
    from sqlalchemy import select, update

    from yiyun.fhir.protection import index_view
    from yiyun.fhir.search.index import write_index
    from yiyun.fhir.tables import resource as r
    from yiyun.fhir.tables import resource_version as v

    q = select(r.c.rid, r.c.tenant, r.c.res_type, r.c.res_id, r.c.version_id, r.c.deleted, r.c.content)
    if tenant is not None:
        q = q.where(r.c.tenant == tenant)
    rows = (await conn.execute(q.where(r.c.rid > after).order_by(r.c.rid).limit(batch))).all()
    report.resources += len(rows)
    by_rid = {row.rid: row for row in rows}
    current: set[int] = set()
    live = []
    for row in rows:
        out = _masked_content(bytes(row.content))
        if out is None:
            continue
        report.hits.append(_hit(row, row.version_id, True, out[2]))
        current.add(row.rid)
        if rewrite:
            await conn.execute(update(r).where(r.c.rid == row.rid).values(content=out[0]))
            report.rewritten += 1
            if not row.deleted:
                live.append((row.rid, row.tenant, index_view(out[1])))
    if by_rid:
        versions = (await conn.execute(
            select(v.c.rid, v.c.version_id, v.c.content).where(v.c.rid.in_(list(by_rid))).order_by(v.c.rid, v.c.version_id)
        )).all()
        for ver in versions:
            out = _masked_content(bytes(ver.content))
            if out is None:
                continue
            row = by_rid[ver.rid]
            if not (ver.rid in current and row.version_id == ver.version_id):  # the current row's copy: listed once
                report.hits.append(_hit(row, ver.version_id, False, out[2]))
            if rewrite:
                await conn.execute(
                    update(v).where(v.c.rid == ver.rid, v.c.version_id == ver.version_id).values(content=out[0])
                )
                report.rewritten += 1
    if live:
        await write_index(conn, live, replace=True)
    return rows[-1].rid if len(rows) == batch else None


def _hit(row: Any, version: int, current: bool, result: Masked) -> StoredHit:
    return StoredHit(row.tenant, f"{row.res_type}/{row.res_id}", version, current, dict(result.counts),
                     sorted(result.paths))


async def scan_stored(engine: Any, *, tenant: str | None = None, rewrite: bool = False, batch: int = 500) -> StoredScan:
    """`yiyun security scan --free-text [--rewrite]`: the whole store (or one tenant), one
    transaction per batch. Logs the totals, never the values."""
    from yiyun.core.db import unit_of_work

    report, after = StoredScan(), 0
    while after is not None:
        async with unit_of_work(engine, write=rewrite) as conn:
            after = await scan_stored_batch(conn, report, after=after, batch=batch, tenant=tenant, rewrite=rewrite)
    totals = report.as_dict()
    log.info("free_text_scan", tenant=tenant, resources=report.resources, versions=totals["versions"],
             resident_ids=totals["resident_ids"], phones=totals["phones"], rewritten=report.rewritten)
    return report


__all__ = [
    "FREE_TEXT_PATHS", "FreeTextPath", "Masked", "StoredHit", "StoredScan", "enable_guard", "free_text_elements",
    "guard", "guard_enabled", "is_resident_id15", "is_resident_id18", "mask_resource", "mask_text", "mask_xhtml",
    "masked_totals", "may_hold", "scan_stored", "scan_stored_batch",
]
