"""JSON routes of online consultations, under /api/consultations (see docs/consultation.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile, WebSocket
from fastapi.responses import JSONResponse, Response

from yiyun.core.errors import BadRequest
from yiyun.identity.auth import AuthContext, require_subject
from yiyun.hospital.consultations import chat, ratings, records, service, signalling, uploads, writer
from yiyun.hospital.consultations.schemas import (
    EndIn,
    HandoverIn,
    MessageIn,
    RatingIn,
    ReadIn,
    ReferralIn,
    StartConsultation,
    VisitRecordIn,
)
from yiyun.hospital.consultations.service import open_work, party_of

router = APIRouter(prefix="/api/consultations", tags=["consultations"])
socket_router = APIRouter()


def _party(ctx: AuthContext) -> service.Party:
    return party_of(ctx)


@router.post("", status_code=201)
async def start(body: StartConsultation, ctx: AuthContext = Depends(require_subject)):
    """Start a 图文问诊 (text) or 视频问诊 (video) with a doctor, a department or for a booking,
    for the caller or their ward (`patient`). 403 `real-name-required` until the caller is
    verified by real name (/me/real-name); 403 `not-guardian` for a patient who is not the
    caller's ward; 422 `guardian-required` for a child under 6 without `form.guardian_accompanies`."""
    async with open_work(_party(ctx)) as work:
        out = await service.start_consultation(
            work, mode=body.mode, doctor=body.doctor, department=body.department, appointment=body.appointment,
            form=body.form.model_dump(), patient=body.patient)
    return JSONResponse(out, status_code=200 if out.get("existing") else 201)


@router.get("")
async def mine(state: list[str] = Query(default=[]), ctx: AuthContext = Depends(require_subject)):
    """The caller's consultations (a patient's own and their wards'; a doctor's assigned), newest first."""
    async with open_work(_party(ctx), write=False) as work:
        return {"consultations": await service.my_consultations(work, states=tuple(state))}


@router.get("/queue")
async def queue(ctx: AuthContext = Depends(require_subject)):
    """The doctor's waiting queue (with waiting time) and in-progress consultations."""
    async with open_work(_party(ctx), write=False) as work:
        return await service.doctor_queue(work)


@router.get("/{cid}")
async def detail(cid: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx), write=False) as work:
        out = await service.consultation_detail(work, cid)
        if out["relation"] != "patient":
            out["handovers"] = await service.handover_notes(work, cid)
        out["rating"] = await ratings.rating_of(work, cid)
        return out


@router.post("/{cid}/accept")
async def accept(cid: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx)) as work:
        return await service.accept(work, cid)


@router.post("/{cid}/end")
async def end(cid: str, body: EndIn | None = None, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx)) as work:
        return await service.finish(work, cid, reason=body.reason if body else None)


@router.post("/{cid}/cancel")
async def cancel(cid: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx)) as work:
        return await service.cancel(work, cid)


@router.post("/{cid}/rating", status_code=201)
async def rate(cid: str, body: RatingIn, ctx: AuthContext = Depends(require_subject)):
    """The patient rates the ended consultation once: 1-5 stars and an optional comment."""
    async with open_work(_party(ctx)) as work:
        return await ratings.rate(work, cid, stars=body.stars, comment=body.comment)


@router.get("/{cid}/rating")
async def get_rating(cid: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx), write=False) as work:
        return {"rating": await ratings.rating_of(work, cid)}


@router.post("/{cid}/handover")
async def handover(cid: str, body: HandoverIn, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx)) as work:
        return await service.hand_over(work, cid, to_doctor=body.doctor, note=body.note)


@router.post("/{cid}/referral", status_code=201)
async def referral(cid: str, body: ReferralIn, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx)) as work:
        return await service.refer(work, cid, to=body.to, reason=body.reason, note=body.note)


@router.post("/{cid}/messages", status_code=201)
async def post_message(cid: str, body: MessageIn, ctx: AuthContext = Depends(require_subject)):
    """Send a chat message (the REST fallback of the WebSocket); 409 once the consultation is closed."""
    frame, created = await writer.send_text(_party(ctx), cid, body.text, body.client_id)
    return JSONResponse(frame, status_code=201 if created else 200)


