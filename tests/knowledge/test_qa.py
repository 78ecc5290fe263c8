"""Q&A: one test per intent, entity linking, and honest unknowns."""

from __future__ import annotations

import pytest

from yiyun.knowledge.qa import ask, classify
from yiyun.knowledge.search import SearchIndex


@pytest.mark.parametrize("question,intent,entity,needle", [
    ("肺炎有哪些症状", "symptoms", "肺炎", "咳嗽"),
    ("高血压是什么原因引起的", "causes", "原发性高血压", "遗传"),
    ("怎么预防高血压", "prevention", "原发性高血压", "限盐"),
    ("感冒怎么治疗", "treatment", "急性上呼吸道感染", "对症"),
    ("感冒吃什么药", "drugs", "急性上呼吸道感染", "对乙酰氨基酚"),
    ("感冒了挂什么科", "department", "急性上呼吸道感染", "呼吸内科"),
    ("高血压吃什么好", "foods", "原发性高血压", "低盐"),
    ("糖尿病要做什么检查", "checks", "2型糖尿病", "糖化血红蛋白"),
    ("高血压有什么并发症", "complications", "原发性高血压", "脑卒中"),
    ("布洛芬和阿司匹林能一起吃吗", "drug_interaction", "布洛芬", "阿司匹林"),
    ("心肺复苏怎么做", "first_aid", "心肺复苏", "胸外按压"),
    ("什么是流感", "definition", "流行性感冒", "流感病毒"),
])
def test_intents(fixture_kb, question, intent, entity, needle):
    r = ask(question, kb=fixture_kb)
    assert r["intent"] == intent, question
    assert entity in [e["name"] for e in r["entities"]]
    assert r["known"] and needle in r["answer"], r["answer"]
    assert r["sources"]


def test_non_medical_question_is_unknown(fixture_kb):
    r = ask("今天天气怎么样", kb=fixture_kb)
    assert r["known"] is False and r["sources"] == [] and "不知道" in r["answer"]


def test_uncovered_medical_question_is_unknown(fixture_kb):
    r = ask("渐冻症是什么病", kb=fixture_kb)
    assert r["known"] is False


def test_missing_field_is_unknown(fixture_kb):
    r = ask("结膜炎怎么预防", kb=fixture_kb)  # the fixture entry has no prevention text
    assert r["known"] is False


def test_pinyin_homophone_linking(fixture_kb):
    r = ask("高血鸭怎么预防", kb=fixture_kb)
    e = r["entities"][0]
    assert e["name"] == "原发性高血压" and e["match"] == "pinyin"


def test_emergency_description_gets_emergency_answer(fixture_kb):
    r = ask("我胸口疼出冷汗怎么办", kb=fixture_kb)
    assert r["known"] and "120" in r["answer"]


def test_interaction_between_brand_names(fixture_kb):
    r = ask("芬必得和华法林能同时吃吗", kb=fixture_kb)
    assert r["intent"] == "drug_interaction" and "出血" in r["answer"]


def test_classify_prefers_drugs_over_food():
    assert classify("感冒吃什么药") == "drugs"
    assert classify("感冒吃什么好") == "foods"


def test_search_by_name_alias_pinyin_initials(fixture_kb):
    idx = SearchIndex(fixture_kb)
    for q in ("原发性高血压", "高血压", "gaoxueya", "gxy"):
        assert idx.search(q)[0]["name"] == "原发性高血压", q
    assert idx.search("感冒")[0]["name"] == "急性上呼吸道感染"
    assert idx.search("")== []


@pytest.mark.parametrize("question,needle", [
    ("血常规要空腹吗", "不需要空腹"),
    ("胃镜前要注意什么", "禁食"),
    ("血脂报告怎么看", "mmol/L"),
    ("糖化血红蛋白是什么", "2–3个月"),
    ("TCT结果ASC-US是什么意思", "阴道镜"),      # ASCII aliases match whole words only (not AS)
    ("做肠镜要准备什么", "清肠"),
])
def test_check_questions(packaged_kb, question, needle):
    r = ask(question, kb=packaged_kb)
    assert r["known"] and needle in r["answer"], (question, r["answer"])
    assert r["entities"][0]["kind"] == "check"
    assert r["sources"]


def test_disease_checks_say_which_need_fasting(packaged_kb):
    r = ask("高血压要做什么检查", kb=packaged_kb)
    assert r["intent"] == "checks" and "需要空腹" in r["answer"]


def test_interaction_answer_starts_with_a_verdict(fixture_kb):
    r = ask("华法林和阿司匹林能一起吃吗", kb=fixture_kb)
    assert r["answer"].split("\n")[0].startswith(("不能一起用", "一般不建议"))


def test_a_check_question_describing_an_emergency_gets_the_emergency(packaged_kb):
    r = ask("血压190 头疼得厉害 看东西模糊", kb=packaged_kb)
    assert r["answer"].startswith("【紧急】")


def test_a_result_question_gets_the_reading_not_the_preparation(packaged_kb):
    r = ask("空腹血糖高怎么办", kb=packaged_kb)
    assert "结果怎么看" in r["answer"] and "7.0" in r["answer"]
    r = ask("甲功异常挂什么科", kb=packaged_kb)
    assert "内分泌科" in r["answer"]
    assert "一般不需要憋尿" in ask("腹部B超要憋尿吗", kb=packaged_kb)["answer"]
