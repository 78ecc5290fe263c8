"""In a real browser: a patient verifies their real name on a phone; a doctor signs up."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, running_server
from tests.e2e.conftest import screenshot, sms_code

pytestmark = pytest.mark.browser
TENANT = "e2e-verify-hospital"
LISI = "430104198506151234"  # 李四 in the sandbox identity provider


def cli(env, *args):
    result = subprocess.run([sys.executable, "-m", "yiyun.cli", *args], env=env, cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("e2e-verify")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING", "YIYUN_SMS_PROVIDER": "outbox", "YIYUN_IDENTITY_PROVIDER": "sandbox"}
    env.pop("YIYUN_DEFAULT_TENANT", None)
    cli(env, "db", "upgrade")
    cli(env, "tenant", "create", TENANT, "--name", "岳麓示范医院", "--kind", "hospital")
    with running_server(env) as base:
        yield base


def sign_in_patient(page, base: str, number: str) -> None:
    page.goto(base + "/signin/patient?next=/me/real-name")
    page.fill("#phone", number)
    page.click("#send-code button[type=submit]")
    page.fill("#code", sms_code(page, base, number))
    page.click("#verify-code button[type=submit]")


def test_patient_verifies_real_name_on_a_phone(server, phone):
    page = phone
    sign_in_patient(page, server, "13912340001")
    page.wait_for_url(re.compile(r"/me/real-name$"))
    assert page.locator("h1").inner_text() == "实名认证"
    page.fill("#rn-name", "王五")
    page.fill("#rn-id", LISI)
    page.click("#real-name-form button[type=submit]")
    assert "姓名与身份证号码不一致" in page.locator(".error").inner_text()
    page.fill("#rn-name", "李四")
    page.fill("#rn-id", LISI)
    page.click("#real-name-form button[type=submit]")
    assert page.locator("#verified").inner_text() == "已通过实名认证"
    assert "430104********1234" in page.content() and LISI not in page.content()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "real-name-verified-phone")


def test_doctor_signs_up_for_approval(server, desktop):
    page = desktop
    page.goto(server + "/register/doctor")
    assert page.locator("h1").inner_text() == "医师注册"
    page.select_option("#r-tenant", TENANT)
    page.fill("#r-department", "心血管内科")
    page.fill("#r-name", "王医生")
    page.fill("#r-cert", "110430100012345")
    page.fill("#r-username", "dr-wang-e2e")
    page.fill("#r-password", "Correct-horse-battery-9")
    screenshot(page, "register-doctor-desktop")
    page.click("#register-form button[type=submit]")
    assert "审核通过后即可登录" in page.locator("#registered").inner_text()
    # the pending account cannot sign in yet
    page.goto(server + "/signin")
    page.fill("#username", "dr-wang-e2e")
    page.fill("#password", "Correct-horse-battery-9")
    page.click("button[type=submit]")
    assert page.locator(".error").count() == 1
