"""Protected values in the FHIR store: resident ID numbers and phone numbers at rest.

The store never holds these values in plain text. On every write (`FhirRepository._persist`:
REST, Bundles, loaders, in-process services) each protected element is rewritten as

    {"system": "urn:oid:2.16.156.10011.1.3", "value": "110105********1234",
     "_value": {"extension": [{"url": SEALED_URL, "valueString": "v1.<key id>.<ciphertext>"}]}}

— the display mask in `value` and the AES-256-GCM ciphertext in a FHIR primitive extension
(https://hl7.org/fhir/R4/json.html#primitive), so the stored JSON stays valid FHIR. The
search index holds a keyed blind index (HMAC) in place of the value, so exact token
searches (`Patient?identifier=<system>|<value>`, `Patient?phone=<number>`) still match:
the search engine turns the searched value into its blind indexes (`search_codes`). The
protector normalises a value before indexing it, on writes and searches alike (a resident
ID's check character in either case, a phone number's blanks, dashes and +86), so a number
matches however it was typed; see docs/protection.md for rows indexed before that.

On every read the repository reveals the plain value to callers the installed protector
says may see it (`Disclosure`); everyone else gets the stored mask (and the ciphertext,
which lets them write the resource back unchanged without ever seeing the value).

The same step masks, for good, resident ID and mobile numbers written into free text
(narratives, notes, messages: `yiyun.fhir.free_text`), keys or no keys.

`yiyun.fhir` knows nothing of keys: the identity module installs a `ValueProtector`
(`install_protector`). Without one nothing is sealed and every value reads as stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from yiyun.fhir import free_text

SEALED_URL = "https://yiyun.example.cn/fhir/StructureDefinition/sealed-value"
_SEALED_MARK = SEALED_URL.encode()

# Identifier systems whose values are protected, and the protection kind of each.
# 2.16.156.10011.1.3 is the OID the national health-information standards give the resident
# identity card number (居民身份证号码, WS 363 / WS 364 data element identifiers); the .1.1
# form appears in some provincial platforms' documents.
RESIDENT_ID = "resident-id"
PHONE = "phone"
IDENTIFIER_SYSTEMS: dict[str, str] = {
    "urn:oid:2.16.156.10011.1.3": RESIDENT_ID,
    "urn:oid:2.16.156.10011.1.1": RESIDENT_ID,
}
# ContactPoint.system codes (https://hl7.org/fhir/R4/valueset-contact-point-system.html)
# whose values are telephone numbers.
TELECOM_SYSTEMS: dict[str, str] = {"phone": PHONE, "sms": PHONE}
# Resource types whose telecom belongs to a person (an organisation's switchboard is public).
PERSON_TYPES = frozenset({"Patient", "RelatedPerson", "Person", "Practitioner", "PractitionerRole"})
# Search parameters that may compare protected values, besides `<reference>:identifier`.
IDENTIFIER_PARAMS = frozenset({"identifier"})
TELECOM_PARAMS = frozenset({"telecom", "phone"})


@dataclass(frozen=True)
class Disclosure:
    """Which callers' reads show protected values in full."""

    full: bool = False
    own: frozenset[str] = frozenset()  # "Type/id" of resources shown in full (the caller's own)

    def shows(self, res_type: str, res_id: str) -> bool:
        return self.full or f"{res_type}/{res_id}" in self.own

    def as_dict(self) -> dict:
        return {"full": self.full, "own": sorted(self.own)}

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "Disclosure":
        if not data:
            return FULL
        return cls(bool(data.get("full")), frozenset(data.get("own") or ()))


FULL = Disclosure(full=True)


class ValueProtector(Protocol):
    """Keys and decisions for protected values (installed by the identity module)."""

    def seal(self, kind: str, value: str) -> str:
        """Ciphertext of `value` under the current key."""

    def open(self, kind: str, sealed: str) -> str:
        """The plain value; raises on any doubt (unknown key, altered text)."""

    def is_current(self, sealed: str) -> bool:
        """Whether `sealed` is under the current key."""

    def index_value(self, kind: str, value: str) -> str:
        """Blind index under the current key (what the search index stores)."""

    def index_values(self, kind: str, value: str) -> list[str]:
        """Blind indexes under every key of the ring, current first (what a search looks for);
        both compare values normalised the protector's way (case of a resident ID's check
        character, blanks, dashes and +86 of phone numbers)."""

    def mask(self, kind: str, value: str) -> str:
        """The display form for people who do not need the value."""

    def disclosure(self, ctx: Any) -> Disclosure:
        """Whose protected values this caller sees in full."""


