"""Patients' ratings of ended consultations (问诊评价) and doctors' averages.

A rating is 1–5 stars and an optional comment of up to 200 characters, given once, by
the consultation's own patient, after the consultation ended. It is a satisfaction score,
not a clinical fact, so it lives in an ordinary table (`consult_rating`), keyed by the
consultation; the doctor rated is the one who held the consultation when it ended.

    rating  = await rate(work, cid, stars=5, comment="…")        # 201; 409 the second time
    rating  = await rating_of(work, cid)                         # None before
    scores  = await doctor_ratings(conn, tenant, ["prac-li"])    # {"prac-li": {"score": 4.5, "count": 2, …}}
"""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest, Conflict, Forbidden
from yiyun.fhir.model import instant_from_us, now_us
from yiyun.hospital.consultation_models import consult_rating

MAX_COMMENT = 200
NO_RATING = "暂无评价"


def check_rating(stars, comment) -> tuple[int, str | None]:
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise BadRequest("评分应为 1 到 5 星 (stars must be 1 to 5)")
    comment = comment.strip() if isinstance(comment, str) else ""
    if len(comment) > MAX_COMMENT:
        raise BadRequest(f"评价最多 {MAX_COMMENT} 字 (the comment is at most {MAX_COMMENT} characters)")
    return stars, comment or None


def rating_view(r) -> dict:
    return {"consultation": r.consultation_id, "stars": r.stars, "comment": r.comment,
            "practitioner": f"Practitioner/{r.practitioner_id}", "created": instant_from_us(r.created_us)}


async def _stored(conn: AsyncConnection, tenant: str, cid: str):
    c = consult_rating.c
    return (await conn.execute(select(consult_rating).where(c.tenant == tenant, c.consultation_id == cid))).first()


async def rate(work, cid: str, *, stars, comment=None) -> dict:
    """The patient rates their ended consultation, once."""
    from yiyun.hospital.consultations.service import load

    stars, comment = check_rating(stars, comment)
    row, relation = await load(work, cid, lock=True)
    if relation != "patient":
        raise Forbidden("只有问诊的患者本人可以评价 (only the consultation's patient may rate it)")
    if row.state != "ended" or not row.doctor_id:
        raise Conflict("问诊结束后才能评价 (a consultation can be rated once it has ended)")
    if await _stored(work.conn, row.tenant, cid) is not None:
        raise Conflict("您已评价过本次问诊 (this consultation has already been rated)")
    try:
        async with work.conn.begin_nested():  # two taps at once: the second finds the first
            await work.conn.execute(insert(consult_rating).values(
                tenant=row.tenant, consultation_id=cid, patient_id=row.patient_id, practitioner_id=row.doctor_id,
                stars=stars, comment=comment, created_us=now_us()))
    except IntegrityError as exc:
        raise Conflict("您已评价过本次问诊 (this consultation has already been rated)") from exc
    return rating_view(await _stored(work.conn, row.tenant, cid))


async def rating_of(work, cid: str) -> dict | None:
    """The consultation's rating, for its patient and its doctor (others get 404 from `load`)."""
    from yiyun.hospital.consultations.service import load

    row, _ = await load(work, cid)
    stored = await _stored(work.conn, row.tenant, cid)
    return rating_view(stored) if stored is not None else None


def summary_of(total: int | None, count: int) -> dict:
    if not count:
        return {"score": None, "count": 0, "text": NO_RATING}
    score = round(total / count, 1)
    return {"score": score, "count": count, "text": f"{score:.1f} 分（{count} 条评价）"}


async def doctor_ratings(conn: AsyncConnection, tenant: str, practitioner_ids) -> dict[str, dict]:
    """Average stars and number of ratings of each doctor (every id gets an entry)."""
    ids = sorted({p for p in practitioner_ids if p})
    out = {pid: summary_of(None, 0) for pid in ids}
    if not ids:
        return out
    c = consult_rating.c
    rows = await conn.execute(
        select(c.practitioner_id, func.sum(c.stars), func.count()).where(c.tenant == tenant, c.practitioner_id.in_(ids))
        .group_by(c.practitioner_id))
    for pid, total, count in rows:
        out[pid] = summary_of(int(total or 0), int(count))
    return out
