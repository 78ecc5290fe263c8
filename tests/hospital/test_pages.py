"""Hospital pages through the ASGI app with real sessions, on SQLite and PostgreSQL.

Personas (tests/hospital/conftest.py): patient Zhang (pat-zhang) with his daughter,
doctor Li (prac-li, role-li, 呼吸内科), administrator Chen, outsider nurse Wang.
"""

from __future__ import annotations

import random
import re

import httpx
import pytest
import pytest_asyncio

from tests.hospital.people import unique_resident_id
from yiyun.core.db import unit_of_work
from yiyun.identity import accounts, sessions

pytestmark = pytest.mark.asyncio
PASSWORD = "Correct-horse-battery-9"
EVIL = "<script>alert(1)</script>"


class Browser:
    """A cookie-only client (no bearer token) with the session's CSRF token."""

    def __init__(self, app, cookie: str | None, csrf: str = "") -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        if cookie:
            self.http.cookies.set(sessions.COOKIE, cookie)
        self.csrf = csrf

    async def get(self, url: str, **kw) -> httpx.Response:
        return await self.http.get(url, **kw)

    async def post(self, url: str, data: dict | None = None, **kw) -> httpx.Response:
        return await self.http.post(url, data={"csrf_token": self.csrf, **(data or {})}, **kw)

    async def aclose(self) -> None:
        await self.http.aclose()


async def _staff(engine, tenant: str, name: str, roles: tuple[str, ...], fhir_ref: str | None) -> tuple[str, str]:
    async with unit_of_work(engine) as conn:
        acct = await accounts.create_staff(conn, username=f"{name}-{tenant}", display_name=name, password=PASSWORD,
                                           tenant_slug=tenant, roles=list(roles), fhir_ref=fhir_ref)
        return await sessions.open_session(conn, acct.id, tenant)


async def _patient(engine, tenant: str, fhir_ref: str | None = "Patient/pat-zhang", *,
                   verified: bool = True) -> tuple[str, str]:
    """A signed-in patient, verified by real name unless `verified=False` (consulting needs it)."""
    from yiyun.identity.auth import AuthContext
    from yiyun.identity.verification import SandboxIdentityProvider, verify_real_name

    phone = "139" + "".join(random.choices("0123456789", k=8))
    async with unit_of_work(engine) as conn:
        acct = await accounts.create_patient_account(conn, phone, "张三", tenant=tenant, fhir_ref=fhir_ref)
        if verified:
            pid = fhir_ref.split("/", 1)[1] if fhir_ref else None
            ctx = AuthContext(tenant=tenant, subject=acct.id, roles=("patient",), patient=pid)
            assert (await verify_real_name(conn, ctx, acct.id, "张三", unique_resident_id(),
                                           provider=SandboxIdentityProvider())).verified
        return await sessions.open_session(conn, acct.id, tenant)


@pytest_asyncio.fixture
async def people(client, engine, hospital):
    """Signed-in browsers: patient, doctor, admin, nurse (no doctor role), nobody."""
    out = {
        "patient": Browser(client.app, *await _patient(engine, hospital.tenant)),
        "doctor": Browser(client.app, *await _staff(engine, hospital.tenant, "li", ("doctor",), "Practitioner/prac-li")),
        "admin": Browser(client.app, *await _staff(engine, hospital.tenant, "chen", ("admin",), None)),
        "nurse": Browser(client.app, *await _staff(engine, hospital.tenant, "wang", ("nurse",), None)),
        "nobody": Browser(client.app, None),
    }
    yield out
    for b in out.values():
        await b.aclose()


PATIENT_PAGES = ["/patient", "/patient/doctors", "/patient/search?q=呼吸", "/patient/appointments",
                 "/patient/consultations", "/patient/me", "/patient/records", "/patient/reports", "/patient/fever",
                 "/patient/triage?text=咳嗽三天", "/patient/doctors/{t}/role-li", "/patient/consult/new?hospital={t}"]
DOCTOR_PAGES = ["/doctor", "/doctor/schedule", "/doctor/patients", "/doctor/records"]
ADMIN_PAGES = ["/hospital-admin", "/hospital-admin/daily"]


