"""FHIR operations of booking: `Appointment/$book` and `Appointment/{id}/$cancel`.

    POST /fhir/R4/Appointment/$book
         Parameters { appointment: Appointment (status proposed|booked, one Slot, a Patient) }
      → 201 the booked Appointment (queue number in `identifier`), the Slot marked busy;
        409 OperationOutcome "号源已被预约 (slot already booked)" when the Slot is taken.
    POST /fhir/R4/Appointment/{id}/$cancel   Parameters { reason: string (optional) }
      → 200 the cancelled Appointment, its Slot free again (cut-off applies to patients) or
        booked at once for the first patient on that day's waitlist (`yiyun.hospital.waitlist`).

Both call `yiyun.hospital.booking`, the same service the JSON API and the pages use; the
Appointment write hook keeps one booking per Slot on every other path (plain POST/PUT,
transactions). Modelled on the Argonaut Scheduling `$book` operation
(http://fhir.org/guides/argonaut/scheduling/).
"""

from __future__ import annotations

from yiyun.core.errors import BadRequest
from yiyun.fhir.router import FhirResponse, Operation, OperationRegistry, operations, resource_headers
from yiyun.hospital import booking, waitlist

DEFINITION_BASE = "https://yiyun.example.cn/fhir/OperationDefinition"


def _parameter(body, name: str, kinds: tuple[str, ...]):
    if body is None:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("请求体须为 Parameters 资源 (the body must be a Parameters resource)")
    params = body.get("parameter")
    if params is not None and not isinstance(params, list):
        raise BadRequest("Parameters.parameter 须为数组 (parameter must be an array)")
    for p in params or []:
        if isinstance(p, dict) and p.get("name") == name:
            for kind in kinds:
                if kind in p:
                    return p[kind]
            raise BadRequest(f"参数 {name} 的类型不正确 (wrong type for parameter {name!r})")
    return None


async def book_operation(router, req, repo, res_type, res_id) -> FhirResponse:
    appointment = _parameter(req.body, "appointment", ("resource",))
    if appointment is None:
        raise BadRequest("Parameters 中缺少 appointment 参数 (no 'appointment' parameter)")
    async with booking.booking_gate():
        stored = await booking.book_appointment(repo, booking.actor_from_context(repo.ctx), appointment)
    return FhirResponse(201, stored.content, resource_headers(stored, repo.ctx.base_url))


async def cancel_operation(router, req, repo, res_type, res_id) -> FhirResponse:
    reason = _parameter(req.body, "reason", ("valueString",))
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("reason 须为字符串 (reason must be a string)")
    async with booking.booking_gate():
        stored = await booking.cancel(repo, booking.actor_from_context(repo.ctx), res_id, reason)
        await waitlist.offer_freed(repo, booking.slot_ids(stored.resource))
    headers = resource_headers(stored, repo.ctx.base_url)
    headers.pop("Location", None)
    return FhirResponse(200, stored.content, headers)


BOOK = Operation("book", book_operation, levels=("type",), types=("Appointment",), methods=("POST",),
                 definition=f"{DEFINITION_BASE}/Appointment-book")
CANCEL = Operation("cancel", cancel_operation, levels=("instance",), types=("Appointment",), methods=("POST",),
                   definition=f"{DEFINITION_BASE}/Appointment-cancel")


def register(registry: OperationRegistry = operations) -> None:
    """Register `$book` and `$cancel` once (the app may be built many times in one process)."""
    present = {(op.name, op.types) for op in registry.all()}
    for op in (BOOK, CANCEL):
        if (op.name, op.types) not in present:
            registry.register(op)
