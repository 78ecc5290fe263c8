"""Tamper-evident audit log: who did what to which record, when, why, from where.

Every entry is hashed together with the hash of the entry before it in its tenant's
chain (a hash chain, as in RFC 6962's append-only logs and IHE ATNA's integrity goals):
changing, removing or reordering a stored entry breaks the chain and `verify` reports where.

Hash = HMAC-SHA256(k, "yiyun-audit-v1\\n" ‖ JSON array of every field in a fixed order,
including the previous hash), hex. The key k is derived (HKDF) from the audit key ring
(YIYUN_AUDIT_KEYS / YIYUN_AUDIT_KEY_FILE), and each entry names the key it used, so the
key can be rotated while old entries stay verifiable. A keyed hash rather than a bare
SHA-256: someone who can write to the database but does not hold the key cannot rewrite
an entry and recompute the rest of the chain to hide it. What a chain cannot show on its
own is the removal of its newest entries together with a matching rewrite of the head;
`heads` gives (tenant, seq, hash) to copy somewhere the database's writers cannot reach,
and `verify(anchors=...)` checks the chain still contains them.

Appends run inside the caller's transaction (an audited write and its entry commit
together) and are serialised per tenant: PostgreSQL locks the tenant's
`audit_chain_head` row (SELECT … FOR UPDATE) until the transaction ends; SQLite allows
one writer at a time, which `yiyun.core.db.unit_of_work` takes with BEGIN IMMEDIATE.
Append late in a transaction: the head stays locked until commit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.fhir.model import RequestContext, instant_from_us, now_us
from yiyun.identity.audit_tables import audit_chain_head, audit_log
from yiyun.identity.protection.keyring import KeyRing, audit_keyring

__all__ = [
    "AuditEntry", "AuditRecord", "AuditChainError", "Problem", "VerifyReport", "GENESIS",
    "append", "append_committed", "verify", "query", "heads", "as_audit_event", "entry_from_context",
]

GENESIS = "0" * 64
_HASH_INFO = b"yiyun/audit-chain/v1"
_DOMAIN = b"yiyun-audit-v1\n"
_FIELDS = (
    "tenant", "seq", "ts", "actor", "role", "action", "resource_type", "resource_id", "patient",
    "purpose", "outcome", "client_address", "detail", "key_id", "prev_hash",
)
_LIMITS = {
    "tenant": 64, "actor": 256, "role": 64, "action": 32, "resource_type": 64, "resource_id": 64,
    "patient": 128, "purpose": 32, "outcome": 16, "client_address": 64,
}
MAX_DETAIL = 4000
ACTIONS = frozenset({
    "read", "vread", "search", "history", "create", "update", "patch", "delete", "transaction", "batch",
    "operation", "export", "import", "login", "login-failed", "logout", "consent", "break-glass",
    "token-issued", "token-revoked", "password-changed", "account-changed", "audit-read",
})
OUTCOMES = frozenset({"ok", "denied", "not-found", "gone", "error"})
_ACTION = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class AuditChainError(RuntimeError):
    """The chain cannot be appended to safely (missing head, wrong transaction mode)."""


@dataclass
class AuditEntry:
    """One event to record. `ts` defaults to the time of the append (µs since the epoch, UTC)."""

    tenant: str
    actor: str
    action: str
    resource_type: str | None = None
    resource_id: str | None = None
    outcome: str = "ok"
    role: str | None = None
    purpose: str | None = None
    client_address: str | None = None
    patient: str | None = None
    detail: Any = None
    ts: int | None = None


@dataclass(frozen=True)
class AuditRecord:
    """A stored entry, with its place in the chain."""

    tenant: str
    seq: int
    ts: int
    actor: str
    role: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    patient: str | None
    purpose: str | None
    outcome: str
    client_address: str | None
    detail: str | None
    key_id: str
    prev_hash: str
    hash: str

    @property
    def resource(self) -> str | None:
        if self.resource_type and self.resource_id:
            return f"{self.resource_type}/{self.resource_id}"
        return self.resource_type

    @property
    def detail_value(self) -> Any:
        return orjson.loads(self.detail) if self.detail else None

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ hashing
def _canonical(row: Mapping[str, Any]) -> bytes:
    return _DOMAIN + orjson.dumps([row[f] for f in _FIELDS])


def _chain_key(ring: KeyRing, key_id: str) -> bytes:
    return ring.derive(key_id, _HASH_INFO)


def entry_hash(row: Mapping[str, Any], key: bytes) -> str:
    return hmac.new(key, _canonical(row), hashlib.sha256).hexdigest()


def _clean(value: Any, limit: int | None) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "")
    return text[:limit] if limit else text


def _detail_text(detail: Any) -> str | None:
    if detail is None:
        return None
    if isinstance(detail, list) and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in detail):
        detail = {"query": urlencode([(str(k), str(v)) for k, v in detail])}
    text = orjson.dumps(detail, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    text = text.replace("\\u0000", "")
    if len(text) > MAX_DETAIL:
        digest = hashlib.sha256(text.encode()).hexdigest()
        text = orjson.dumps({"truncated": True, "size": len(text), "sha256": digest}).decode()
    return text


def _row(entry: AuditEntry, seq: int, ts: int, key_id: str, prev_hash: str) -> dict[str, Any]:
    if not _ACTION.match(entry.action or ""):
        raise ValueError(f"not an audit action: {entry.action!r}")
    if entry.outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {sorted(OUTCOMES)}")
    row = {f: _clean(getattr(entry, f), n) for f, n in _LIMITS.items()}
    row["actor"] = row["actor"] or "anonymous"
    row.update(seq=seq, ts=int(entry.ts if entry.ts is not None else ts), detail=_detail_text(entry.detail),
               key_id=key_id, prev_hash=prev_hash)
    return row


# ------------------------------------------------------------------ append
def _check_sqlite_writer(conn: AsyncConnection) -> None:
    mode = str(conn.sync_connection.get_execution_options().get("sqlite_begin", "")).upper()
    if mode not in ("IMMEDIATE", "EXCLUSIVE"):
        raise AuditChainError(
            "audit entries on SQLite must be appended in a write unit of work (BEGIN IMMEDIATE); "
            "use append_committed(engine, ...) from a read-only one"
        )


def _insert_head(conn: AsyncConnection, tenant: str, ts: int):
    values = {"tenant": tenant, "seq": 0, "hash": GENESIS, "ts": ts}
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(audit_chain_head).values(values).on_conflict_do_nothing(index_elements=["tenant"])


async def _lock_head(conn: AsyncConnection, tenant: str, ts: int) -> tuple[int, str]:
    lock = select(audit_chain_head.c.seq, audit_chain_head.c.hash).where(audit_chain_head.c.tenant == tenant)
    if conn.dialect.name == "postgresql":
        lock = lock.with_for_update()
    head = (await conn.execute(lock)).first()
    if head is None:
        # Create the head (a no-op when a concurrent transaction just did), lock it, and only
        # then look for orphaned entries: checking before the lock races with a first append
        # committing in between.
        await conn.execute(_insert_head(conn, tenant, ts))
        head = (await conn.execute(lock)).first()
        if int(head.seq) == 0:
            last = (await conn.execute(select(func.max(audit_log.c.seq)).where(audit_log.c.tenant == tenant))).scalar()
            if last is not None:
                raise AuditChainError(
                    f"the audit chain of tenant {tenant!r} has entries but no head: run `yiyun audit verify`"
                )
    return int(head.seq), head.hash


async def append(conn: AsyncConnection, entries: Sequence[AuditEntry], *, keyring: KeyRing | None = None) -> list[AuditRecord]:
    """Append `entries` to their tenants' chains inside the caller's transaction.

    Entries of one tenant keep their order; tenants are locked in name order so that two
    batches naming the same tenants cannot deadlock.
    """
    if not entries:
        return []
    if conn.dialect.name == "sqlite":
        _check_sqlite_writer(conn)
    elif conn.sync_connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        raise AuditChainError("audit entries must be appended inside a transaction, not in autocommit mode")
    ring = keyring or audit_keyring()
    key_id = ring.current_id
    key = _chain_key(ring, key_id)
    now = now_us()
    by_tenant: dict[str, list[AuditEntry]] = {}
    for e in entries:
        if not e.tenant:
            raise ValueError("an audit entry needs its tenant")
        by_tenant.setdefault(_clean(e.tenant, _LIMITS["tenant"]), []).append(e)
    records: list[AuditRecord] = []
    for tenant in sorted(by_tenant):
        seq, prev = await _lock_head(conn, tenant, now)
        rows = []
        for e in by_tenant[tenant]:
            seq += 1
            row = _row(e, seq, now, key_id, prev)
            row["hash"] = prev = entry_hash(row, key)
            rows.append(row)
        await conn.execute(audit_log.insert(), rows)
        await conn.execute(
            update(audit_chain_head).where(audit_chain_head.c.tenant == tenant).values(seq=seq, hash=prev, ts=now)
        )
        records.extend(AuditRecord(**r) for r in rows)
    return records


async def append_committed(
    engine: AsyncEngine, entries: Sequence[AuditEntry], *, keyring: KeyRing | None = None
) -> list[AuditRecord]:
    """Append in a transaction of its own: for events that must stay recorded even when the
    caller's work is rolled back (failed sign-ins, refused access) and for reads."""
    async with unit_of_work(engine, write=True) as conn:
        return await append(conn, entries, keyring=keyring)


