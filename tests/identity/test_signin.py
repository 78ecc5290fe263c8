"""Sign-in pages over HTTP: staff password + TOTP (enrolment, replay, recovery codes), failure
handling (back-off, lockout, same answer for unknown usernames), account status, session
fixation, sign-out (everywhere), tenant switching, and the audit entries they leave."""

from __future__ import annotations

import random
import re
import time

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from yiyun.core.db import unit_of_work
from yiyun.identity import accounts, sessions, signin
from yiyun.identity.audit_tables import audit_log
from yiyun.identity.signin_tables import signin_attempt

pytestmark = pytest.mark.asyncio
PASSWORD = "Correct-horse-battery-9"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def browser(client) -> httpx.AsyncClient:
    """A browser of its own client address (failure counts per address stay per test)."""
    address = f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app, client=(address, 40000)),
                             base_url="http://testserver")


async def setup_tenant(engine, tenant, kind="hospital", name="测试医院"):
    async with unit_of_work(engine) as conn:
        await accounts.create_tenant(conn, tenant, name=name, kind=kind)


async def make_staff(engine, tenant, *, status="active", roles=("doctor",)):
    async with unit_of_work(engine) as conn:
        return await accounts.create_staff(conn, username=f"dr-{tenant}", display_name="李医生", password=PASSWORD,
                                           tenant_slug=tenant, roles=list(roles), fhir_ref="Practitioner/p1",
                                           status=status)


async def form_token(b, path) -> str:
    r = await b.get(path)
    assert r.status_code == 200, r.text
    return TOKEN.search(r.text).group(1)


async def password_step(b, username, password=PASSWORD, next_path="/account"):
    token = await form_token(b, "/signin?next=" + next_path)
    return await b.post("/signin", data={"username": username, "password": password, "next": next_path,
                                         "csrf_token": token})


