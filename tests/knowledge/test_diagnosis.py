"""Assisted diagnosis on the fixture knowledge base."""

from __future__ import annotations

import math

from yiyun.knowledge.diagnosis import LIKELIHOOD, diagnose


def names(r):
    return [c["disease"] for c in r["candidates"]]


def test_probabilities_sum_to_one_and_are_ranked(fixture_kb):
    r = diagnose(["发热", "咳嗽", "咳痰"], ["流涕"], kb=fixture_kb)
    probs = [c["probability"] for c in r["candidates"]]
    assert abs(sum(probs) - 1) < 1e-6
    assert probs == sorted(probs, reverse=True)
    assert names(r)[0] == "肺炎"
    assert r["disclaimer"] and "医生" in r["disclaimer"]


def test_supporting_and_against(fixture_kb):
    r = diagnose(["发热", "咳嗽", "咳痰"], ["流涕"], kb=fixture_kb)
    cold = next(c for c in r["candidates"] if c["disease"] == "急性上呼吸道感染")
    assert "发热" in cold["supporting"]
    assert any("流涕" in a for a in cold["against"])
    assert any("咳痰" in a for a in cold["against"])


def test_explanation_terms_add_up(fixture_kb):
    r = diagnose(["胸痛", "大汗"], age=60, kb=fixture_kb)
    top = r["candidates"][0]
    assert top["disease"] == "急性心肌梗死"
    terms = [t["log_weight"] for t in top["explanation"]]
    assert math.isclose(terms[1], math.log(LIKELIHOOD["very_common"]), abs_tol=1e-3)


def test_absent_findings_lower_a_candidate(fixture_kb):
    with_absent = diagnose(["腹痛"], ["腹泻"], kb=fixture_kb)
    without = diagnose(["腹痛"], kb=fixture_kb)
    p = lambda r: next(c["posterior"] for c in r["candidates"] if c["disease"] == "急性胃肠炎")
    assert p(with_absent) < p(without)


def test_sex_and_age_fit(fixture_kb):
    male = diagnose(["腹痛", "停经", "阴道出血"], sex="male", kb=fixture_kb)
    assert "异位妊娠" not in names(male)
    female = diagnose(["腹痛", "停经", "阴道出血"], sex="female", age=28, kb=fixture_kb)
    assert names(female)[0] == "异位妊娠"
    young = diagnose(["肢体无力", "头晕"], age=8, kb=fixture_kb)
    assert any("年龄" in t["term"] for c in young["candidates"] for t in c["explanation"])


def test_ask_next_separates_top_candidates(fixture_kb):
    r = diagnose(["发热", "咳嗽"], kb=fixture_kb)
    assert r["ask_next"]
    assert not set(r["ask_next"]) & {"发热", "咳嗽"}
    gains = [a["information_gain"] for a in r["ask_next_detail"]]
    assert gains == sorted(gains, reverse=True) and gains[0] > 0


def test_uncertain_when_evidence_is_thin(fixture_kb):
    assert diagnose(["发热"], kb=fixture_kb)["uncertain"]
    assert not diagnose(["胸痛", "大汗", "胸闷"], age=60, kb=fixture_kb)["uncertain"]
    empty = diagnose([], kb=fixture_kb)
    assert empty["uncertain"] and empty["candidates"] == []


def test_free_text_and_synonyms(fixture_kb):
    r = diagnose(text="发烧三天，咳嗽有黄痰，不流鼻涕", kb=fixture_kb)
    assert names(r)[0] == "肺炎"
    assert "流涕" in r["absent"]
    r2 = diagnose(["拉肚子", "肚子疼"], kb=fixture_kb)
    assert names(r2)[0] == "急性胃肠炎"
    assert diagnose(["不存在的症状"], kb=fixture_kb)["unrecognized"] == ["不存在的症状"]


def test_a_narrower_finding_counts_as_its_broader_symptom(packaged_kb):
    # 活动后气促 (exertional breathlessness) supports a disease that lists only 呼吸困难
    r = diagnose(["活动后气促", "咳嗽", "咳痰"], kb=packaged_kb, top=5)
    names = [c["disease"] for c in r["candidates"]]
    assert "慢性阻塞性肺疾病" in names
    copd = next(c for c in r["candidates"] if c["disease"] == "慢性阻塞性肺疾病")
    assert "活动后气促" in copd["supporting"]
