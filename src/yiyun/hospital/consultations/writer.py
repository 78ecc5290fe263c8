"""Group commit for chat messages: the messages that arrive while one batch is being written
are written together in the next unit of work.

Each message is still stored (a Communication, its sequence number) before anyone is
sent it, and each caller gets its own answer or error. One transaction for many messages
costs about what one message alone costs (the repository persists planned writes in bulk),
so under load the latency stays near one commit instead of growing with the queue (SQLite
takes one writer at a time; PostgreSQL pays a commit per transaction). With no load a
batch holds one message and nothing waits.

Each message is checked and audited under its own sender (`SenderAudit`).
If writing a batch fails as a whole (an unexpected database error), every message in it
is retried alone, so one message's failure is never another's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.db import get_engine
from yiyun.core.errors import Forbidden, YiyunError
from yiyun.core.logging import get_logger
from yiyun.fhir.access import current_policy
from yiyun.fhir.ids import new_id
from yiyun.fhir.model import RequestContext, instant_from_us, now_us
from yiyun.fhir.repository import FhirRepository, PlannedWrite, ensure_valid
from yiyun.hospital.consultation_models import consult_message, consult_session
from yiyun.hospital.consultations import service
from yiyun.hospital.consultations.service import Party, Work, open_work

log = get_logger("yiyun.consultation.writer")

MAX_BATCH = 200


@dataclass
class _Item:
    party: Party
    cid: str
    text: str
    client_id: str | None
    future: asyncio.Future = field(repr=False)


class MessageWriter:
    """One per database and event loop; `submit` returns (frame, created) like `post_message`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.largest = 0

    async def submit(self, party: Party, cid: str, text: Any, client_id: str | None) -> tuple[dict, bool]:
        text = service.check_text(text)
        service.check_client_id(client_id)
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Item(party, cid, text, client_id, future))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.batches += 1
            self.largest = max(self.largest, len(batch))
            try:
                await self._write(batch)
            except Exception:  # noqa: BLE001 - retried one by one below
                log.warning("message_batch_failed", size=len(batch), exc_info=True)
                for item in batch:
                    if not item.future.done():
                        await self._write_alone(item)

    async def _write_alone(self, item: _Item) -> None:
        try:
            async with open_work(item.party, engine=self.engine) as work:
                result = await service.post_message(work, item.cid, text=item.text, client_id=item.client_id)
            item.future.set_result(result)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            if not item.future.done():
                item.future.set_exception(exc)

    async def _write(self, batch: list[_Item]) -> None:
        by_tenant: dict[str, list[_Item]] = {}
        for item in batch:
            by_tenant.setdefault(item.party.tenant, []).append(item)
        for items in by_tenant.values():
            done: list[tuple[_Item, Any]] = []
            async with open_work(items[0].party, engine=self.engine) as work:
                done = await _write_tenant(work, items)
            # committed: only now are the callers answered (and the frames published by open_work)
            for item, result in done:
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)


async def _write_tenant(work: Work, items: list[_Item]) -> list[tuple[_Item, Any]]:
    tenant = items[0].party.tenant
    c, m = consult_session.c, consult_message.c
    cids = sorted({i.cid for i in items})
    stmt = select(consult_session).where(c.tenant == tenant, c.id.in_(cids)).order_by(c.id)
    if not work.sqlite:
        stmt = stmt.with_for_update()
    rows = {r.id: r for r in await work.conn.execute(stmt)}
    keys = [(i.cid, i.client_id) for i in items if i.client_id]
    seen: dict[tuple[str, str], Any] = {}
    if keys:
        for r in await work.conn.execute(select(consult_message).where(
                m.tenant == tenant, tuple_(m.consultation_id, m.client_id).in_(keys))):
            seen[(r.consultation_id, r.client_id)] = r
    out: list[tuple[_Item, Any]] = []
    accepted: list[tuple[_Item, Any, str]] = []
    for item in items:
        try:
            row = rows.get(item.cid)
            relation = await _relation(work, item.party, row, item.cid)
            if relation == "candidate":
                raise Forbidden("请先接诊再回复 (accept the consultation before replying)")
            if item.client_id and (item.cid, item.client_id) in seen:
                out.append((item, ("existing", seen[(item.cid, item.client_id)])))
                continue
            service._require_open(row)
            accepted.append((item, row, relation))
        except YiyunError as exc:
            out.append((item, exc))
    plans, messages, frames = [], [], []
    last = {cid: r.last_seq for cid, r in rows.items()}
    batch_keys: dict[tuple[str, str], int] = {}
    ts = now_us()
    for item, row, relation in accepted:
        if item.client_id and (item.cid, item.client_id) in batch_keys:
            out.append((item, ("batch", batch_keys[(item.cid, item.client_id)])))
            continue
        seq = last[item.cid] = last[item.cid] + 1
        comm = _communication(row, relation, item.party, seq, item.text, ts)
        ensure_valid(comm)
        plan = PlannedWrite("Communication", new_id(), "POST", comm)
        plans.append(plan)
        messages.append({"tenant": tenant, "consultation_id": item.cid, "seq": seq, "communication_id": plan.res_id,
                         "sender_role": relation, "kind": "text", "client_id": item.client_id, "sent_us": ts})
        frames.append((item, plan, seq, relation))
        if item.client_id:
            batch_keys[(item.cid, item.client_id)] = len(frames) - 1
    if plans:
        senders = {plan.res_id: RequestContext(tenant=tenant, subject=item.party.subject)
                   for item, plan, _, _ in frames}
        batch_repo = FhirRepository(work.conn, RequestContext(tenant=tenant, subject="consultation-chat"),
                                    policy=SenderAudit(work.conn, senders))
        await batch_repo.persist_planned(plans)
        await work.conn.execute(
            update(consult_session).where(c.tenant == tenant, c.id == bindparam("cid")).values(
                last_seq=bindparam("seq")),
            [{"cid": cid, "seq": seq} for cid, seq in last.items() if seq != rows[cid].last_seq])
        await work.conn.execute(insert(consult_message), messages)
    made = []
    for item, plan, seq, relation in frames:
        frame = service.message_frame(seq, "text", relation, item.client_id, plan.stored.resource)
        work.publish(item.cid, frame)
        made.append(frame)
        out.append((item, (frame, True)))
    resolved = []
    for item, result in out:
        if isinstance(result, tuple) and result and result[0] == "existing":
            hit = result[1]
            comm = (await work.repo.read("Communication", hit.communication_id)).resource
            result = (service.message_frame(hit.seq, hit.kind, hit.sender_role, hit.client_id, comm), False)
        elif isinstance(result, tuple) and result and result[0] == "batch":
            result = (made[result[1]], False)
        resolved.append((item, result))
    return resolved