_protector: ValueProtector | None = None


def install_protector(protector: ValueProtector | None) -> None:
    """Called at start-up (the identity module installs its key-ring protector)."""
    global _protector
    _protector = protector


def current_protector() -> ValueProtector | None:
    return _protector


class ProtectionError(ValueError):
    """A sealed value in a request or in the store that does not open."""


# ------------------------------------------------------------------ walking resources
def _seal_of(node: dict) -> tuple[str | None, dict | None]:
    ext = node.get("_value")
    if isinstance(ext, dict):
        for e in ext.get("extension") or ():
            if isinstance(e, dict) and e.get("url") == SEALED_URL and isinstance(e.get("valueString"), str):
                return e["valueString"], ext
    return None, ext if isinstance(ext, dict) else None


def _without_seal(ext: dict | None) -> dict | None:
    """`_value` without our extension (None when nothing else is left)."""
    if ext is None:
        return None
    others = [e for e in ext.get("extension") or () if not (isinstance(e, dict) and e.get("url") == SEALED_URL)]
    rest = {k: v for k, v in ext.items() if k != "extension"}
    if others:
        rest["extension"] = others
    return rest or None


def _elements(node: Any, telecom: bool) -> list[tuple[dict, str]]:
    """Every (dict, kind) in `node` that holds a protected value, in a fixed order (two
    copies of one resource give their elements in the same order)."""
    out: list[tuple[dict, str]] = []
    stack = [node]
    ids, phones = IDENTIFIER_SYSTEMS, TELECOM_SYSTEMS
    while stack:
        n = stack.pop()
        if type(n) is dict:
            system = n.get("system")
            if type(system) is str and ("value" in n or "_value" in n):
                kind = ids.get(system) or (phones.get(system) if telecom else None)
                if kind is not None:
                    out.append((n, kind))
            for v in n.values():
                if type(v) is dict or type(v) is list:
                    stack.append(v)
        else:
            for v in n:
                if type(v) is dict or type(v) is list:
                    stack.append(v)
    return out


def _may_hold(res_type: str, content: bytes) -> bool:
    """A cheap test on the bytes before anything is parsed."""
    if _SEALED_MARK in content:
        return True
    for system in IDENTIFIER_SYSTEMS:
        if system.encode() in content:
            return True
    if res_type in PERSON_TYPES:
        return any(b'"' + s.encode() + b'"' in content for s in TELECOM_SYSTEMS)
    return False


# ------------------------------------------------------------------ writes
@dataclass
class Sealed:
    stored: dict  # the content to store: masks and ciphertext
    indexed: dict  # what the search index is built from: blind indexes as the values


def _mask_free_text(content: bytes) -> dict | None:
    """A copy of the resource with numbers in its free text masked, or None when it has none
    (`yiyun.fhir.free_text`: the narrative, notes, messages)."""
    if not free_text.guard_enabled() or not free_text.may_hold(content):
        return None
    body = orjson.loads(content)
    return body if free_text.guard(body, content) is not None else None


def seal_resource(resource: dict, content: bytes | None = None) -> Sealed | None:
    """The stored and indexed forms of `resource`, or None when it holds no protected value
    and no number in its free text (which is masked for good, see `yiyun.fhir.free_text`).

    A value that arrives with our ciphertext and its own mask (a masked read written back)
    keeps the sealed value; a changed value is sealed anew. Raises ProtectionError when a
    ciphertext does not open."""
    content = orjson.dumps(resource) if content is None else content
    masked = _mask_free_text(content)
    if masked is not None:
        content = orjson.dumps(masked)
    p = _protector
    res_type = resource.get("resourceType", "")
    if p is None or not _may_hold(res_type, content):
        return None if masked is None else Sealed(masked, masked)
    telecom = res_type in PERSON_TYPES
    stored = masked if masked is not None else orjson.loads(content)
    indexed = orjson.loads(content)
    found = masked is not None
    for (node, kind), (inode, _) in zip(_elements(stored, telecom), _elements(indexed, telecom), strict=True):
        token, ext = _seal_of(node)
        value = node.get("value")
        plain: str | None
        if token is not None:
            try:
                opened = p.open(kind, token)
            except Exception as exc:
                raise ProtectionError("受保护的值无法解密 (a sealed value does not open)") from exc
            if not isinstance(value, str) or value == p.mask(kind, opened) or value == opened:
                plain = opened
            else:
                plain = value  # changed by the writer
        elif isinstance(value, str):
            plain = value
        else:
            continue
        found = True
        keep = token if token is not None and plain == opened and p.is_current(token) else None
        sealed_token = keep or p.seal(kind, plain)
        node["value"] = p.mask(kind, plain)
        rest = _without_seal(ext)
        node["_value"] = {**(rest or {}), "extension": [*((rest or {}).get("extension") or []),
                                                        {"url": SEALED_URL, "valueString": sealed_token}]}
        inode["value"] = p.index_value(kind, plain)
        inode.pop("_value", None)
    return Sealed(stored, indexed) if found else None


