"""Triage and diagnosis accuracy on the development sets (packaged knowledge base).

Floors come from the measurements in docs/knowledge.md; they are set a little below them so
that an improvement is free and a regression fails. The triage floors were raised after the
timing, cramp and breathlessness fixes (247 cases); they were never lowered.
"""

from __future__ import annotations

import pytest

from yiyun.knowledge import evaluation

from .conftest import DEVSETS

TRIAGE_FLOORS = {"top1": 0.86, "top3": 0.93, "urgency_accuracy": 0.96, "emergency_recall": 0.97}
DIAGNOSIS_FLOORS = {"top1": 0.30, "top3": 0.45}


@pytest.fixture(scope="module")
def triage_cases():
    cases = evaluation.load_cases(DEVSETS / "triage.yaml")
    assert len(cases) >= 200
    return cases


@pytest.fixture(scope="module")
def diagnosis_cases():
    cases = evaluation.load_cases(DEVSETS / "diagnosis.yaml")
    assert len(cases) >= 100
    return cases


def test_devsets_are_well_formed(packaged_kb, triage_cases, diagnosis_cases):
    for c in triage_cases:
        assert c["t"] and c["u"] in ("emergency", "urgent", "routine")
        assert all(d in packaged_kb.departments for d in c["d"]), c
    for c in diagnosis_cases:
        assert c["dx"] and (c.get("text") or c.get("present"))


def test_triage_accuracy(packaged_kb, triage_cases):
    r = evaluation.evaluate_triage(triage_cases, packaged_kb)
    for key, floor in TRIAGE_FLOORS.items():
        assert r[key] >= floor, (key, r[key], r["misses"][:10])
    assert r["emergency_false_alarm_rate"] <= 0.03
    base = evaluation.baseline_keywords(triage_cases, packaged_kb)
    assert r["top1"] > base["top1"] and r["emergency_recall"] > base["emergency_recall"]


def test_diagnosis_accuracy(packaged_kb, diagnosis_cases):
    r = evaluation.evaluate_diagnosis(diagnosis_cases, packaged_kb)
    for key, floor in DIAGNOSIS_FLOORS.items():
        assert r[key] >= floor, (key, r[key], r["misses"][:10])
    assert r["top1"] > evaluation.diagnosis_baseline_prior(diagnosis_cases, packaged_kb)["top1"]
