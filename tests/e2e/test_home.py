"""The home page as people see it, on a phone and on a desktop."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import screenshot

pytestmark = pytest.mark.browser


def test_home_on_a_phone_in_chinese(live_server, phone):
    phone.goto(live_server + "/")
    assert phone.locator("h1").inner_text() == "医云"
    cards = phone.locator("article.card h2").all_inner_texts()
    assert cards[:5] == ["患者服务", "医生工作站", "药师审方", "医院管理", "公共卫生"]
    # nothing is wider than the phone: no sideways scrolling
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(phone, "home-phone-zh")


def test_home_switches_to_english_and_links_the_fhir_api(live_server, desktop):
    desktop.goto(live_server + "/")
    desktop.click("text=English")
    assert desktop.locator("article.card h2").first.inner_text() == "Patients"
    screenshot(desktop, "home-desktop-en")
    desktop.click("text=FHIR R4 API")
    assert '"CapabilityStatement"' in desktop.content()
