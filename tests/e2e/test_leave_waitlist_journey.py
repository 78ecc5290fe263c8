"""On a phone (375 px): a booking the hospital cancels because the doctor is away is rebooked
in one tap, and a full day is waited for and booked automatically when a slot frees.

Screenshots land in tests/e2e/screens/hospital-leave-*.png and hospital-waitlist-*.png.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta

import httpx
import pytest

from tests.conftest import running_server
from tests.e2e.conftest import WAIT, no_sideways_scroll, screenshot, sign_in_patient
from tests.e2e.test_hospital_journey import TENANT, cli, directory

pytestmark = pytest.mark.browser
PHONE_NUMBER = "13987650001"


@pytest.fixture(scope="module")
def clinic_server(tmp_path_factory):
    """Doctor Li sees one patient a day at 09:00 (60-minute clinic slots), four days ahead;
    another patient, Wang, is there to hold slots."""
    data = tmp_path_factory.mktemp("e2e-leave")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING", "YIYUN_SMS_PROVIDER": "outbox"}
    env.pop("YIYUN_DEFAULT_TENANT", None)
    env.pop("YIYUN_REDIS_URL", None)
    cli(env, "db", "upgrade")
    cli(env, "tenant", "create", TENANT, "--name", "示范互联网医院", "--kind", "hospital")
    token = cli(env, "token", "issue", "--tenant", TENANT, "--scope", "system/*.cruds").strip().splitlines()[-1]
    with running_server(env) as base:
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for r in [*directory(), {"resourceType": "Patient", "id": "pat-wang", "active": True,
                                 "name": [{"text": "王五"}]}]:
            assert http.put(f"/fhir/R4/{r['resourceType']}/{r['id']}", json=r).status_code in (200, 201)
        sid = http.post("/api/hospital/schedules", json={"role": "role-li", "type": "clinic",
                                                         "fee_fen": 2500}).json()["id"]
        assert http.post(f"/api/hospital/schedules/{sid}/templates", json={
            "weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "09:00", "end": "10:00", "slot_minutes": 60}).status_code == 201
        assert http.post("/api/hospital/slots/generate", json={"days": 4, "schedules": [sid]}).status_code == 200
        slots = http.get(f"/api/hospital/directory/hospitals/{TENANT}/slots", params={"schedule": sid}).json()["slots"]
        yield base, http, slots
        http.close()


def test_leave_rebook_and_waitlist_on_a_phone(clinic_server, phone):
    base, http, slots = clinic_server
    assert len(slots) >= 3
    first, second = slots[0], slots[1]
    p = phone
    sign_in_patient(p, base, PHONE_NUMBER)
    doctor_page = f"{base}/patient/doctors/{TENANT}/role-li"
    p.goto(doctor_page)
    p.locator(f"button[data-slot='{first['id']}']").click()
    p.wait_for_url(re.compile(r"/patient/appointments/e2e-hospital/"))

    # the doctor is called away: the hospital confirms the leave over the booked slot
    leave = {"role": "role-li", "start": first["start"], "end": first["end"], "reason": "外出会诊"}
    assert http.post("/api/hospital/leave", json=leave).status_code == 409
    assert http.post("/api/hospital/leave", json={**leave, "confirm": True}).status_code == 201

    p.goto(base + "/patient/appointments")
    notes = p.locator("[data-notifications]")
    assert "因医生停诊已取消" in notes.inner_text()
    no_sideways_scroll(p)
    screenshot(p, "hospital-leave-bookings-phone")
    notes.locator("a").first.click()
    rebook = p.locator("[data-rebook]")
    rebook.wait_for(timeout=WAIT)
    assert "一键改约" in rebook.inner_text()
    no_sideways_scroll(p)
    screenshot(p, "hospital-leave-rebook-phone")
    rebook.locator("button[data-rebook-slot]").last.click()  # a later day: the next one is Wang's
    p.wait_for_url(re.compile(r"booked=1"))
    assert "预约成功" in p.locator(".notice").inner_text()

    # Wang takes the second day's only slot; the patient waits for it
    wang = http.post("/api/hospital/appointments", json={"slot": second["id"], "patient": "pat-wang"})
    assert wang.status_code == 201, wang.text
    p.goto(doctor_page)
    day = (datetime.fromisoformat(second["start"].replace("Z", "+00:00")) + timedelta(hours=8)).date().isoformat()
    join = p.locator(f"[data-waitlist] button[data-join='{day}']")
    assert join.count() == 1
    no_sideways_scroll(p)
    screenshot(p, "hospital-waitlist-doctor-phone")
    join.click()
    p.wait_for_url(re.compile(r"/patient/appointments\?notice="))
    assert "排第 1 位" in p.locator("body").inner_text()
    no_sideways_scroll(p)
    screenshot(p, "hospital-waitlist-bookings-phone")

    # Wang cancels: the slot is the patient's at once
    r = http.post(f"/fhir/R4/Appointment/{wang.json()['id']}/$cancel", json={"resourceType": "Parameters"})
    assert r.status_code == 200, r.text
    p.goto(base + "/patient/appointments")
    text = p.locator("body").inner_text()
    assert "候补成功" in text and "已约上" in text
    no_sideways_scroll(p)
