"""Epidemic self-check: one test per branch of the versioned rules."""

from __future__ import annotations

import pytest

from yiyun.core.errors import BadRequest, NotFound
from yiyun.knowledge.selfcheck import evaluate, questionnaire


def outcome(answers):
    return evaluate(answers)["outcome"]


def test_questionnaire_cites_its_version():
    q = questionnaire()
    assert q["version"] == "试行第十版"
    assert any("第十版" in s for s in q["sources"])
    assert {x["id"] for x in q["questions"]} >= {"age", "symptoms", "spo2", "danger"}


@pytest.mark.parametrize("answers,expected,rule", [
    ({"age": 40, "danger": ["confusion"]}, "call_120", "altered_consciousness"),
    ({"age": 40, "spo2": 92}, "call_120", "low_spo2"),
    ({"age": 40, "resp_rate": 32}, "call_120", "fast_breathing_adult"),
    ({"age": 40, "danger": ["breathless", "chest_pain"]}, "call_120", "breathless_with_chest_pain"),
    ({"age": 40, "danger": ["breathless"]}, "fever_clinic", "breathless"),
    ({"age": 40, "danger": ["chest_pain"]}, "fever_clinic", "chest_pain"),
    ({"age": 40, "symptoms": ["fever"], "fever_days": 4}, "fever_clinic", "persistent_high_fever"),
    ({"age": 60, "worsening": "yes"}, "fever_clinic", "comorbidity_worsening"),
    ({"age": 4, "child_signs": ["refuses_food"]}, "fever_clinic", "child_warning"),
    ({"age": 30, "pregnancy_signs": ["bleeding"]}, "fever_clinic", "pregnancy_warning"),
    ({"age": 0.2, "symptoms": ["fever"]}, "fever_clinic", "infant_fever"),
    ({"age": 50, "symptoms": ["cough"], "risk": ["chronic"]}, "fever_clinic", "high_risk_infected"),
    ({"age": 70, "symptoms": ["cough"]}, "fever_clinic", "elderly_infected"),
    ({"age": 30, "symptoms": ["fever", "cough"], "temperature": 38.2}, "home_observation", "mild_symptoms"),
    ({"age": 30, "test": "positive"}, "home_observation", "positive_no_symptoms"),
    ({"age": 30}, "home_observation", "no_symptoms"),
])
def test_branches(answers, expected, rule):
    r = evaluate(answers)
    assert r["outcome"] == expected
    assert rule in {x["rule"] for x in r["reasons"]}
    assert all(x["source"] for x in r["reasons"])
    assert r["advice"]


def test_children_fast_breathing_not_judged_by_adult_threshold():
    assert outcome({"age": 2, "resp_rate": 32}) == "home_observation"


def test_temperature_counts_as_fever():
    r = evaluate({"age": 30, "temperature": 38.6})
    assert "fever" in r["answers"]["symptoms"]


@pytest.mark.parametrize("answers", [{}, {"age": "abc"}, {"age": 500}, {"age": 30, "symptoms": ["xyz"]},
                                     {"age": 30, "test": ["positive", "negative"]}])
def test_bad_answers_are_rejected(answers):
    with pytest.raises(BadRequest):
        evaluate(answers)


def test_unknown_version():
    with pytest.raises(NotFound):
        evaluate({"age": 30}, version="第一版")
