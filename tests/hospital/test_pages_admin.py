"""Pages for leave over bookings, the waitlist, rebooking and the catalogue, with real sessions.

Personas as in tests/hospital/test_pages.py: patient Zhang, doctor Li, administrator Chen.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus as unquote

import pytest

from tests.hospital.conftest import FHIR, book_parameters
from tests.hospital.test_pages import people  # noqa: F401 (the signed-in browsers)

pytestmark = pytest.mark.asyncio


async def _fill_day(client, hospital) -> list[dict]:
    """Book every clinic slot of the first day for Wang (the hospital's own desk: no patient limits)."""
    day = [s for s in hospital.slots if s["start"].startswith(hospital.first_day.isoformat())]
    for s in day:
        r = await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(s["id"], "pat-wang"))
        assert r.status_code == 201, r.text
    return day


async def test_patient_joins_the_waitlist_of_a_full_day_and_leaves_it(client, people, hospital):  # noqa: F811
    await _fill_day(client, hospital)
    p = people["patient"]
    page = (await p.get(f"/patient/doctors/{hospital.tenant}/role-li")).text
    assert "约满 · 可候补" in page and f'data-join="{hospital.first_day.isoformat()}"' in page
    r = await p.post("/patient/waitlist", {"hospital": hospital.tenant, "role": "role-li",
                                           "schedule": hospital.schedule, "day": hospital.first_day.isoformat()})
    assert r.status_code == 303 and r.headers["location"].startswith("/patient/appointments?notice="), r.text[:300]
    mine = (await p.get(r.headers["location"])).text
    assert "已加入候补" in mine and "候补中" in mine and "排第 1 位" in mine
    again = await p.post("/patient/waitlist", {"hospital": hospital.tenant, "role": "role-li",
                                               "schedule": hospital.schedule, "day": hospital.first_day.isoformat()})
    assert again.status_code == 400 and "已在该号的候补队列中" in again.text  # shown on the doctor's page
    entry = re.search(r'data-waitlist-entry="(\d+)"', mine).group(1)
    r = await p.post(f"/patient/waitlist/{hospital.tenant}/{entry}/leave")
    assert r.status_code == 303 and "notice" in r.headers["location"]
    assert "已取消候补" in (await p.get("/patient/appointments")).text
    english = (await p.get("/patient/appointments?lang=en")).text
    assert "Waitlist" in english and "Left the waitlist" not in english


async def test_doctor_sees_the_count_before_leave_and_the_patient_rebooks_in_one_tap(client, people,  # noqa: F811
                                                                                    hospital):
    p, d = people["patient"], people["doctor"]
    r = await p.post("/patient/book", {"hospital": hospital.tenant, "role": "role-li", "slot": hospital.slots[0]["id"]})
    assert r.status_code == 303
    booking_url = r.headers["location"].split("?")[0]
    day = hospital.first_day.isoformat()
    form = {"action": "leave", "start_day": day, "end_day": day, "reason": "外出会诊"}
    r = await d.post("/doctor/schedule", form)
    assert r.status_code == 200 and 'data-count="1"' in r.text and "停诊时段内有 1 个已预约的号" in r.text
    assert (await p.get(booking_url)).text.count("data-rebook-slot") == 0  # nothing happened yet
    assert 'name="expected" value="1"' in r.text
    stale = await d.post("/doctor/schedule", {**form, "confirm": "1", "expected": "2"})
    assert stale.status_code == 303 and "请重新确认" in unquote(stale.headers["location"])
    r = await d.post("/doctor/schedule", {**form, "confirm": "1", "expected": "1"})
    assert r.status_code == 303 and "取消 1 个预约" in unquote(r.headers["location"])

    mine = (await p.get("/patient/appointments")).text
    assert "医院通知" in mine and "因医生停诊已取消" in mine and "改约" in mine
    page = (await p.get(booking_url)).text
    assert "一键改约" in page and "医生停诊" in page
    slot = re.search(r'data-rebook-slot="([^"]+)"', page).group(1)
    assert not slot.startswith(f"{hospital.schedule}-{hospital.first_day:%Y%m%d}")  # not on the leave day
    r = await p.post("/patient/book", {"hospital": hospital.tenant, "role": "role-li", "slot": slot})
    assert r.status_code == 303 and "booked=1" in r.headers["location"], r.text[:300]


async def test_administrator_adds_a_department_and_a_doctor_and_records_leave(people, hospital):  # noqa: F811
    a = people["admin"]
    r = await a.post("/hospital-admin/departments", {"name": "眼科", "phone": "0731-1234567"})
    assert r.status_code == 303 and "notice" in r.headers["location"], r.headers["location"]
    page = (await a.get("/hospital-admin")).text
    dept = re.search(r'<option value="([^"]+)">眼科</option>', page).group(1)
    r = await a.post("/hospital-admin/doctors", {"name": "钱医生", "title": "主治医师", "gender": "male",
                                                 "department": dept})
    assert r.status_code == 303 and "notice" in r.headers["location"]
    assert "钱医生" in (await a.get("/hospital-admin")).text
    r = await a.post("/hospital-admin/departments", {"name": ""})
    assert "error=" in r.headers["location"] and "科室名称不能为空" in unquote(r.headers["location"])
    r = await a.post("/hospital-admin/departments", {"id": dept, "active": "0"})
    assert r.status_code == 303
    assert "眼科" not in (await people["patient"].get(f"/patient?hospital={hospital.tenant}")).text
    r = await a.post("/hospital-admin/leave", {"role": "role-zhao", "start_day": "2099-02-01", "end_day": "2099-02-01"})
    assert r.status_code == 303 and "已登记停诊" in unquote(r.headers["location"])
    daily = (await a.get("/hospital-admin/daily")).text
    assert "在线问诊：等待医生接诊的时长" in daily and "90% 分位等待" in daily