def entry_from_context(
    ctx: RequestContext, action: str, res_type: str | None, res_id: str | None, outcome: str,
    detail: Any = None, *, patient: str | None = None,
) -> AuditEntry:
    """The entry for one interaction of the FHIR repository (see `yiyun.fhir.access`)."""
    return AuditEntry(
        tenant=ctx.tenant, actor=ctx.subject, role=",".join(ctx.roles) or None, action=action,
        resource_type=res_type, resource_id=res_id, outcome=outcome, purpose=ctx.purpose,
        client_address=ctx.client_address, patient=patient, detail=detail,
    )


# ------------------------------------------------------------------ verify
@dataclass(frozen=True)
class Problem:
    tenant: str
    seq: int
    # changed | removed | reordered | broken-link | truncated | head-mismatch | beyond-head
    # | head-missing | unknown-key | anchor
    kind: str
    message: str


@dataclass
class VerifyReport:
    checked: int = 0
    chains: int = 0
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def kinds_at(self, tenant: str, seq: int) -> set[str]:
        return {p.kind for p in self.problems if p.tenant == tenant and p.seq == seq}

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "chains": self.chains,
                "problems": [asdict(p) for p in self.problems], "more_problems": self.more_problems}


_MAX_SUSPECTS = 256


class _ChainWalk:
    def __init__(self, tenant: str, ring: KeyRing, report: VerifyReport) -> None:
        self.tenant, self.ring, self.report = tenant, ring, report
        self.problems: list[Problem] = []
        self.suspects: list[dict] = []
        self.missing: list[int] = []
        self.keys: dict[str, bytes | None] = {}

    def problem(self, seq: int, kind: str, message: str) -> None:
        self.problems.append(Problem(self.tenant, seq, kind, message))

    def key(self, key_id: str) -> bytes | None:
        if key_id not in self.keys:
            try:
                self.keys[key_id] = _chain_key(self.ring, key_id)
            except KeyError:
                self.keys[key_id] = None
        return self.keys[key_id]

    def explain_suspects(self) -> None:
        """Tell moved entries from changed ones: an entry that hashes correctly under another
        position's number was moved there (swapped or renumbered)."""
        positions = {s["seq"] for s in self.suspects} | set(self.missing[:_MAX_SUSPECTS])
        for s in self.suspects:
            written_as = None
            key = self.key(s["key_id"])
            if key is not None and len(self.suspects) <= _MAX_SUSPECTS:
                for q in sorted(positions - {s["seq"]}):
                    if hmac.compare_digest(entry_hash({**s, "seq": q}, key), s["hash"]):
                        written_as = q
                        break
            if written_as is not None:
                self.problem(s["seq"], "reordered", f"entry #{s['seq']} was written as #{written_as}: entries were reordered")
            else:
                self.problem(s["seq"], "changed", f"entry #{s['seq']} does not match its hash: it was changed")