def index_view(resource: dict) -> dict:
    """What the search index is built from for a stored resource (used by reindexing)."""
    p = _protector
    if p is None or not _may_hold(resource.get("resourceType", ""), orjson.dumps(resource)):
        return resource
    out = orjson.loads(orjson.dumps(resource))
    for node, kind in _elements(out, out.get("resourceType") in PERSON_TYPES):
        token, ext = _seal_of(node)
        if token is not None:
            try:
                plain = p.open(kind, token)
            except Exception:
                # not searchable until its key is back in the ring; never index the mask
                node.pop("value", None)
                node.pop("_value", None)
                continue
        elif isinstance(node.get("value"), str):
            plain = node["value"]  # stored before protection
        else:
            continue
        node["value"] = p.index_value(kind, plain)
        node.pop("_value", None)
    return out


# ------------------------------------------------------------------ reads
def reveal_content(res_type: str, res_id: str, content: bytes, disclosure: Disclosure) -> tuple[bytes, dict | None]:
    """(content to serve, parsed form or None when unchanged) for one stored version."""
    p = _protector
    if p is None or not _may_hold(res_type, content):
        return content, None
    show = disclosure.shows(res_type, res_id)
    sealed = _SEALED_MARK in content
    if show != sealed:
        # shown and plain (stored before protection), or masked and sealed: a write seals
        # every protected value of a resource, so the stored bytes are what this caller gets
        return content, None
    body = orjson.loads(content)
    changed = False
    for node, kind in _elements(body, res_type in PERSON_TYPES):
        token, ext = _seal_of(node)
        value = node.get("value")
        if token is None:
            if not show and isinstance(value, str):
                # stored before protection: mask it now, with its ciphertext so that writing the
                # masked resource back keeps the value
                node["value"] = p.mask(kind, value)
                rest = ext or {}
                node["_value"] = {**rest, "extension": [*(rest.get("extension") or []),
                                                        {"url": SEALED_URL, "valueString": p.seal(kind, value)}]}
                changed = True
            continue
        if not show:
            continue  # the stored mask and ciphertext are what a masked caller gets
        try:
            node["value"] = p.open(kind, token)
        except Exception:
            continue  # fail closed: the mask stays
        rest = _without_seal(ext)
        if rest is None:
            node.pop("_value", None)
        else:
            node["_value"] = rest
        changed = True
    if not changed:
        return content, None
    return orjson.dumps(body), body


def _with_content(stored: Any, content: bytes, body: dict) -> Any:
    """A copy of a `StoredResource` with other content (cheaper than `dataclasses.replace`)."""
    copy = object.__new__(type(stored))
    copy.__dict__.update(stored.__dict__)
    copy.content, copy._parsed = content, body
    return copy


def reveal(stored: Any, disclosure: Disclosure) -> Any:
    """A `StoredResource` as `disclosure` lets its reader see it."""
    if _protector is None or stored.deleted:
        return stored
    content, body = reveal_content(stored.res_type, stored.res_id, stored.content, disclosure)
    if body is None:
        return stored
    return _with_content(stored, content, body)


def disclosure_for(ctx: Any) -> Disclosure:
    p = _protector
    return FULL if p is None else p.disclosure(ctx)


# ------------------------------------------------------------------ searches
def search_codes(param: str, system: str | None, code: str) -> list[str] | None:
    """Index codes to look for when `param` is searched with `[system|]code`, or None when
    the value is not protected (search it as it is). The plain code stays in the list so that
    resources stored before protection was switched on keep matching."""
    p = _protector
    if p is None or code == "":
        return None
    base = param.split(":", 1)[0]
    identifier = base in IDENTIFIER_PARAMS or param.endswith(":identifier")
    telecom = base in TELECOM_PARAMS
    if not (identifier or telecom):
        return None
    if system:
        kind = IDENTIFIER_SYSTEMS.get(system) if identifier else None
        if kind is None and telecom:
            kind = TELECOM_SYSTEMS.get(system)
        kinds = {kind} if kind else set()
    else:
        kinds = set(IDENTIFIER_SYSTEMS.values()) if identifier else set()
        if telecom:
            kinds |= set(TELECOM_SYSTEMS.values())
    if not kinds:
        return None
    out = [code]
    for kind in sorted(kinds):
        out.extend(p.index_values(kind, code))
    return out