async def enrol(b, username) -> tuple[str, list[str]]:
    r = await password_step(b, username)
    assert r.status_code == 303 and r.headers["location"] == "/signin/enrol"
    r = await b.get("/signin/enrol")
    assert "<svg" in r.text and "otpauth" not in r.text.split("<svg", 1)[0]
    secret = re.search(r'data-secret="([A-Z2-7]+)"', r.text).group(1)
    token = TOKEN.search(r.text).group(1)
    r = await b.post("/signin/enrol", data={"code": "000000" if pyotp.TOTP(secret).now() != "000000" else "111111",
                                            "csrf_token": token})
    assert r.status_code == 401  # a wrong code
    step = int(time.time() // 30)
    r = await b.post("/signin/enrol", data={"code": pyotp.TOTP(secret).at(step * 30), "csrf_token": token})
    assert r.status_code == 200, r.text
    codes = re.findall(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>", r.text)
    assert len(codes) == 10
    enrol.step = step  # the time step of the code used to confirm
    return secret, codes


async def second_step(b, username, code):
    r = await password_step(b, username)
    assert r.status_code == 303 and r.headers["location"] == "/signin/totp", r.text
    token = await form_token(b, "/signin/totp")
    return await b.post("/signin/totp", data={"code": code, "csrf_token": token})


async def audit_actions(engine, tenant) -> list[tuple[str, str]]:
    async with unit_of_work(engine, write=False) as conn:
        rows = await conn.execute(select(audit_log.c.action, audit_log.c.outcome).where(audit_log.c.tenant == tenant)
                                  .order_by(audit_log.c.seq))
        return [(r.action, r.outcome) for r in rows]


async def test_staff_password_then_totp_enrolment_replay_and_recovery_codes(client, engine, tenant):
    await setup_tenant(engine, tenant)
    staff = await make_staff(engine, tenant)
    async with browser(client) as b:
        b.cookies.set(sessions.COOKIE, "planted-by-someone-else", domain="testserver.local")
        secret, codes = await enrol(b, staff.username)
        cookie = b.cookies.get(sessions.COOKIE)
        assert cookie and cookie != "planted-by-someone-else"
        r = await b.get("/account")
        assert r.status_code == 200 and "李医生" in r.text and "测试医院" in r.text
        assert '<form class="signout"' in r.text  # the header shows who is signed in
        step = enrol.step
        used = pyotp.TOTP(secret).at(step * 30)
    async with browser(client) as b:
        r = await second_step(b, staff.username, used)  # the code used at enrolment: refused
        assert r.status_code == 401
        nxt = pyotp.TOTP(secret).at((step + 1) * 30)  # next step: within ±1 step, never used
        token = await form_token(b, "/signin/totp")
        r = await b.post("/signin/totp", data={"code": nxt, "csrf_token": token})
        assert r.status_code == 303 and r.headers["location"] == "/account"
        assert (await b.get("/account")).status_code == 200
    async with browser(client) as b:
        r = await second_step(b, staff.username, nxt)  # replayed
        assert r.status_code == 401 and "验证码错误" in r.text
        token = await form_token(b, "/signin/totp")
        r = await b.post("/signin/totp", data={"code": codes[0].upper(), "csrf_token": token})
        assert r.status_code == 303
    async with browser(client) as b:
        r = await second_step(b, staff.username, codes[0])  # a recovery code works once
        assert r.status_code == 401
    actions = await audit_actions(engine, tenant)
    assert ("totp-enrolled", "ok") in actions and ("signin", "ok") in actions and ("signin-failed", "denied") in actions


async def test_wrong_password_backs_off_then_locks_and_never_tells_if_the_user_exists(client, engine, tenant):
    await setup_tenant(engine, tenant)
    staff = await make_staff(engine, tenant)
    async with browser(client) as b:
        for name in (staff.username, f"nobody-{tenant}"):
            answers = [await password_step(b, name, "wrong-password-1") for _ in range(5)]
            assert [r.status_code for r in answers] == [401] * 5
            assert all("用户名或密码错误" in r.text for r in answers[:4])
            assert "10 秒后再试" in answers[4].text
            r = await password_step(b, name)  # even the right password waits now
            assert r.status_code == 429 and "秒后再试" in r.text
    # after the wait, five more failures lock the username for 15 minutes
    async with unit_of_work(engine) as conn:
        key = signin.user_key(staff.username)
        await conn.execute(update(signin_attempt).where(signin_attempt.c.key == key)
                           .values(ts=signin_attempt.c.ts - 600 * 1_000_000))
        for _ in range(5):
            await signin.record_attempt(conn, [key], False)
    async with browser(client) as b:
        r = await password_step(b, staff.username)
        assert r.status_code == 429 and "锁定" in r.text and "15 分钟" in r.text
    async with unit_of_work(engine) as conn:  # 15 minutes later, the right password gets in
        await conn.execute(update(signin_attempt).where(signin_attempt.c.key == key)
                           .values(ts=signin_attempt.c.ts - 16 * 60 * 1_000_000))
    async with browser(client) as b:
        r = await password_step(b, staff.username)
        assert r.status_code == 303
    actions = await audit_actions(engine, tenant)
    assert actions.count(("signin-failed", "denied")) >= 6


async def test_back_off_schedule():
    assert [signin.wait_after(n) for n in (0, 4, 5, 6, 9, 10, 12)] == [
        (0, False), (0, False), (10, False), (20, False), (160, False), (900, True), (900, True)]


async def test_pending_and_disabled_accounts_are_told_after_a_correct_password(client, engine, tenant):
    await setup_tenant(engine, tenant)
    staff = await make_staff(engine, tenant, status="pending")
    async with browser(client) as b:
        r = await password_step(b, staff.username, "wrong-password-1")
        assert r.status_code == 401 and "等待审核" not in r.text
        r = await password_step(b, staff.username)
        assert r.status_code == 403 and "等待审核" in r.text and sessions.COOKIE not in b.cookies
    async with unit_of_work(engine) as conn:
        await accounts.set_status(conn, staff.id, "disabled")
    async with browser(client) as b:
        r = await password_step(b, staff.username)
        assert r.status_code == 403 and "停用" in r.text


async def test_forms_need_their_token_and_next_stays_on_this_site(client, engine, tenant):
    await setup_tenant(engine, tenant)
    staff = await make_staff(engine, tenant)
    async with browser(client) as b:
        r = await b.post("/signin", data={"username": staff.username, "password": PASSWORD})
        assert r.status_code == 403  # login CSRF: no token from the form
        r = await password_step(b, staff.username, next_path="//evil.example/x")
        assert r.status_code == 303
        async with unit_of_work(engine, write=False) as conn:
            info = await sessions.load_session(conn, b.cookies.get(sessions.COOKIE), touch=False)
        assert info.stage == sessions.ENROL and info.next_path == "/"
        # a half-finished sign-in is not signed in
        assert (await b.get("/account")).status_code == 303


async def test_sign_out_sign_out_everywhere_and_tenant_switch(client, engine, tenant):
    await setup_tenant(engine, tenant)
    other = tenant + "-b"
    await setup_tenant(engine, other, name="第二医院")
    staff = await make_staff(engine, tenant)
    async with unit_of_work(engine) as conn:
        from yiyun.identity.tables import membership

        await conn.execute(membership.insert().values(account_id=staff.id, tenant=other, roles="admin"))
    async with browser(client) as b1, browser(client) as b2:
        secret, codes = await enrol(b1, staff.username)
        step = int(time.time() // 30) + 1
        r = await second_step(b2, staff.username, pyotp.TOTP(secret).at(step * 30))
        assert r.status_code == 303
        page = (await b1.get("/account")).text
        assert page.count("<tr><td data-ts") == 2  # both sessions listed
        token = TOKEN.search(page).group(1)
        # switch organisation: roles follow the tenant
        assert (await b1.post("/account/tenant", data={"tenant": other})).status_code == 403  # no CSRF token
        r = await b1.post("/account/tenant", data={"tenant": other, "csrf_token": token})
        assert r.status_code == 303
        page = (await b1.get("/account")).text
        assert "第二医院" in page and "管理员" in page
        r = await b1.post("/account/tenant", data={"tenant": "not-mine", "csrf_token": token})
        assert r.status_code == 400
        # sign out here only
        r = await b2.post("/signout", data={"csrf_token": TOKEN.search((await b2.get("/account")).text).group(1)})
        assert r.status_code == 303 and (await b2.get("/account")).status_code == 303
        assert (await b1.get("/account")).status_code == 200
        # sign in again on b2, then sign out everywhere from b1
        r = await second_step(b2, staff.username, codes[0])
        assert r.status_code == 303
        r = await b1.post("/account/signout-everywhere", data={"csrf_token": token})
        assert r.status_code == 303
        assert (await b1.get("/account")).status_code == 303 and (await b2.get("/account")).status_code == 303
    actions = await audit_actions(engine, other)
    assert ("tenant-switched", "ok") in actions
    assert ("signout", "ok") in await audit_actions(engine, tenant)


# --------------------------------------------------------------- patients: SMS codes
def new_phone() -> str:
    return "139" + "".join(random.choice("0123456789") for _ in range(8))


async def last_code(engine, phone) -> str:
    from yiyun.identity.sms import outbox_messages

    async with unit_of_work(engine, write=False) as conn:
        for m in await outbox_messages(conn, limit=200):
            if m.phone == phone:
                return re.search(r"\b(\d{6})\b", m.body).group(1)
    raise AssertionError("no message to " + phone)


async def send_code(b, phone, tenant):
    token = await form_token(b, "/signin/patient")
    r = await b.post("/signin/patient/code", data={"phone": phone, "tenant": tenant, "csrf_token": token})
    return r, token


async def test_patient_signs_in_with_an_sms_code_and_is_linked_to_their_patient(client, engine, tenant):
    await setup_tenant(engine, tenant)
    phone = new_phone()
    r = await client.post("/fhir/R4/Patient", json={"resourceType": "Patient", "name": [{"text": "王芳"}],
                                                     "telecom": [{"system": "phone", "value": phone}]})
    assert r.status_code == 201
    patient_id = r.json()["id"]
    async with browser(client) as b:
        r, token = await send_code(b, f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}", tenant)
        assert r.status_code == 200 and "验证码已发送" in r.text
        r = (await b.get("/dev/sms-outbox")).text
        assert phone in r
        code = await last_code(engine, phone)
        r = await b.post("/signin/patient", data={"phone": phone, "code": code, "tenant": tenant,
                                                  "csrf_token": token, "next": "/account"})
        assert r.status_code == 303 and r.headers["location"] == "/account"
        page = (await b.get("/account")).text
        assert phone[:3] + "****" + phone[-4:] in page
        # the FHIR API with the cookie: their own record only
        r = await b.get(f"/fhir/R4/Patient/{patient_id}")
        assert r.status_code == 200, r.text
        # set a password, then sign in with phone + password
        token2 = TOKEN.search(page).group(1)
        r = await b.post("/account/password", data={"password": "123456", "password2": "123456", "csrf_token": token2})
        assert r.status_code == 400
        r = await b.post("/account/password", data={"password": PASSWORD, "password2": PASSWORD, "csrf_token": token2})
        assert r.status_code == 303
    async with browser(client) as b:
        token = await form_token(b, "/signin/patient")
        r = await b.post("/signin/patient", data={"phone": phone, "password": "wrong-password-1", "tenant": tenant,
                                                  "csrf_token": token})
        assert r.status_code == 401 and "手机号或密码错误" in r.text
        r = await b.post("/signin/patient", data={"phone": phone, "password": PASSWORD, "tenant": tenant,
                                                  "csrf_token": token})
        assert r.status_code == 303
    async with unit_of_work(engine, write=False) as conn:
        acct = await accounts.find_by_phone(conn, phone)
        assert await accounts.patient_link(conn, acct.id, tenant) == f"Patient/{patient_id}"
    assert ("sms-code-issued", "ok") in await audit_actions(engine, tenant)


async def test_sms_code_cooldown_tries_and_expiry(client, engine, tenant):
    from yiyun.identity.signin_tables import sms_code

    await setup_tenant(engine, tenant)
    phone = new_phone()
    async with browser(client) as b:
        r, token = await send_code(b, phone, tenant)
        assert r.status_code == 200
        r, _ = await send_code(b, phone, tenant)  # within 60 s
        assert r.status_code == 429 and "秒后再重新获取" in r.text
        code = await last_code(engine, phone)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        answers = []
        for _ in range(5):
            r = await b.post("/signin/patient", data={"phone": phone, "code": wrong, "tenant": tenant,
                                                      "csrf_token": token})
            answers.append(r)
        assert [r.status_code for r in answers] == [401] * 5 and "次数过多" in answers[-1].text
        r = await b.post("/signin/patient", data={"phone": phone, "code": code, "tenant": tenant, "csrf_token": token})
        assert r.status_code in (401, 429) and sessions.COOKIE not in b.cookies  # the right code is spent too
    # a fresh code (after the cooldown and the back-off) that has expired
    async with unit_of_work(engine) as conn:
        await conn.execute(update(sms_code).values(created_ts=sms_code.c.created_ts - 61 * 1_000_000))
        await conn.execute(update(signin_attempt).where(signin_attempt.c.key == signin.user_key(phone))
                           .values(ts=signin_attempt.c.ts - 3600 * 1_000_000))
    async with browser(client) as b:
        r, token = await send_code(b, phone, tenant)
        assert r.status_code == 200
        code = await last_code(engine, phone)
        async with unit_of_work(engine) as conn:
            await conn.execute(update(sms_code).values(expires_ts=sms_code.c.created_ts + 1))
        r = await b.post("/signin/patient", data={"phone": phone, "code": code, "tenant": tenant, "csrf_token": token})
        assert r.status_code == 401 and "已过期" in r.text


async def test_sms_codes_per_phone_each_hour(engine, tenant):
    from yiyun.identity import sms
    from yiyun.identity.signin_tables import sms_code

    phone = new_phone()
    async with unit_of_work(engine) as conn:
        for i in range(sms.PER_PHONE_HOUR):
            assert (await sms.issue_code(conn, phone, client_address=f"10.9.{i}.1")).ok
            await conn.execute(update(sms_code).values(created_ts=sms_code.c.created_ts - 61 * 1_000_000))
        refused = await sms.issue_code(conn, phone, client_address="10.9.99.1")
    assert not refused.ok and refused.reason == "phone-limit"


async def test_bad_phone_number_is_a_clear_400(client, engine, tenant):
    await setup_tenant(engine, tenant)
    async with browser(client) as b:
        r, _ = await send_code(b, "12345", tenant)
        assert r.status_code == 400 and "11 位手机号码" in r.text


async def test_sms_codes_per_client_address_each_hour(engine):
    from yiyun.identity import sms

    address = f"10.8.{random.randint(0, 255)}.{random.randint(1, 254)}"
    async with unit_of_work(engine) as conn:
        for _ in range(sms.PER_ADDRESS_HOUR):
            assert (await sms.issue_code(conn, new_phone(), client_address=address)).ok
        refused = await sms.issue_code(conn, new_phone(), client_address=address)
    assert not refused.ok and refused.reason == "address-limit"


async def test_staff_replace_their_recovery_codes_with_a_current_code(client, engine, tenant):
    await setup_tenant(engine, tenant)
    staff = await make_staff(engine, tenant)
    async with browser(client) as b:
        secret, old_codes = await enrol(b, staff.username)
        token = TOKEN.search((await b.get("/account")).text).group(1)
        r = await b.post("/account/recovery-codes", data={"code": "000000", "csrf_token": token})
        assert r.status_code == 401
        r = await b.post("/account/recovery-codes",
                         data={"code": pyotp.TOTP(secret).at((enrol.step + 1) * 30), "csrf_token": token})
        assert r.status_code == 200
        new_codes = re.findall(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>", r.text)
        assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    async with browser(client) as b:
        assert (await second_step(b, staff.username, old_codes[1])).status_code == 401
        token = await form_token(b, "/signin/totp")
        r = await b.post("/signin/totp", data={"code": new_codes[1], "csrf_token": token})
        assert r.status_code == 303
    assert ("recovery-codes-issued", "ok") in await audit_actions(engine, tenant)