async def test_each_page_renders_for_its_role_and_refuses_others(people, hospital):
    t = hospital.tenant
    for url in PATIENT_PAGES:
        url = url.format(t=t)
        r = await people["patient"].get(url)
        assert r.status_code == 200, (url, r.text[:500])
        assert 'class="tabbar"' in r.text and 'lang="zh-CN"' in r.text
        r = await people["nobody"].get(url)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin/patient?next=/patient")
        assert (await people["doctor"].get(url)).status_code == 403
    for url in DOCTOR_PAGES:
        r = await people["doctor"].get(url)
        assert r.status_code == 200, (url, r.text[:500])
        assert "候诊队列" in r.text and "排班" in r.text
        r = await people["nobody"].get(url)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=/doctor")
        for other in ("patient", "nurse", "admin"):
            r = await people[other].get(url)
            assert r.status_code == 403 and "仅供医生使用" in r.text
    for url in ADMIN_PAGES:
        r = await people["admin"].get(url)
        assert r.status_code == 200, (url, r.text[:500])
        assert (await people["nobody"].get(url)).status_code == 303
        assert (await people["doctor"].get(url)).status_code == 403


async def test_doctor_list_shows_fees_and_next_slots_in_chinese_and_english(people, hospital):
    r = await people["patient"].get(f"/patient/doctors?hospital={hospital.tenant}")
    assert "李医生" in r.text and "主任医师" in r.text and "¥30" in r.text and "图文问诊" in r.text
    assert "找医生" in r.text and "下一个可约" in r.text
    r = await people["patient"].get(f"/patient/doctors?hospital={hospital.tenant}&lang=en")
    assert 'lang="en"' in r.text and "Find a doctor" in r.text and "Next free" in r.text
    assert "Online consultation (text and images)" in r.text and "找医生" not in r.text
    r = await people["patient"].get(f"/patient/doctors/{hospital.tenant}/role-li")  # the language is remembered
    assert "Choose a time" in r.text and "选择时间" not in r.text
    # only doctors with an online-text schedule
    r = await people["patient"].get(f"/patient/doctors?hospital={hospital.tenant}&type=online-text")
    assert "李医生" in r.text and "赵医生" not in r.text


async def test_patient_books_cancels_and_sees_queue_number(people, hospital):
    p = people["patient"]
    slot = hospital.slots[0]["id"]
    r = await p.post("/patient/book", {"hospital": hospital.tenant, "role": "role-li", "slot": slot})
    assert r.status_code == 303, r.text[:300]
    url = r.headers["location"]
    r = await p.get(url)
    assert r.status_code == 200 and "排队号" in r.text and "预约成功" in r.text
    assert re.search(r'data-queue-number>\s*1\s*<', r.text)
    # the slot is gone from the doctor's page
    assert slot not in (await p.get(f"/patient/doctors/{hospital.tenant}/role-li")).text
    # booking the same slot again: the reason is shown on the doctor's page, not a 500
    r = await p.post("/patient/book", {"hospital": hospital.tenant, "role": "role-li", "slot": slot})
    assert r.status_code == 400 and 'class="error"' in r.text
    r = await p.post(url.split("?")[0] + "/cancel", {"reason": "改天"})
    assert r.status_code == 303
    assert "已取消" in (await p.get(r.headers["location"])).text


async def test_forms_without_csrf_token_are_refused(people, hospital):
    p = people["patient"]
    p.csrf = "wrong"
    r = await p.post("/patient/book", {"hospital": hospital.tenant, "slot": hospital.slots[0]["id"]})
    assert r.status_code == 403 and "CSRF" in r.text


