"""A consultation cancelled with its booking, seen live in the browser: the patient waits on
the consultation's page and cancels the booking in another tab; the consultation page shows
已取消 and the reason, and the doctor's queue drops the row, neither page reloading.

Screenshots land in tests/e2e/screens/hospital-*-cancelled-*.png.
"""

from __future__ import annotations

import re
from datetime import date

import pyotp
import pytest

from tests.e2e.conftest import WAIT, screenshot, sign_in_patient
from tests.e2e.test_hospital_journey import PASSWORD, hospital_server  # noqa: F401  (fixture)
from yiyun.core import resident_id

pytestmark = pytest.mark.browser
PHONE_NUMBER = "13911112222"


def _patient_signs_in_and_verifies(p, base: str) -> None:
    sign_in_patient(p, base, PHONE_NUMBER)
    p.goto(base + "/me/real-name")
    p.fill("#rn-name", "王小明")
    p.fill("#rn-id", resident_id.build("310101", date(1990, 1, 1), 246))  # 王小明 in the sandbox
    p.click("#real-name-form button[type=submit]")
    p.locator("#verified").wait_for(timeout=WAIT)


def _doctor_signs_in(d, base: str) -> None:
    d.goto(base + "/doctor")
    d.wait_for_url(re.compile(r"/signin\?next=/doctor"))
    d.fill("#username", "dr-li")
    d.fill("#password", PASSWORD)
    d.click("button[type=submit]")
    d.wait_for_url(re.compile(r"/signin/enrol$"))
    d.fill("#code", pyotp.TOTP(d.locator("#totp-secret").get_attribute("data-secret")).now())
    d.click("button[type=submit]")
    d.click("a.button")
    d.wait_for_url(base + "/doctor")


def test_a_cancelled_booking_shows_on_both_pages_without_reloading(hospital_server, phone, desktop):  # noqa: F811
    base, p, d = hospital_server, phone, desktop
    _patient_signs_in_and_verifies(p, base)
    _doctor_signs_in(d, base)
    d.locator("table[data-queue-live]").wait_for(timeout=WAIT)
    d.wait_for_function("document.querySelector('table[data-queue-live]').dataset.live === '1'", timeout=WAIT)

    # the patient books the latest online slot (well before the cancellation cut-off) and consults for it
    p.goto(base + "/patient/doctors/e2e-hospital/role-li")
    p.locator("section[data-type=online-text] .slots button:visible").last.click()
    p.wait_for_url(re.compile(r"/patient/appointments/e2e-hospital/"))
    booking_page = p.url
    p.click("text=开始在线问诊")
    p.wait_for_url(re.compile(r"/patient/consult/new"))
    p.fill("textarea[name=chief_complaint]", "咽痛两天")
    p.click("#consult-form button[type=submit]")
    p.wait_for_url(re.compile(r"/patient/consultations/[^/?]+$"))
    cid = p.url.rsplit("/", 1)[1]
    p.wait_for_function("document.querySelector('#chat .yc').dataset.connected === '1'", timeout=WAIT)

    # the doctor's queue shows it (the new consultation reloads the queue page once)
    row = d.locator(f"tr[data-consultation='{cid}']")
    row.wait_for(timeout=WAIT)
    d.wait_for_function("document.querySelector('table[data-queue-live]').dataset.live === '1'", timeout=WAIT)
    # a mark on each page: still there afterwards means the page was not reloaded
    p.evaluate("window.__notReloaded = true")
    d.evaluate("window.__notReloaded = true")

    # in another tab the patient cancels the booking
    tab = p.context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.goto(booking_page)
    tab.click("form[action$='/cancel'] button[type=submit]")
    tab.wait_for_load_state()
    tab.close()

    reason = p.locator("[data-cancel-reason]")
    reason.wait_for(state="visible", timeout=WAIT)
    assert "预约已取消，本次问诊随之取消" in reason.inner_text()
    assert p.locator(".chip[data-state]").inner_text() == "已取消"
    assert p.locator("#chat .yc-bar").is_hidden()
    p.locator("#chat .yc-msg", has_text="预约已取消").wait_for(timeout=WAIT)
    assert p.evaluate("window.__notReloaded === true")
    screenshot(p, "hospital-patient-cancelled-phone")

    row.wait_for(state="detached", timeout=WAIT)
    assert d.evaluate("window.__notReloaded === true")
    assert "暂无候诊患者" in d.locator("table[data-queue-live]").inner_text()
    screenshot(d, "hospital-doctor-queue-cancelled-desktop")