async def verify(
    conn: AsyncConnection,
    *,
    start: int | None = None,
    tenant: str | None = None,
    chunk: int = 2000,
    keyring: KeyRing | None = None,
    anchors: Iterable[tuple[str, int, str]] = (),
    max_problems: int = 1000,
) -> VerifyReport:
    """Walk the chains (all tenants, or one) in order and report every problem with its seq.

    Run it inside one snapshot (a REPEATABLE READ transaction on PostgreSQL, any
    transaction on SQLite) so that entries appended meanwhile do not look like damage.
    `start` skips the entries before it (their hash is then trusted as the starting link).
    `anchors` are (tenant, seq, hash) triples recorded earlier from `heads`.
    """
    ring = keyring or audit_keyring()
    report = VerifyReport()
    head_q = select(audit_chain_head)
    if tenant is not None:
        head_q = head_q.where(audit_chain_head.c.tenant == tenant)
    head_rows = {r.tenant: r for r in (await conn.execute(head_q)).all()}
    tenants = set(head_rows)
    if tenant is None:
        tenants |= set((await conn.execute(select(audit_log.c.tenant).distinct())).scalars())
    else:
        tenants.add(tenant)
    anchor_map: dict[str, list[tuple[int, str]]] = {}
    for t, s, h in anchors:
        anchor_map.setdefault(t, []).append((int(s), h))
    for t in sorted(tenants):
        walk = _ChainWalk(t, ring, report)
        await _verify_chain(conn, walk, head_rows.get(t), start, chunk, anchor_map.get(t, []))
        report.chains += 1
        walk.problems.sort(key=lambda p: (p.seq, p.kind))
        room = max(max_problems - len(report.problems), 0)
        report.problems.extend(walk.problems[:room])
        report.more_problems += max(len(walk.problems) - room, 0)
    return report


