"""The internet hospital as people use it: a patient on a phone signs in by SMS, finds a
doctor, books an online slot and starts a 图文问诊 with a photo; the doctor on a desktop
signs in (password + TOTP), accepts, replies and writes the visit record (the follow-up
rule refuses a diagnosis first, with its reason); the patient sees the reply and the record.

Screenshots of each main page land in tests/e2e/screens/hospital-*.png.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

from datetime import date

import httpx
import pyotp
import pytest

from tests.conftest import REPO, running_server
from tests.e2e.conftest import WAIT, no_sideways_scroll, screenshot, sign_in_patient
from yiyun.core import resident_id

pytestmark = pytest.mark.browser
PASSWORD = "Correct-horse-battery-9"
TENANT = "e2e-hospital"
PHONE_NUMBER = "13987654321"


def cli(env, *args) -> str:
    result = subprocess.run([sys.executable, "-m", "yiyun.cli", *args], env=env, cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def directory() -> list[dict]:
    """One hospital, its respiratory department and doctor Li."""
    return [
        {"resourceType": "Organization", "id": "org-h", "name": "示范互联网医院", "active": True},
        {"resourceType": "Location", "id": "loc-h", "name": "示范互联网医院", "status": "active",
         "position": {"longitude": 112.98, "latitude": 28.19}, "managingOrganization": {"reference": "Organization/org-h"}},
        {"resourceType": "HealthcareService", "id": "hs-resp", "active": True, "name": "呼吸内科门诊",
         "providedBy": {"reference": "Organization/org-h"}, "type": [{"text": "呼吸内科"}],
         "location": [{"reference": "Location/loc-h"}]},
        {"resourceType": "Practitioner", "id": "prac-li", "active": True, "name": [{"text": "李医生"}],
         "qualification": [{"code": {"text": "主任医师"}}]},
        {"resourceType": "PractitionerRole", "id": "role-li", "active": True,
         "practitioner": {"reference": "Practitioner/prac-li", "display": "李医生"},
         "organization": {"reference": "Organization/org-h"}, "specialty": [{"text": "慢性咳嗽"}],
         "healthcareService": [{"reference": "HealthcareService/hs-resp", "display": "呼吸内科门诊"}],
         "extension": [{"url": "https://yiyun.example.cn/fhir/StructureDefinition/practitioner-introduction",
                        "valueString": "从事呼吸内科临床工作二十年，擅长慢性咳嗽、哮喘的诊治。"}]},
    ]


@pytest.fixture(scope="module")
def hospital_server(tmp_path_factory):
    """A real server on SQLite: the hospital and doctor Li's account made with the CLI, the
    directory through FHIR and his online schedule through the JSON API with a CLI token."""
    data = tmp_path_factory.mktemp("e2e-hospital")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING", "YIYUN_SMS_PROVIDER": "outbox", "YIYUN_NEW_PASSWORD": PASSWORD}
    env.pop("YIYUN_DEFAULT_TENANT", None)
    env.pop("YIYUN_REDIS_URL", None)
    cli(env, "db", "upgrade")
    cli(env, "tenant", "create", TENANT, "--name", "示范互联网医院", "--kind", "hospital")
    cli(env, "user", "create", "dr-li", "--tenant", TENANT, "--role", "doctor", "--name", "李医生",
        "--practitioner", "prac-li")
    token = cli(env, "token", "issue", "--tenant", TENANT, "--scope", "system/*.cruds").strip().splitlines()[-1]
    with running_server(env) as base:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            for r in directory():
                res = http.put(f"/fhir/R4/{r['resourceType']}/{r['id']}", json=r)
                assert res.status_code in (200, 201), res.text
            sched = http.post("/api/hospital/schedules", json={"role": "role-li", "type": "online-text",
                                                               "fee_fen": 3000})
            assert sched.status_code == 201, sched.text
            sid = sched.json()["id"]
            res = http.post(f"/api/hospital/schedules/{sid}/templates", json={
                "weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "00:00", "end": "23:30", "slot_minutes": 30})
            assert res.status_code == 201, res.text
            res = http.post("/api/hospital/slots/generate", json={"days": 3, "schedules": [sid]})
            assert res.status_code == 200, res.text
        yield base


def _photo() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (210, 120, 110)).save(buf, "PNG")
    return buf.getvalue()


def test_patient_books_and_consults_doctor_accepts_replies_and_writes_the_record(hospital_server, phone, desktop):
    base = hospital_server
    p = phone
    # --- the patient signs in with an SMS code
    sign_in_patient(p, base, PHONE_NUMBER)
    assert p.locator("h1").first.inner_text() == "互联网医院"
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-home-phone")

    # --- finds the doctor
    p.click(".tabbar >> text=找医生")
    p.wait_for_url(re.compile(r"/patient/doctors"))
    card = p.locator("article.doctor", has_text="李医生")
    assert "主任医师" in card.inner_text() and "图文问诊 ¥30" in card.inner_text()
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-doctors-phone")
    card.locator("h3 a").click()
    p.wait_for_url(re.compile(r"/patient/doctors/e2e-hospital/role-li"))
    assert "擅长慢性咳嗽" in p.locator("body").inner_text()
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-doctor-phone")

    # --- books an online slot: a queue number
    p.locator("section[data-type=online-text] .slots button").first.click()
    p.wait_for_url(re.compile(r"/patient/appointments/e2e-hospital/"))
    assert "预约成功" in p.locator(".notice").inner_text()
    assert p.locator("[data-queue-number]").inner_text().strip().isdigit()
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-booked-phone")

    # --- starts a text consultation for the booking: first told to verify the real name
    p.click("text=开始在线问诊")
    p.wait_for_url(re.compile(r"/patient/consult/new"))
    consult_form = p.url
    assert "实名" in p.locator("#real-name-needed").inner_text()
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-real-name-needed-phone")
    p.click("#go-real-name")
    p.wait_for_url(base + "/me/real-name")
    p.fill("#rn-name", "王小明")
    p.fill("#rn-id", resident_id.build("310101", date(1990, 1, 1), 246))  # 王小明 in the sandbox
    p.click("#real-name-form button[type=submit]")
    p.locator("#verified").wait_for(timeout=WAIT)
    # --- then the consultation, with a photo
    p.goto(consult_form)
    p.fill("textarea[name=chief_complaint]", "咳嗽一周，夜间加重")
    p.fill("input[name=duration]", "7天")
    p.fill("input[name=allergies]", "青霉素")
    p.set_input_files("input[name=photos]", files=[{"name": "throat.png", "mimeType": "image/png",
                                                    "buffer": _photo()}])
    p.locator("#photo-preview img").wait_for(timeout=WAIT)
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-consult-form-phone")
    p.click("#consult-form button[type=submit]")
    p.wait_for_url(re.compile(r"/patient/consultations/[^/?]+$"))
    cid = p.url.rsplit("/", 1)[1]
    assert "等待医生接诊" in p.locator("body").inner_text()
    assert p.locator("#pre-consultation img").count() == 1
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-waiting-phone")

    # --- the doctor signs in (password, TOTP enrolment) and opens the queue
    d = desktop
    d.goto(base + "/doctor")
    d.wait_for_url(re.compile(r"/signin\?next=/doctor"))
    d.fill("#username", "dr-li")
    d.fill("#password", PASSWORD)
    d.click("button[type=submit]")
    d.wait_for_url(re.compile(r"/signin/enrol$"))
    secret = d.locator("#totp-secret").get_attribute("data-secret")
    d.fill("#code", pyotp.TOTP(secret).now())
    d.click("button[type=submit]")
    d.click("a.button")
    d.wait_for_url(base + "/doctor")
    row = d.locator(f"tr[data-consultation='{cid}']")
    assert "咳嗽一周" in row.inner_text() and "分钟" in row.inner_text()
    screenshot(d, "hospital-doctor-queue-desktop")
    row.locator("a").click()
    d.wait_for_url(re.compile(rf"/doctor/consultations/{cid}"))
    assert d.locator("#pre-consultation").inner_text().count("青霉素") == 1
    d.click("#accept")
    d.wait_for_url(re.compile(rf"/doctor/consultations/{cid}"))
    d.locator("#chat .yc-bar input[type=text]").wait_for(timeout=WAIT)

    # --- the doctor replies; the patient sees it
    d.wait_for_function("document.querySelector('#chat .yc').dataset.connected === '1'", timeout=WAIT)
    d.fill("#chat .yc-bar input[type=text]", "您好，请问有发热吗？")
    d.click("#chat .yc-send")
    d.locator("#chat .yc-msg", has_text="有发热吗").wait_for(timeout=WAIT)
    p.locator("#chat .yc-msg", has_text="有发热吗").wait_for(timeout=WAIT)
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-chat-phone")

    # --- the record: a diagnosis never made in person is refused with the rule's reason
    d.fill("textarea[name=present_illness]", "干咳一周，无发热，夜间明显")
    d.fill("textarea[name=assessment]", "急性支气管炎可能")
    d.fill("[data-icd10]", "J20")
    d.locator(".icd-results button").first.click()
    d.fill("textarea[name=advice]", "多饮水，若发热或气促请线下就诊")
    d.click("#record-form button[type=submit]")
    refusal = d.locator("#refusal")
    refusal.wait_for(timeout=WAIT)
    assert "第十六条" in refusal.inner_text()
    assert d.locator("textarea[name=assessment]").input_value() == "急性支气管炎可能"
    screenshot(d, "hospital-doctor-record-refused-desktop")
    # saved as health advice, without the diagnosis
    d.fill("#diagnoses", "")
    d.click("#record-form button[type=submit]")
    d.locator("#visit-record").wait_for(timeout=WAIT)
    screenshot(d, "hospital-doctor-consultation-desktop")

    # --- the patient sees the record
    p.locator("#visit-record").wait_for(timeout=WAIT)
    text = p.locator("#visit-record").inner_text()
    assert "多饮水" in text and "干咳一周" in text
    no_sideways_scroll(p)
    screenshot(p, "hospital-patient-record-phone")

    # --- the doctor's schedule page
    d.click("nav.side >> text=排班")
    d.wait_for_url(base + "/doctor/schedule")
    assert "图文问诊" in d.locator("h2").first.inner_text()
    screenshot(d, "hospital-doctor-schedule-desktop")