# ------------------------------------------------------------------ re-sealing stored rows
def needs_resealing(res_type: str, content: bytes) -> bool:
    """Whether a stored version holds a plain protected value or ciphertext under an old key."""
    p = _protector
    if p is None or not _may_hold(res_type, content):
        return False
    body = orjson.loads(content)
    for node, _kind in _elements(body, res_type in PERSON_TYPES):
        token, _ = _seal_of(node)
        if token is None:
            if isinstance(node.get("value"), str):
                return True
        elif not p.is_current(token):
            return True
    return False


def reseal_content(res_type: str, content: bytes) -> tuple[bytes, dict] | None:
    """(new stored content, index view) under the current key, or None when nothing changes.
    Raises ProtectionError when a stored ciphertext does not open (its key is gone)."""
    if not needs_resealing(res_type, content):
        return None
    plain_body = orjson.loads(reveal_content(res_type, "", content, FULL)[0])
    sealed = seal_resource(plain_body)
    if sealed is None:
        return None
    return orjson.dumps(sealed.stored), sealed.indexed


__all__ = [
    "FULL",
    "IDENTIFIER_SYSTEMS",
    "PERSON_TYPES",
    "PHONE",
    "RESIDENT_ID",
    "SEALED_URL",
    "TELECOM_SYSTEMS",
    "Disclosure",
    "ProtectionError",
    "Sealed",
    "ValueProtector",
    "current_protector",
    "disclosure_for",
    "index_view",
    "install_protector",
    "needs_resealing",
    "reseal_batch",
    "reseal_content",
    "reveal",
    "reveal_content",
    "search_codes",
    "seal_resource",
]


async def reseal_batch(
    conn: Any, *, after: int = 0, batch: int = 500, unreadable: list | None = None
) -> tuple[int, int | None]:
    """Re-seal stored versions (current and history) of up to `batch` resources after row id
    `after`: plain values stored before protection was switched on, and ciphertext under an
    old key, are sealed under the current key and the search index is rewritten.

    Returns (versions rewritten, last row id seen or None when the store is done). Versions
    whose ciphertext no key of the ring opens are left as they are and listed in `unreadable`
    as (tenant, "Type/id"). Runs in the caller's transaction; `yiyun keys rotate` calls it
    batch by batch."""
    from sqlalchemy import select, update

    from yiyun.fhir.search.index import write_index
    from yiyun.fhir.tables import resource as r
    from yiyun.fhir.tables import resource_version as v

    rows = (
        await conn.execute(
            select(r.c.rid, r.c.tenant, r.c.res_type, r.c.res_id, r.c.deleted, r.c.content)
            .where(r.c.rid > after)
            .order_by(r.c.rid)
            .limit(batch)
        )
    ).all()
    changed, live = 0, []
    tenants = {row.rid: row.tenant for row in rows}
    ids: dict[int, str] = {}

    def resealed(rid: int, res_type: str, content: bytes):
        try:
            return reseal_content(res_type, content)
        except ProtectionError:
            if unreadable is not None:
                unreadable.append((tenants[rid], f"{res_type}/{ids.get(rid, '?')}"))
            return None

    for row in rows:
        ids[row.rid] = row.res_id
    for row in rows:
        out = resealed(row.rid, row.res_type, bytes(row.content))
        if out is None:
            continue
        await conn.execute(update(r).where(r.c.rid == row.rid).values(content=out[0]))
        changed += 1
        if not row.deleted:
            live.append((row.rid, row.tenant, out[1]))
    types = {row.rid: row.res_type for row in rows}
    if types:
        versions = (
            await conn.execute(select(v.c.rid, v.c.version_id, v.c.content).where(v.c.rid.in_(list(types))))
        ).all()
        for ver in versions:
            out = resealed(ver.rid, types[ver.rid], bytes(ver.content))
            if out is not None:
                await conn.execute(
                    update(v).where(v.c.rid == ver.rid, v.c.version_id == ver.version_id).values(content=out[0])
                )
                changed += 1
    if live:
        await write_index(conn, live, replace=True)
    return changed, (rows[-1].rid if len(rows) == batch else None)