async def _verify_chain(conn, walk: _ChainWalk, head, start: int | None, chunk: int, anchors: list[tuple[int, str]]) -> None:
    t = walk.tenant
    first = max(int(start or 1), 1)
    prev_hash: str | None = GENESIS
    if first > 1:
        prev_hash = (await conn.execute(
            select(audit_log.c.hash).where(and_(audit_log.c.tenant == t, audit_log.c.seq == first - 1))
        )).scalar()
    expected, last_seq, last_hash, prev_ok = first, first - 1, prev_hash, True
    anchor_at = dict(anchors)
    cols = [audit_log.c[f] for f in (*_FIELDS, "hash")]
    after = first - 1
    while True:
        rows = (await conn.execute(
            select(*cols).where(and_(audit_log.c.tenant == t, audit_log.c.seq > after)).order_by(audit_log.c.seq).limit(chunk)
        )).mappings().all()
        for r in rows:
            row = dict(r)
            seq = row["seq"]
            walk.report.checked += 1
            gap = seq != expected
            if gap:
                walk.missing.extend(range(expected, min(seq, expected + _MAX_SUSPECTS)))
                span = f"#{expected}" if seq == expected + 1 else f"#{expected}..#{seq - 1}"
                walk.problem(expected, "removed", f"entries {span} are missing")
            key = walk.key(row["key_id"])
            if key is None:
                walk.problem(seq, "unknown-key", f"entry #{seq} names key {row['key_id']!r}, which is not in the audit key ring")
                own_ok = False
            else:
                own_ok = hmac.compare_digest(entry_hash(row, key), row["hash"])
                if not own_ok:
                    walk.suspects.append(row)
            if own_ok and not gap and prev_ok and prev_hash is not None and row["prev_hash"] != prev_hash:
                walk.problem(seq, "broken-link", f"entry #{seq} does not follow #{seq - 1}: an entry before it was replaced")
            if seq in anchor_at and anchor_at[seq] != row["hash"]:
                walk.problem(seq, "anchor", f"entry #{seq} differs from the anchored hash")
            prev_hash, prev_ok, expected = row["hash"], own_ok, seq + 1
            last_seq, last_hash = seq, row["hash"]
        if len(rows) < chunk:
            break
        after = rows[-1]["seq"]
    walk.explain_suspects()
    for seq, _h in anchors:
        if seq > last_seq:
            walk.problem(seq, "anchor", f"anchored entry #{seq} is no longer in the chain")
    if head is None:
        if last_seq >= first:
            walk.problem(last_seq, "head-missing", "the chain has entries but its head record is missing")
        return
    if last_seq < head.seq:
        span = f"#{last_seq + 1}" if head.seq == last_seq + 1 else f"#{last_seq + 1}..#{head.seq}"
        walk.problem(last_seq + 1, "truncated", f"the newest entries {span} are missing (head is at #{head.seq})")
    elif last_seq > head.seq:
        walk.problem(head.seq + 1, "beyond-head", f"entries after #{head.seq} are not accounted for by the head")
    elif last_seq >= first and last_hash != head.hash:
        walk.problem(last_seq, "head-mismatch", f"entry #{last_seq} differs from the hash the head recorded")


