"""Signing in with a real browser: staff password + TOTP enrolment, then a second sign-in with
a code; a patient with an SMS code read from the development outbox."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pyotp
import pytest

from tests.conftest import REPO, running_server
from tests.e2e.conftest import screenshot

pytestmark = pytest.mark.browser
PASSWORD = "Correct-horse-battery-9"
TENANT = "e2e-signin-hospital"


def cli(env, *args):
    result = subprocess.run([sys.executable, "-m", "yiyun.cli", *args], env=env, cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def signin_server(tmp_path_factory):
    """A real server on SQLite with a hospital and a doctor made through the CLI."""
    data = tmp_path_factory.mktemp("e2e-signin")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING", "YIYUN_SMS_PROVIDER": "outbox", "YIYUN_NEW_PASSWORD": PASSWORD}
    env.pop("YIYUN_DEFAULT_TENANT", None)
    cli(env, "db", "upgrade")
    cli(env, "tenant", "create", TENANT, "--name", "示范测试医院", "--kind", "hospital")
    cli(env, "user", "create", "dr-zhang", "--tenant", TENANT, "--role", "doctor", "--name", "张医生")
    with running_server(env) as base:
        yield base


def test_staff_enrols_totp_then_signs_in_with_a_code(signin_server, desktop):
    page = desktop
    page.goto(signin_server + "/signin?next=/account")
    assert page.locator("h1").inner_text() == "工作人员登录"
    page.fill("#username", "dr-zhang")
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    assert "用户名或密码错误" in page.locator(".error").inner_text()
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/signin/enrol$"))
    assert page.locator(".qr svg").count() == 1
    secret = page.locator("#totp-secret").get_attribute("data-secret")
    screenshot(page, "signin-enrol-desktop")
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("button[type=submit]")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10
    screenshot(page, "signin-recovery-codes-desktop")
    page.click("a.button")
    page.wait_for_url(re.compile(r"/account$"))
    assert "张医生" in page.locator("header .who").inner_text()
    assert page.locator("#sessions tr").count() == 2  # heading + this browser
    screenshot(page, "account-staff-desktop")
    page.click("header form.signout button")
    page.wait_for_url(re.compile(r"/signin$"))
    # second sign-in: password, then a code of the next time step (the enrolment code is spent)
    page.fill("#username", "dr-zhang")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/signin/totp$"))
    screenshot(page, "signin-totp-desktop")
    page.fill("#code", pyotp.TOTP(secret).at(time.time() + 30))
    page.click("button[type=submit]")
    page.wait_for_url(signin_server + "/")
    assert "张医生" in page.locator("header .who").inner_text()


def test_patient_signs_in_with_an_sms_code_on_a_phone(signin_server, phone):
    page = phone
    number = "13912345678"
    page.goto(signin_server + "/signin/patient")
    assert page.locator("h1").inner_text() == "患者登录"
    page.fill("#phone", number)
    page.click("#send-code button[type=submit]")
    assert "验证码已发送" in page.locator(".notice").inner_text()
    outbox = page.context.new_page()
    outbox.goto(signin_server + "/dev/sms-outbox")
    row = outbox.locator("#outbox tr", has_text=number).first
    code = re.search(r"\b(\d{6})\b", row.locator(".body").inner_text()).group(1)
    screenshot(outbox, "sms-outbox-phone")
    outbox.close()
    page.fill("#code", code)
    screenshot(page, "signin-patient-code-phone")
    page.click("#verify-code button[type=submit]")
    page.wait_for_url(signin_server + "/")
    assert "患者5678" in page.locator("header .who").inner_text()
    page.goto(signin_server + "/account")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "account-patient-phone")