async def test_consultation_record_and_follow_up_refusal_shown(people, hospital):
    p, d = people["patient"], people["doctor"]
    png = _png()
    r = await p.http.post("/patient/consult", data={
        "csrf_token": p.csrf, "hospital": hospital.tenant, "doctor": "role-li", "mode": "text",
        "chief_complaint": "咳嗽三天 " + EVIL, "duration": "3天", "allergies": "青霉素"},
        files={"photos": ("rash.png", png, "image/png")})
    assert r.status_code == 303, r.text[:500]
    cid = r.headers["location"].rsplit("/", 1)[1].split("?")[0]
    r = await p.get(f"/patient/consultations/{cid}")
    assert r.status_code == 200 and "等待医生接诊" in r.text and f"/api/consultations/{cid}/images/" in r.text
    assert EVIL not in r.text and "&lt;script&gt;" in r.text
    # the doctor sees it in the queue with waiting minutes, the form first
    r = await d.get("/doctor")
    assert cid in r.text and "&lt;script&gt;" in r.text and EVIL not in r.text
    r = await d.post(f"/doctor/consultations/{cid}/accept")
    assert r.status_code == 303 and "error" not in r.headers["location"]
    r = await d.get(f"/doctor/consultations/{cid}")
    assert r.text.index("问诊单") < r.text.index('id="chat"') and 'id="record-form"' in r.text
    # a diagnosis never made at an in-person visit: refused, the reason shown, the draft kept
    r = await d.post(f"/doctor/consultations/{cid}/record", {
        "chief_complaint": "咳嗽三天", "assessment": "急性支气管炎可能", "diagnoses": "J20.900", "advice": "多饮水"})
    assert r.status_code == 422 and 'id="refusal"' in r.text and "第十六条" in r.text
    assert "急性支气管炎可能" in r.text and "J20.900" in r.text
    # without a diagnosis it is health advice and is saved
    r = await d.post(f"/doctor/consultations/{cid}/record", {
        "chief_complaint": "咳嗽三天", "present_illness": "干咳，无发热", "assessment": EVIL, "advice": "多饮水"})
    assert r.status_code == 303 and "notice" in r.headers["location"]
    r = await p.get(f"/patient/consultations/{cid}")
    assert 'id="visit-record"' in r.text and "多饮水" in r.text and "干咳，无发热" in r.text
    assert EVIL not in r.text
    assert cid in (await d.get("/doctor/records")).text
    assert "张三" in (await d.get("/doctor/patients")).text


async def test_icd10_search_for_the_record_form(people):
    r = await people["doctor"].get("/doctor/icd10?q=E11")
    assert r.status_code == 200 and r.json()["results"] and r.json()["results"][0]["code"].startswith("E11")
    r = await people["doctor"].get("/doctor/icd10?q=糖尿病")
    assert any("糖尿病" in x["name"] for x in r.json()["results"])
    assert (await people["patient"].get("/doctor/icd10?q=E11")).status_code == 403


async def test_admin_sets_fee_and_rules_and_doctor_adds_hours(people, hospital):
    a = people["admin"]
    r = await a.post("/hospital-admin/services", {"role": "role-zhao", "type": "online-video", "fee_yuan": "45.5",
                                                  "active": "1"})
    assert r.status_code == 303 and "notice" in r.headers["location"]
    r = await a.get("/hospital-admin")
    assert "45.50" in r.text
    r = await a.post("/hospital-admin/rules", {"cancel_cutoff_minutes": "60", "booking_window_days": "7"})
    assert r.status_code == 303 and "error" not in r.headers["location"]
    assert 'name="cancel_cutoff_minutes" value="60"' in (await a.get("/hospital-admin")).text
    r = await a.post("/hospital-admin/rules", {"booking_window_days": "-3"})
    assert "error=" in r.headers["location"]
    d = people["doctor"]
    r = await d.post("/doctor/schedule", {"action": "template", "schedule": hospital.online_schedule,
                                          "weekdays": "2", "start": "14:00", "end": "15:00", "slot_minutes": "20"})
    assert r.status_code == 303 and "notice" in r.headers["location"], r.headers["location"]
    assert "14:00–15:00" in (await d.get("/doctor/schedule")).text
    # the patient side no longer counts the cancelled or rule-breaking: leave closes slots
    r = await d.post("/doctor/schedule", {"action": "leave", "start_day": "2099-01-01", "end_day": "2099-01-02",
                                          "reason": "学术会议 " + EVIL})
    assert r.status_code == 303
    page = (await d.get("/doctor/schedule")).text
    assert "学术会议" in page and "2099-01-01 00:00" in page and EVIL not in page


async def test_home_page_opens_the_portals(people):
    r = await people["nobody"].get("/")
    for link in ("/patient", "/doctor", "/hospital-admin"):
        assert f'href="{link}"' in r.text


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 80, 80)).save(buf, "PNG")
    return buf.getvalue()