async def heads(conn: AsyncConnection) -> list[tuple[str, int, str]]:
    """(tenant, seq, hash) of every chain: copy them off the database to anchor `verify`."""
    rows = (await conn.execute(select(audit_chain_head).order_by(audit_chain_head.c.tenant))).all()
    return [(r.tenant, int(r.seq), r.hash) for r in rows]


# ------------------------------------------------------------------ query
async def query(
    conn: AsyncConnection,
    *,
    tenant: str,
    actor: str | None = None,
    resource: str | None = None,
    patient: str | Sequence[str] | None = None,
    action: str | Sequence[str] | None = None,
    outcome: str | Sequence[str] | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    limit: int = 100,
    before_seq: int | None = None,
) -> list[AuditRecord]:
    """Entries of one tenant, newest first; page with `before_seq` = the last seq seen.

    `resource` is "Type/id" (or just "Type"); `patient` is "Patient/id" and finds every
    entry recorded against that patient's record ("who saw my record").
    `patient`, `action` and `outcome` also take a list of values (any of them matches).
    """
    c = audit_log.c
    conds = [c.tenant == tenant]
    if actor is not None:
        conds.append(c.actor == actor)
    if resource:
        rtype, _, rid = resource.partition("/")
        conds.append(c.resource_type == rtype)
        if rid:
            conds.append(c.resource_id == rid)
    for col, value in ((c.patient, patient), (c.action, action), (c.outcome, outcome)):
        if isinstance(value, str):
            conds.append(col == value)
        elif value is not None:
            conds.append(col.in_(list(value)))
    if since_us is not None:
        conds.append(c.ts >= since_us)
    if until_us is not None:
        conds.append(c.ts < until_us)
    if before_seq is not None:
        conds.append(c.seq < before_seq)
    limit = min(max(int(limit), 1), 1000)
    q = select(*[c[f] for f in (*_FIELDS, "hash")]).where(and_(*conds)).order_by(c.seq.desc()).limit(limit)
    return [AuditRecord(**dict(r)) for r in (await conn.execute(q)).mappings().all()]


# ------------------------------------------------------------------ FHIR AuditEvent
# https://hl7.org/fhir/R4/auditevent.html and its mapping of RESTful interactions
# (https://hl7.org/fhir/R4/security.html#audit): type "rest" + restful-interaction subtype;
# other events use the DICOM audit codes of the AuditEventType value set.
_AET = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_RI = "http://hl7.org/fhir/restful-interaction"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ACTION_CS = "https://yiyun.example.cn/fhir/CodeSystem/audit-action"
_REST = {
    "read": ("read", "R"), "vread": ("vread", "R"), "history": ("history", "R"), "search": ("search", "E"),
    "create": ("create", "C"), "update": ("update", "U"), "patch": ("patch", "U"), "delete": ("delete", "D"),
    "transaction": ("transaction", "E"), "batch": ("batch", "E"), "operation": ("operation", "E"),
}
_OTHER = {
    "login": (("110114", "User Authentication"), ("110122", "Login"), "E"),
    "login-failed": (("110114", "User Authentication"), ("110122", "Login"), "E"),
    "logout": (("110114", "User Authentication"), ("110123", "Logout"), "E"),
    "token-issued": (("110114", "User Authentication"), None, "E"),
    "token-revoked": (("110114", "User Authentication"), None, "E"),
    "export": (("110106", "Export"), None, "R"),
    "import": (("110107", "Import"), None, "C"),
    "break-glass": (("110113", "Security Alert"), ("110127", "Emergency Override Started"), "E"),
    "consent": (("110110", "Patient Record"), None, "U"),
    "audit-read": (("110101", "Audit Log Used"), None, "R"),
    "password-changed": (("110114", "User Authentication"), None, "U"),
    "account-changed": (("110136", "Security Roles Changed"), None, "U"),
}
_OUTCOME_CODE = {"ok": "0", "not-found": "4", "gone": "4", "denied": "4", "error": "8"}
_REF = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_ID_SAFE = re.compile(r"[^A-Za-z0-9\-.]")