async def _relation(work: Work, party: Party, row, cid: str) -> str:
    if row is not None and party.role == "patient" and row.patient_id == party.id:
        return "patient"
    if row is not None and party.role == "doctor" and row.doctor_id == party.id:
        return "doctor"
    # the uncommon cases (a ward's guardian, a waiting consultation's candidate, or none of
    # these) decided in full
    sub = Work(work.conn, work.repo, party)
    return await service._authorise(sub, row, cid)


def _communication(row, relation: str, party: Party, seq: int, text: str, ts: int) -> dict:
    patient_ref = f"Patient/{row.patient_id}"
    if relation == "patient":  # the patient, or their guardian in their own name
        sender = party.ref
        recipients = [f"Practitioner/{row.doctor_id}"] if row.doctor_id else ([row.department] if row.department else [])
    else:
        sender, recipients = party.ref, [patient_ref]
    comm: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": service.SEQ_SYSTEM, "value": f"{row.id}#{seq}"}],
        "status": "completed",
        "category": [{"coding": [service.coding(service.MESSAGE_SYSTEM, "text")]}],
        "subject": service.ref(patient_ref),
        "encounter": service.ref(f"Encounter/{row.id}"),
        "sent": instant_from_us(ts),
        "sender": service.ref(sender),
        "payload": [{"contentString": text}],
    }
    if recipients:
        comm["recipient"] = [service.ref(r) for r in recipients]
    return comm


class SenderAudit:
    """The installed access policy for one batch of messages, with each planned write checked
    and audited under its own sender: the batch is persisted in one go (one insert of all
    resources, their index rows, one append to the audit chain) and every entry still names
    who wrote the message. Writes not in `senders` keep the repository's context."""

    def __init__(self, conn, senders: dict[str, RequestContext]) -> None:
        inner = current_policy()
        bind = getattr(inner, "bind", None)
        self.inner = bind(conn) if bind is not None else inner
        self.conn, self.senders = conn, senders

    def _ctx(self, ctx, res_id):
        return self.senders.get(res_id, ctx) if res_id else ctx

    async def check(self, ctx, action, res_type, res_id, resource) -> None:
        await self.inner.check(self._ctx(ctx, res_id), action, res_type, res_id, resource)

    def can_see(self, ctx, stored) -> bool:
        return self.inner.can_see(ctx, stored)

    def search_filter(self, ctx, table, res_type):
        return self.inner.search_filter(ctx, table, res_type)

    async def record(self, ctx, action, res_type, res_id, outcome, detail=None) -> None:
        await self.inner.record(self._ctx(ctx, res_id), action, res_type, res_id, outcome, detail)

    async def record_batch(self, ctx, events, detail=None) -> None:
        # the audit recorder of the identity module takes entries of several actors in one append
        recorder = getattr(getattr(self.inner, "policy", None), "recorder", None)
        if recorder is not None and hasattr(recorder, "entry") and hasattr(recorder, "append_in"):
            entries = [recorder.entry(self._ctx(ctx, i), a, t, i, o, detail) for a, t, i, o in events]
            if entries:
                await recorder.append_in(self.conn, entries)
            return
        for action, res_type, res_id, outcome in events:
            await self.record(ctx, action, res_type, res_id, outcome, detail)


_writers: dict[tuple[str, int], MessageWriter] = {}


def message_writer(engine: AsyncEngine | None = None) -> MessageWriter:
    engine = engine or get_engine()
    key = (str(engine.url), id(asyncio.get_running_loop()))
    writer = _writers.get(key)
    if writer is None:
        for stale in [k for k in _writers if k[0] == key[0] and k[1] != key[1]]:
            _writers.pop(stale, None)  # from an event loop that has ended
        writer = _writers[key] = MessageWriter(engine)
    return writer


async def send_text(party: Party, cid: str, text: Any, client_id: str | None = None) -> tuple[dict, bool]:
    """Store and fan out one chat text message (group-committed with concurrent ones)."""
    return await message_writer().submit(party, cid, text, client_id)


__all__ = ["MessageWriter", "message_writer", "send_text"]
