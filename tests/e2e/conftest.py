"""Browser journeys: a real yiyun server and Debian's Chromium driven by Playwright.

Screenshots land in tests/e2e/screens/ (not committed) for people to look at.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI, REPO, running_server

CHROMIUM = "/usr/bin/chromium"
SCREENS = Path(__file__).resolve().parent / "screens"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1366, "height": 900}


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """A real server on SQLite with the schema migrated (tests add the data they need)."""
    data = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{data / 'e2e.db'}", "YIYUN_DATA_DIR": str(data),
           "YIYUN_LOG_LEVEL": "WARNING"}
    env.pop("YIYUN_DEFAULT_TENANT", None)
    subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], env=env, cwd=REPO, check=True,
                   capture_output=True)
    with running_server(env) as base:
        yield base


@pytest.fixture
def browser():
    # Function-scoped on purpose: Playwright's sync API runs its own event loop, which must
    # not outlive the test, or the asyncio tests that follow cannot start theirs.
    if not Path(CHROMIUM).exists():
        message = "Debian chromium is not installed (make system-deps)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def phone(browser):
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, locale="zh-CN")
    page = ctx.new_page()
    yield page
    ctx.close()


@pytest.fixture
def desktop(browser):
    ctx = browser.new_context(viewport=DESKTOP, locale="zh-CN")
    page = ctx.new_page()
    yield page
    ctx.close()


def screenshot(page, name: str) -> Path:
    SCREENS.mkdir(exist_ok=True)
    path = SCREENS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


WAIT = 15_000  # ms, for elements that come after a server round trip


def no_sideways_scroll(page) -> None:
    """Patients' pages fit a 375 px phone without scrolling sideways."""
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], page.url


def sms_code(page, base: str, number: str) -> str:
    """The latest code sent to `number`, read from the development SMS outbox."""
    outbox = page.context.new_page()
    outbox.goto(base + "/dev/sms-outbox")
    body = outbox.locator("#outbox tr", has_text=number).first.locator(".body").inner_text()
    outbox.close()
    return re.search(r"\b(\d{6})\b", body).group(1)


def sign_in_patient(page, base: str, number: str) -> None:
    """A patient opens /patient, is sent to SMS sign-in, and comes back signed in."""
    page.goto(base + "/patient")
    page.wait_for_url(re.compile(r"/signin/patient"))
    page.fill("#phone", number)
    page.click("#send-code button[type=submit]")
    page.locator(".notice").wait_for(timeout=WAIT)
    page.fill("#code", sms_code(page, base, number))
    page.click("#verify-code button[type=submit]")
    page.wait_for_url(base + "/patient")