async def test_reports_show_reference_ranges_and_abnormal_flags(people, hospital, repo_factory):
    lab = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}

    def obs(oid, name, value, unit, low, high, flag=None):
        o = {"resourceType": "Observation", "id": oid, "status": "final", "category": [lab],
             "code": {"text": name}, "subject": {"reference": "Patient/pat-zhang"},
             "effectiveDateTime": "2026-03-02T09:00:00+08:00", "valueQuantity": {"value": value, "unit": unit},
             "referenceRange": [{"low": {"value": low}, "high": {"value": high}}]}
        if flag:
            o["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                                "code": flag}]}]
        return o

    async with repo_factory() as repo:
        for o in (obs("o-hb", "血红蛋白", 100, "g/L", 115, 150, "L"), obs("o-wbc", "白细胞计数", 6.5, "10^9/L", 3.5, 9.5),
                  obs("o-glu", "空腹血糖" + EVIL, 8.1, "mmol/L", 3.9, 6.1)):
            await repo.update("Observation", o["id"], o)
        await repo.update("DiagnosticReport", "dr-1", {
            "resourceType": "DiagnosticReport", "id": "dr-1", "status": "final", "code": {"text": "血常规"},
            "subject": {"reference": "Patient/pat-zhang"}, "effectiveDateTime": "2026-03-02T09:00:00+08:00",
            "result": [{"reference": "Observation/o-hb"}, {"reference": "Observation/o-wbc"}]})
    r = await people["patient"].get("/patient/reports")
    assert r.status_code == 200 and "血常规" in r.text and "检验结果" in r.text  # the report, and the loose result
    rows = re.findall(r'<tr class="(abnormal)?"><td>([^<]+)</td>', r.text)
    assert ("abnormal", "血红蛋白") in rows and ("", "白细胞计数") in rows
    assert ("abnormal", "空腹血糖&lt;script&gt;alert(1)&lt;/script&gt;") in rows  # flagged from its range, escaped
    assert "115–150" in r.text and "1 项异常" in r.text and EVIL not in r.text


async def test_follow_up_booking_referral_and_handover_from_the_consultation(people, hospital, engine, client):
    p, d = people["patient"], people["doctor"]
    r = await p.post("/patient/consult", {"hospital": hospital.tenant, "doctor": "role-li", "mode": "text",
                                         "chief_complaint": "复查"})
    cid = r.headers["location"].rsplit("/", 1)[1].split("?")[0]
    assert "error" not in (await d.post(f"/doctor/consultations/{cid}/accept")).headers["location"]
    page = (await d.get(f"/doctor/consultations/{cid}")).text
    slot = hospital.slots[2]["id"]
    assert f'value="{slot}"' in page and "赵医生" in page  # Li's free slots; colleague Zhao
    r = await d.post(f"/doctor/consultations/{cid}/book", {"slot": slot})
    assert r.status_code == 303 and "notice=" in r.headers["location"], r.headers["location"]
    appts = (await p.get("/patient/appointments")).text
    assert "李医生" in appts  # booked for Zhang: listed on his page
    assert slot not in (await p.get(f"/patient/doctors/{hospital.tenant}/role-li")).text
    r = await d.post(f"/doctor/consultations/{cid}/referral", {"to": "HealthcareService/hs-resp", "reason": "需查肺功能"})
    assert "notice=" in r.headers["location"], r.headers["location"]
    zhao = Browser(client.app, *await _staff(engine, hospital.tenant, "zhao", ("doctor",), "Practitioner/prac-zhao"))
    try:
        r = await d.post(f"/doctor/consultations/{cid}/handover", {"doctor": "Practitioner/prac-zhao",
                                                                   "note": "请继续随访 " + EVIL})
        assert r.status_code == 303 and r.headers["location"].startswith("/doctor?notice="), r.headers["location"]
        page = (await zhao.get(f"/doctor/consultations/{cid}")).text
        assert "请继续随访" in page and EVIL not in page
        # a wrong slot is refused with the booking service's reason, shown on the page
        r = await zhao.post(f"/doctor/consultations/{cid}/book", {"slot": "no-such-slot"})
        assert "error=" in r.headers["location"]
    finally:
        await zhao.aclose()


# ------------------------------------------------------------------ consultation rules on the pages
async def test_an_unverified_patient_is_told_why_and_sent_to_real_name(client, engine, hospital):
    p = Browser(client.app, *await _patient(engine, hospital.tenant, verified=False))
    try:
        r = await p.get(f"/patient/consult/new?hospital={hospital.tenant}&doctor=role-li")
        assert r.status_code == 403 and 'id="real-name-needed"' in r.text
        assert 'href="/me/real-name"' in r.text and "实名" in r.text
        assert 'id="consult-form"' not in r.text
        r = await p.post("/patient/consult", {"hospital": hospital.tenant, "doctor": "role-li", "mode": "text",
                                             "chief_complaint": "咳嗽"})
        assert r.status_code == 403 and 'href="/me/real-name"' in r.text
        assert "/patient/consultations/" not in r.headers.get("location", "")
    finally:
        await p.aclose()


async def test_a_child_under_six_consults_with_the_guardian_and_the_doctor_sees_the_flag(client, engine, hospital,
                                                                                       repo_factory, people):
    from yiyun.hospital.codes import today_local

    today = today_local()
    birth = today.replace(year=today.year - 3, day=min(today.day, 28)).isoformat()
    async with repo_factory() as repo:
        await repo.update("Patient", "pat-kid", {"resourceType": "Patient", "id": "pat-kid",
                                                 "name": [{"text": "张小小"}], "birthDate": birth})
    guardian = Browser(client.app, *await _patient(engine, hospital.tenant, "Patient/pat-kid"))
    try:
        r = await guardian.get(f"/patient/consult/new?hospital={hospital.tenant}&doctor=role-li")
        assert r.status_code == 200 and 'name="guardian_accompanies"' in r.text
        form = {"hospital": hospital.tenant, "doctor": "role-li", "mode": "text", "chief_complaint": "发热一天"}
        r = await guardian.post("/patient/consult", form)
        assert r.status_code == 422 and "监护人" in r.text
        r = await guardian.post("/patient/consult", {**form, "guardian_accompanies": "1"})
        assert r.status_code == 303, r.text[:500]
        cid = r.headers["location"].rsplit("/", 1)[1].split("?")[0]
    finally:
        await guardian.aclose()
    d = people["doctor"]
    assert "6岁以下儿童 — 监护人陪同" in (await d.get("/doctor")).text
    page = (await d.get(f"/doctor/consultations/{cid}")).text
    assert 'id="child-flag"' in page and "6岁以下儿童 — 监护人陪同" in page and "data-guardian" in page
    # an adult's form has no such box
    assert 'name="guardian_accompanies"' not in (await people["patient"].get(
        f"/patient/consult/new?hospital={hospital.tenant}&doctor=role-li")).text


async def test_the_patient_rates_an_ended_consultation_and_the_doctor_list_shows_it(people, hospital):
    p, d = people["patient"], people["doctor"]
    r = await p.post("/patient/consult", {"hospital": hospital.tenant, "doctor": "role-li", "mode": "text",
                                         "chief_complaint": "咳嗽"})
    cid = r.headers["location"].rsplit("/", 1)[1].split("?")[0]
    assert 'id="rating-form"' not in (await p.get(f"/patient/consultations/{cid}")).text  # not ended yet
    await d.post(f"/doctor/consultations/{cid}/accept")
    await d.post(f"/doctor/consultations/{cid}/end", {"reason": ""})
    page = (await p.get(f"/patient/consultations/{cid}")).text
    assert 'id="rating-form"' in page
    r = await p.post(f"/patient/consultations/{cid}/rating", {"stars": "5", "comment": "讲解清楚 " + EVIL})
    assert r.status_code == 303 and "rating_error" not in r.headers["location"]
    page = (await p.get(f"/patient/consultations/{cid}")).text
    assert 'id="rating-form"' not in page and 'data-stars="5"' in page and EVIL not in page
    r = await p.post(f"/patient/consultations/{cid}/rating", {"stars": "1"})
    assert "rating_error=" in r.headers["location"]
    assert "已评价" in (await p.get(r.headers["location"])).text
    for bad in ("x", "9" * 5000, "0"):
        r = await p.post(f"/patient/consultations/{cid}/rating", {"stars": bad})
        assert r.status_code == 303 and "rating_error=" in r.headers["location"]
    listing = (await p.get(f"/patient/doctors?hospital={hospital.tenant}")).text
    card = listing[listing.index('data-doctor="role-li"'):]
    assert 'data-rating="5.0"' in card[:3000] and "5.0 ★" in card[:3000]
    doctor_page = (await p.get(f"/patient/doctors/{hospital.tenant}/role-li")).text
    assert "5.0 ★" in doctor_page
    assert "讲解清楚" in (await d.get(f"/doctor/consultations/{cid}")).text
