"""Chat message times in the viewer's own time zone (chat.js `formatSent`): "HH:mm" for
today, "MM-DD HH:mm" before, whatever zone the browser is in; never UTC as sent."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser
CHAT_JS = REPO / "src" / "yiyun" / "web" / "static" / "consultation" / "chat.js"
NOW = "2026-03-02T02:00:00Z"  # 10:00 on 2 March in Shanghai, 21:00 on 1 March in New York

CASES = {
    "Asia/Shanghai": {"2026-03-02T01:30:00Z": "09:30", "2026-03-01T15:30:00Z": "03-01 23:30",
                      "2025-12-31T16:05:00Z": "01-01 00:05"},
    "America/New_York": {"2026-03-02T01:30:00Z": "20:30", "2026-03-01T15:30:00Z": "10:30",
                         "2026-02-28T12:00:00Z": "02-28 07:00"},
}


@pytest.mark.parametrize("zone", sorted(CASES))
def test_message_times_are_shown_in_the_viewers_time_zone(browser, zone):
    ctx = browser.new_context(timezone_id=zone, locale="zh-CN")
    try:
        page = ctx.new_page()
        page.set_content("<!doctype html><html><head></head><body></body></html>")
        page.add_script_tag(content=CHAT_JS.read_text(encoding="utf-8"))
        for sent, shown in CASES[zone].items():
            assert page.evaluate("([s, n]) => YiyunChat.formatSent(s, n)", [sent, NOW]) == shown, (zone, sent)
        assert page.evaluate("() => YiyunChat.formatSent('not a time')") == ""
        assert page.evaluate("() => YiyunChat.formatSent(null)") == ""
    finally:
        ctx.close()
