"""Pages show a service's bilingual message in their own language only."""

from __future__ import annotations

import pytest

from yiyun.core.i18n import in_locale


@pytest.mark.parametrize(("message", "zh", "en"), [
    ("病历已保存 (record saved)", "病历已保存", "record saved"),
    ("号源已被预约（slot already booked）", "号源已被预约", "slot already booked"),
    ("请说明紧急调阅的理由（至少 10 个字）(a reason of at least 10 characters is required)",
     "请说明紧急调阅的理由（至少 10 个字）", "a reason of at least 10 characters is required"),
    ("只有中文", "只有中文", "只有中文"),
    ("only English (really)", "only English (really)", "only English (really)"),
    ("未找到患者 (没有英文)", "未找到患者 (没有英文)", "未找到患者 (没有英文)"),
])
def test_bilingual_messages_split_by_locale(message, zh, en):
    assert in_locale(message, "zh_CN") == zh
    assert in_locale(message, "en") == en


def test_a_page_shows_the_message_in_its_language():
    from starlette.requests import Request

    from yiyun.core.templating import render

    def request(query: bytes) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "query_string": query, "headers": []})

    message = "号源已被预约 (slot already booked)"
    zh = render(request(b""), "hospital/problem.html", message=message).body.decode()
    en = render(request(b"lang=en"), "hospital/problem.html", message=message).body.decode()
    assert "号源已被预约</p>" in zh and "slot already booked" not in zh
    assert "slot already booked</p>" in en and "号源已被预约" not in en
