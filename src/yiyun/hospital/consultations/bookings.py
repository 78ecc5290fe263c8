"""A booked Appointment follows its consultation, through the booking service's own door.

    booked ──doctor accepts──▶ arrived ──consultation ends──▶ fulfilled
    (https://hl7.org/fhir/R4/valueset-appointmentstatus.html)

The Appointment is written through the FHIR repository as the hospital acting for the
doctor (`booking.system_repo` with a staff `Actor`), so the booking write hook keeps its
rules: an arrived booking still holds its Slot; a fulfilled one no longer does.

The other way round (`booking_changed`, a write hook on Appointment): a booking cancelled
or marked no-show while its consultation still waits cancels that consultation, so no
doctor accepts a visit nobody booked any more; while the consultation is in progress the
booking cannot leave the active states except by the consultation ending (fulfilled).
Both sides learn it at once: once the booking's unit of work has committed, whoever opened
it (the booking API, a page, the no-show job, a FHIR write), the consultation's channel
carries the note and a `state` frame (`cancelled`, with `reason` and `cause`) and the
queue channel drops it from the doctors' queues (`core.db.after_commit`).

A consultation the patient cancels while it waits leaves the booking as it was: the
patient may start it again, or cancel the booking under the hospital's cancellation
cut-off (`yiyun.hospital.booking`), which a withdrawn consultation must not bypass.
"""

from __future__ import annotations

from sqlalchemy import select, update

from yiyun.core.db import after_commit
from yiyun.core.errors import Conflict
from yiyun.core.logging import get_logger
from yiyun.fhir.model import RequestContext, instant_from_us, now_us
from yiyun.fhir.repository import FhirRepository, PlannedWrite
from yiyun.hospital import booking
from yiyun.hospital.codes import ACTIVE_STATUSES
from yiyun.hospital.consultation_models import consult_session

log = get_logger("yiyun.consultation.bookings")

ARRIVES_FROM = ("proposed", "pending", "booked", "checked-in")
STATUS_NAMES = {"cancelled": "取消", "noshow": "登记为爽约", "entered-in-error": "作废", "deleted": "删除"}
# `cause` of the state frame, for pages that word it themselves
CAUSES = {"cancelled": "booking-cancelled", "noshow": "booking-noshow"}


def _hospital_repo(work) -> FhirRepository:
    actor = booking.Actor("staff", work.party.subject, None, ("doctor",))
    return booking.system_repo(work.repo, actor)


async def _move(work, appointment_id: str | None, to: str, from_statuses) -> str | None:
    """Set the booking's status when it is in one of `from_statuses`; its status after."""
    if not appointment_id:
        return None
    repo = _hospital_repo(work)
    stored = await repo._current("Appointment", appointment_id, lock=True)  # noqa: SLF001 (row lock, as booking does)
    if stored is None or stored.deleted:
        return None
    appt = dict(stored.resource)
    if appt.get("status") not in from_statuses:
        return appt.get("status")
    appt["status"] = to
    appt.pop("meta", None)
    await repo.update("Appointment", appointment_id, appt, if_match=stored.version_id)
    return to


async def booking_arrived(work, row) -> None:
    """The doctor accepted: the booking's patient has arrived (online). A booking that was
    cancelled or missed meanwhile cannot be seen any more: 409."""
    status = await _move(work, row.appointment_id, "arrived", ARRIVES_FROM)
    if status is not None and status not in ACTIVE_STATUSES:
        raise Conflict(f"该问诊的预约状态为 {status}，不能接诊 (the consultation's booking is no longer active)")


async def booking_fulfilled(work, row) -> None:
    """The consultation ended: its booking is fulfilled (and frees its Slot if still ahead)."""
    await _move(work, row.appointment_id, "fulfilled", tuple(ACTIVE_STATUSES))


# ------------------------------------------------------------------ the hook
def _left_active(plan: PlannedWrite) -> bool:
    old = plan.existing.resource if plan.existing is not None and not plan.existing.deleted else None
    new = plan.resource
    return booking.is_active(old) and not booking.is_active(new)


async def booking_changed(repo: FhirRepository, plans: list[PlannedWrite]) -> None:
    """A booking that leaves the active states: its waiting consultation is cancelled; an
    in-progress one refuses the change unless it is the consultation's own end."""
    for plan in plans:
        if not _left_active(plan) or (plan.resource or {}).get("status") == "fulfilled":
            continue
        c = consult_session.c
        row = (await repo.conn.execute(select(consult_session).where(
            c.tenant == repo.ctx.tenant, c.appointment_id == plan.res_id, c.state.in_(("waiting", "active"))))).first()
        if row is None:
            continue
        if row.state == "active":
            raise Conflict("该预约的在线问诊正在进行中，不能取消或更改 (the booking's consultation is in progress)")
        await _cancel_waiting(repo, row, (plan.resource or {}).get("status") or "deleted")


async def _cancel_waiting(repo: FhirRepository, row, status: str) -> None:
    ts = now_us()
    c = consult_session.c
    done = await repo.conn.execute(update(consult_session).where(
        c.tenant == row.tenant, c.id == row.id, c.state == "waiting").values(state="cancelled", ended_us=ts))
    if done.rowcount != 1:
        return
    from yiyun.hospital.consultations import service

    # the consultation workflow writes its own Encounter and note, whoever changed the booking
    writer = FhirRepository(repo.conn, RequestContext(tenant=row.tenant, subject=repo.ctx.subject))
    work = service.Work(repo.conn, writer, service.Party(row.tenant, repo.ctx.subject, "patient", row.patient_id))
    enc = service._with_status((await writer.read("Encounter", row.id)).resource, "cancelled", ts)
    enc.setdefault("period", {})["end"] = instant_from_us(ts)
    await writer.update("Encounter", row.id, enc)
    note = f"预约已{STATUS_NAMES.get(status, '变更')}，本次问诊随之取消"
    await service._system_message(work, row.id, note, kind="note", allow_closed=True)
    service._publish_state(work, await service._row(work, row.id), reason=note,
                           cause=CAUSES.get(status, "booking-changed"))
    work.outbox.append((service.queue_channel(row.tenant), {"type": "queue", "consultation": row.id,
                                                             "state": "cancelled"}))
    _announce_after_commit(repo, work.outbox)


def _announce_after_commit(repo: FhirRepository, outbox: list[tuple[str, dict]]) -> None:
    """The frames go out once the booking's change is committed (never for a rollback)."""
    from yiyun.core.realtime import get_broker

    async def publish() -> None:
        broker = get_broker()
        for ch, frame in outbox:
            await broker.publish(ch, frame)

    if not after_commit(repo.conn, publish):
        # a unit of work not opened by `unit_of_work`: the parties see it on their next load
        log.info("consultation_cancel_not_announced", consultations=[f["consultation"] for _, f in outbox])


def register() -> None:
    from yiyun.fhir.hooks import register_write_hook

    register_write_hook("Appointment", booking_changed)