@router.get("/{cid}/messages")
async def list_messages(cid: str, since: int = Query(default=0, ge=0), limit: int = Query(default=200, ge=1, le=500),
                        ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx), write=False) as work:
        return {"messages": await service.messages_since(work, cid, since, limit)}


@router.post("/{cid}/read")
async def read(cid: str, body: ReadIn, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx)) as work:
        return await service.mark_read(work, cid, body.seq)


@router.post("/{cid}/images", status_code=201)
async def upload_image(
    cid: str,
    file: UploadFile = File(...),
    purpose: str = Form(default="message"),
    client_id: str | None = Form(default=None),
    ctx: AuthContext = Depends(require_subject),
):
    """An image for the chat (`purpose=message`) or for the pre-consultation form (`form`):
    JPEG/PNG/WebP up to 10 MB, checked by content, re-encoded without EXIF."""
    if purpose not in ("message", "form"):
        raise BadRequest("purpose 应为 message 或 form (purpose must be message or form)")
    party = _party(ctx)
    async with open_work(party, write=False) as work:  # who and whether open, before reading the file
        row, relation = await service.load(work, cid)
        service._require_open(row, "上传图片")
    data = await file.read(uploads.MAX_BYTES + 1)
    clean = uploads.clean_image(data)
    attachment = None
    try:
        async with open_work(party) as work:
            attachment = await uploads.store_image(work, cid, clean)
            if purpose == "form":
                result = await uploads.add_form_photo(work, cid, attachment)
                status = 201
            else:
                result, created = await service.post_message(work, cid, attachment=attachment, client_id=client_id)
                status = 201 if created else 200
                if not created:
                    raise _Duplicate(result)
    except _Duplicate as dup:  # a retried upload: the first copy stands, the new bytes go
        await uploads.discard(attachment, party.tenant, cid)
        return JSONResponse(dup.frame, status_code=200)
    except BaseException:
        await uploads.discard(attachment, party.tenant, cid)
        raise
    return JSONResponse(result, status_code=status)


class _Duplicate(Exception):
    def __init__(self, frame: dict) -> None:
        self.frame = frame


@router.get("/{cid}/images/{upload_id}")
async def get_image(cid: str, upload_id: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx), write=False) as work:
        data, content_type = await uploads.read_image(work, cid, upload_id)
    return Response(data, media_type=content_type, headers={
        "Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/{cid}/ice-servers")
async def ice_servers(cid: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx), write=False) as work:
        await service.load(work, cid)
    return {"iceServers": signalling.ice_servers()}


@router.post("/{cid}/calls", status_code=201)
async def start_call(cid: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx)) as work:
        return await service.start_call(work, cid)


@router.post("/{cid}/calls/{call_id}/hangup")
async def hangup(cid: str, call_id: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx)) as work:
        return await service.end_call(work, cid, call_id)


@router.post("/{cid}/record", status_code=201)
async def save_record(cid: str, body: VisitRecordIn, ctx: AuthContext = Depends(require_subject)):
    """The visit record: Encounter (finished) + Condition(s) + ClinicalImpression in one unit
    of work. A diagnosis for a patient not diagnosed before at an institution: 422 with the reason."""
    record = body.model_dump()
    record["referral"] = body.referral.model_dump() if body.referral else None
    async with open_work(_party(ctx)) as work:
        return await records.save_visit_record(work, cid, record)


@router.get("/{cid}/record")
async def get_record(cid: str, ctx: AuthContext = Depends(require_subject)):
    async with open_work(_party(ctx), write=False) as work:
        return await records.visit_record(work, cid)


@socket_router.websocket("/api/consultations/queue/ws")  # before {cid}/ws, which would take "queue"
async def queue_socket(websocket: WebSocket):
    await chat.queue_socket(websocket)


@socket_router.websocket("/api/consultations/{cid}/ws")
async def socket(websocket: WebSocket, cid: str):
    await chat.consultation_socket(websocket, cid)
