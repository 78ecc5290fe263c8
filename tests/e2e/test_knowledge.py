"""The encyclopedia, Q&A and triage as a patient uses them on a phone (375 px, zh-CN).

The server is fresh: SQLite with the schema migrated and no `yiyun knowledge import` run, so
every page here is served from the packaged data files alone.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import screenshot

pytestmark = pytest.mark.browser

NAV = ("医典", "问答", "导诊", "自查")
MIN_TAP = 44  # px: the smallest comfortable touch target (Apple HIG; WCAG 2.5.5 asks 44 CSS px)
TAP_TARGETS = ("header a, nav.kb-nav a, main button, main .tags a, main a.call, main a.btn, main summary, "
               "main .results a, main .departments a, main label.opt")


def no_sideways_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{page.url} is {width}px wide"


def tap_targets_too_small(page, selector: str) -> list[str]:
    small = []
    for el in page.locator(selector).all():
        if not el.is_visible():
            continue
        box = el.bounding_box()
        if box and (box["height"] < MIN_TAP - 0.5 or box["width"] < MIN_TAP - 0.5):
            small.append(f"{el.inner_text().strip()[:12]!r} {box['width']:.0f}×{box['height']:.0f}")
    return small


def check_page(page) -> None:
    """What every knowledge page owes a patient on a phone."""
    no_sideways_scroll(page)
    nav = page.locator("nav.kb-nav a")
    assert [t.strip() for t in nav.all_inner_texts()] == list(NAV)
    small = tap_targets_too_small(page, TAP_TARGETS)
    assert not small, small
    assert "不能替代" in page.locator("footer").inner_text()  # the disclaimer is always there


def search(page, live_server, query: str) -> None:
    page.goto(live_server + "/knowledge/")
    page.fill("input[name=q]", query)
    page.locator("form.search button").click()
    page.wait_for_url(re.compile(r"/knowledge/search\?q="))


def test_search_by_name_and_by_pinyin_initials(live_server, phone):
    phone.goto(live_server + "/knowledge/")
    check_page(phone)
    screenshot(phone, "knowledge-home-phone")

    search(phone, live_server, "高血压")
    assert phone.locator(".results .name").first.inner_text() == "原发性高血压"  # the alias finds it first
    check_page(phone)
    screenshot(phone, "knowledge-search-name-phone")

    search(phone, live_server, "gxy")
    row = phone.locator(".results li").filter(has=phone.get_by_text("原发性高血压", exact=True))
    assert row.count() == 1 and "拼音" in row.inner_text()
    check_page(phone)
    screenshot(phone, "knowledge-search-initials-phone")

    row.locator("a").click()
    phone.wait_for_url(re.compile(r"/knowledge/disease/"))
    assert phone.locator("h1").inner_text() == "原发性高血压"


def test_disease_symptom_and_check_pages_link_each_other(live_server, phone):
    phone.goto(live_server + "/knowledge/disease/原发性高血压")
    assert phone.locator("h1").inner_text() == "原发性高血压"
    assert phone.locator("h2", has_text="症状").count() == 1
    assert phone.locator(".sources").first.inner_text().startswith("来源")
    check_page(phone)
    screenshot(phone, "knowledge-disease-phone")

    # a symptom of the disease: its page lists the diseases that present with it
    phone.locator("section.symptoms .tags a").first.click()
    phone.wait_for_url(re.compile(r"/knowledge/symptom/"))
    symptom = phone.locator("h1").inner_text()
    diseases = phone.locator("section.diseases a")
    assert diseases.count() >= 2, symptom
    assert "原发性高血压" in diseases.all_inner_texts()
    check_page(phone)
    screenshot(phone, "knowledge-symptom-phone")

    # follow a related link to another disease
    other = next(n for n in diseases.all_inner_texts() if n != "原发性高血压")
    diseases.filter(has_text=re.compile(f"^{re.escape(other)}$")).first.click()
    phone.wait_for_url(re.compile(r"/knowledge/disease/"))
    assert phone.locator("h1").inner_text() == other
    check_page(phone)

    # the disease's checks: a described check tells how to prepare and how to read it
    phone.goto(live_server + "/knowledge/disease/原发性高血压")
    phone.locator("section.checks .tags a", has_text="血脂").click()
    phone.wait_for_url(re.compile(r"/knowledge/check/"))
    assert phone.locator("h1").inner_text() == "血脂"
    assert phone.locator(".badge", has_text="需空腹").count() == 1
    for heading in ("是什么", "检查前准备", "结果怎么看"):
        assert phone.locator("h2", has_text=heading).count() == 1, heading
    assert "原发性高血压" in phone.locator("section.diseases").inner_text()
    check_page(phone)
    screenshot(phone, "knowledge-check-phone")

    # and its drugs
    phone.goto(live_server + "/knowledge/disease/原发性高血压")
    drug = phone.locator("section.drugs .tags a").first
    name = drug.inner_text()
    drug.click()
    phone.wait_for_url(re.compile(r"/knowledge/drug/"))
    assert phone.locator("h1").inner_text() == name
    assert phone.locator("h2", has_text="禁忌").count() == 1
    check_page(phone)
    screenshot(phone, "knowledge-drug-phone")


def test_first_aid_is_one_tap_away(live_server, phone):
    phone.goto(live_server + "/knowledge/ask")
    phone.locator("header a", has_text="急救").click()
    phone.wait_for_url(re.compile(r"/knowledge/list/firstaid"))
    check_page(phone)
    phone.locator("main .tags a", has_text="心肺复苏").first.click()
    phone.wait_for_url(re.compile(r"/knowledge/firstaid/"))
    assert phone.locator("ol.steps li").count() >= 3
    check_page(phone)
    screenshot(phone, "knowledge-firstaid-phone")


@pytest.mark.parametrize("question,shot,needle", [
    ("布洛芬和阿司匹林能一起吃吗", "knowledge-ask-interaction-phone", "阿司匹林"),
    ("高血压吃什么好", "knowledge-ask-food-phone", "低盐"),
    ("胃镜前要注意什么", "knowledge-ask-check-phone", "禁食"),
])
def test_ask_a_question_and_see_the_sources(live_server, phone, question, shot, needle):
    phone.goto(live_server + "/knowledge/ask")
    check_page(phone)
    phone.fill("textarea[name=q], input[name=q]", question)
    phone.locator("form.ask button[type=submit]").click()
    phone.wait_for_url(re.compile(r"/knowledge/ask\?q="))
    answer = phone.locator(".answer")
    assert needle in answer.inner_text()
    assert phone.locator(".answer .sources").inner_text().startswith("来源")
    check_page(phone)
    screenshot(phone, shot)
    if shot == "knowledge-ask-food-phone":  # feedback is stored in the migrated database
        phone.get_by_role("button", name="有帮助").click()
        phone.wait_for_url(re.compile(r"/knowledge/feedback"))
        assert "感谢" in phone.locator("h1").inner_text()
        check_page(phone)


def test_triage_a_colloquial_complaint(live_server, phone):
    phone.goto(live_server + "/knowledge/triage")
    check_page(phone)
    screenshot(phone, "knowledge-triage-form-phone")
    phone.fill("textarea[name=text]", "拉肚子两天了 一天五六次 肚子有点疼")
    phone.locator("form.triage button[type=submit]").click()
    phone.wait_for_url(re.compile(r"/knowledge/triage\?"))
    result = phone.locator(".urgency")
    assert "门诊" in result.inner_text()
    assert phone.locator(".departments li").first.inner_text().startswith("消化内科")
    assert phone.locator("a.call").count() == 0
    check_page(phone)
    screenshot(phone, "knowledge-triage-routine-phone")


def test_triage_an_emergency_puts_120_first(live_server, phone):
    phone.goto(live_server + "/knowledge/triage?text=" + "我爸刚才突然嘴歪了 说话也说不清楚")
    banner = phone.locator(".urgency.alert")
    assert "120" in banner.inner_text()
    call = phone.locator("a.call")
    assert call.get_attribute("href") == "tel:120"
    box = call.bounding_box()
    assert box["y"] + box["height"] <= 812, "the call button must be visible without scrolling"
    assert box["height"] >= 48
    assert phone.locator(".departments li").first.inner_text().startswith("急诊医学科")
    check_page(phone)
    screenshot(phone, "knowledge-triage-emergency-phone")


def test_triage_says_when_it_does_not_understand(live_server, phone):
    phone.goto(live_server + "/knowledge/triage?text=" + "我也说不上来哪里不对劲")
    assert "没能看懂" in phone.locator(".urgency").inner_text()
    assert phone.locator(".departments li").first.inner_text().startswith("全科医疗科")
    check_page(phone)


def test_self_check_and_missing_entries_stay_in_the_site(live_server, phone):
    phone.goto(live_server + "/knowledge/selfcheck")
    check_page(phone)
    screenshot(phone, "knowledge-selfcheck-phone")
    response = phone.goto(live_server + "/knowledge/disease/没有这个病")
    assert response.status == 404
    assert "没有" in phone.locator("main").inner_text()
    check_page(phone)


def test_the_knowledge_api_answers_without_an_import(live_server, phone):
    r = phone.request.post(live_server + "/api/knowledge/ask", data={"question": "血常规要空腹吗"})
    assert r.status == 200 and r.json()["known"]
    r = phone.request.post(live_server + "/api/knowledge/triage", data={"text": "气短好几年了，爬楼梯喘"})
    assert r.status == 200 and r.json()["urgency"] == "routine"
