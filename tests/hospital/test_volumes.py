"""The administrator's daily view: online consultations' waits next to the clinic's figures."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from sqlalchemy import update

from tests.conftest import auth_headers
from tests.hospital.test_consultation import RESP, accepted, clinic, start  # noqa: F401 (the clinic fixture)


def test_percentile_is_the_nearest_rank():
    from yiyun.hospital.volumes import percentile

    assert percentile([], 90) is None
    assert percentile([5.0], 90) == 5.0
    assert percentile([30.0, 2.0, 4.0], 90) == 30.0
    assert percentile([float(i) for i in range(1, 11)], 90) == 9.0
    assert percentile([float(i) for i in range(1, 11)], 50) == 5.0


async def _backdate(engine, tenant: str, cid: str, created: datetime, wait_minutes: float | None) -> None:
    from yiyun.core.db import unit_of_work
    from yiyun.hospital.codes import to_us
    from yiyun.hospital.consultation_models import consult_session

    values = {"created_us": to_us(created)}
    if wait_minutes is not None:
        values["accepted_us"] = to_us(created) + int(wait_minutes * 60_000_000)
    async with unit_of_work(engine) as conn:
        await conn.execute(update(consult_session).where(consult_session.c.tenant == tenant,
                                                         consult_session.c.id == cid).values(**values))


async def test_daily_view_gives_online_waits_per_department(client, clinic, engine, repo_factory):  # noqa: F811
    from yiyun.hospital.codes import CHINA_TZ, today_local
    day = today_local()  # the clinic fixture registered the hospital (its patients are verified there)
    noon = datetime.combine(day, time(12, 0), tzinfo=CHINA_TZ)
    for patient, wait in (("pat-zhang", 2), ("pat-wang", 30), ("pat-liu", 4)):
        await _backdate(engine, clinic.tenant, await accepted(client, clinic, patient), noon, wait)
    waiting = (await start(client, clinic, "pat-zhang", department=RESP))["id"]
    await _backdate(engine, clinic.tenant, waiting, noon, None)
    yesterday = (await start(client, clinic, "pat-liu", department=RESP))["id"]  # another day: not counted
    assert (await client.post(f"/api/consultations/{yesterday}/accept", headers=clinic.doctor("prac-sun"))).status_code == 200
    await _backdate(engine, clinic.tenant, yesterday, noon - timedelta(days=1), 1)

    admin = auth_headers(clinic.tenant, scope="user/*.cruds", subject="user:chen", roles=("admin",))
    view = (await client.get("/api/hospital/daily", params={"day": day.isoformat()}, headers=admin)).json()
    online = {row["id"]: row for row in view["online_waiting"]}
    assert online["hs-endo"]["consultations"] == 3 and online["hs-endo"]["accepted"] == 3
    assert online["hs-endo"]["median_minutes"] == 4.0 and online["hs-endo"]["p90_minutes"] == 30.0
    assert online["hs-endo"]["name"] == "内分泌科"
    assert online["hs-resp"] == {"id": "hs-resp", "name": "呼吸内科", "consultations": 1, "accepted": 0,
                                 "still_waiting": 1, "unanswered": 0, "median_minutes": None, "p90_minutes": None}
    assert "waiting_minutes" in view and "lead_time_hours" in view  # the clinic's figures stay beside them