def _who(actor: str) -> dict:
    if _REF.match(actor):
        return {"reference": actor}
    return {"identifier": {"system": "https://yiyun.example.cn/fhir/sid/account", "value": actor}, "display": actor}


def _network(address: str) -> dict:
    try:
        ipaddress.ip_address(address)
        return {"address": address, "type": "2"}  # network-type 2: IP address
    except ValueError:
        return {"address": address, "type": "1"}  # 1: machine name


def as_audit_event(entry: AuditRecord | Mapping[str, Any]) -> dict:
    """The FHIR R4 AuditEvent for a stored entry (read-only view for auditors)."""
    e = entry if isinstance(entry, AuditRecord) else AuditRecord(**{k: entry.get(k) for k in AuditRecord.__dataclass_fields__})
    action = e.action
    if action in _REST:
        code, crud = _REST[action]
        etype = {"system": _AET, "code": "rest", "display": "RESTful Operation"}
        subtype = [{"system": _RI, "code": code, "display": code}]
    else:
        (tcode, tdisplay), sub, crud = _OTHER.get(action, (("110100", "Application Activity"), None, "E"))
        etype = {"system": _DCM, "code": tcode, "display": tdisplay}
        subtype = [{"system": _DCM, "code": sub[0], "display": sub[1]}] if sub else []
    subtype.append({"system": _ACTION_CS, "code": action})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": _ID_SAFE.sub("-", f"{e.tenant}-{e.seq}")[:64],
        "meta": {"lastUpdated": instant_from_us(e.ts)},
        "type": etype,
        "subtype": subtype,
        "action": crud,
        "recorded": instant_from_us(e.ts),
        "outcome": _OUTCOME_CODE.get(e.outcome, "8"),
        "outcomeDesc": e.outcome,
    }
    if e.purpose:
        reason = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": e.purpose}
        event["purposeOfEvent"] = [{"coding": [reason]}]
    agent: dict[str, Any] = {"who": _who(e.actor), "requestor": True}
    if e.role:
        agent["role"] = [{"text": r} for r in e.role.split(",") if r]
    if e.client_address:
        agent["network"] = _network(e.client_address)
    event["agent"] = [agent]
    event["source"] = {
        "site": e.tenant,
        "observer": {"display": "yiyun"},
        "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                  "display": "Application Server"}],
    }
    entities = _entities(e)
    if entities:
        event["entity"] = entities
    return event


def _entities(e: AuditRecord) -> list[dict]:
    detail = e.detail_value if e.detail else None
    chain = [
        {"type": "chain-seq", "valueString": str(e.seq)},
        {"type": "chain-hash", "valueString": e.hash},
        {"type": "chain-prev-hash", "valueString": e.prev_hash},
    ]
    extra = []
    query_text = None
    if isinstance(detail, dict):
        for k, v in detail.items():
            if k == "query" and isinstance(v, str):
                query_text = v
            else:
                extra.append({"type": str(k)[:64], "valueString": v if isinstance(v, str) else orjson.dumps(v).decode()})
    elif detail is not None:
        extra.append({"type": "detail", "valueString": e.detail})
    out: list[dict] = []
    main: dict[str, Any] = {}
    if e.resource_type and e.resource_id:
        main = {"what": {"reference": f"{e.resource_type}/{e.resource_id}"},
                "type": {"system": "http://hl7.org/fhir/resource-types", "code": e.resource_type}}
    elif e.resource_type:
        main = {"type": {"system": "http://hl7.org/fhir/resource-types", "code": e.resource_type}}
    if query_text is not None:
        q = f"{e.resource_type or ''}?{query_text}"
        main.update(role={"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
                    query=base64.b64encode(q.encode()).decode())
    main["detail"] = extra + chain
    out.append(main)
    if e.patient and e.patient != (f"{e.resource_type}/{e.resource_id}" if e.resource_id else None):
        out.append({
            "what": {"reference": e.patient},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        })
    return out
