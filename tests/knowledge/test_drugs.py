"""Drug knowledge service: interactions, duplicates, allergy classes, contraindications, doses."""

from __future__ import annotations

from yiyun.knowledge import drugs


def test_lookup_by_brand(fixture_kb):
    assert drugs.lookup("芬必得", fixture_kb).name == "布洛芬"
    assert drugs.lookup("芬必得胶囊", fixture_kb).name == "布洛芬"
    assert drugs.lookup("不存在", fixture_kb) is None


def test_drug_pair_interaction(fixture_kb):
    r = drugs.check_interactions(["华法林", "阿司匹林"], fixture_kb)
    pair = r["pairs"][0]
    assert pair["severity"] == "major" and pair["mechanism"] and pair["advice"] and pair["source"]


def test_class_level_interaction(fixture_kb):
    r = drugs.check_interactions(["华法林", "布洛芬"], fixture_kb)
    assert r["pairs"] and r["pairs"][0]["rule"] == "class"


def test_unknown_drugs_reported(fixture_kb):
    r = drugs.check_interactions(["布洛芬", "神药"], fixture_kb)
    assert r["unknown"] == ["神药"] and r["pairs"] == []


def test_duplicate_therapy_by_ingredient_and_class(fixture_kb):
    dup = drugs.check_interactions(["对乙酰氨基酚", "感康"], fixture_kb)["duplicates"]
    assert dup and dup[0]["reason"] == "same_ingredient"
    d2 = drugs.duplicate_therapy([fixture_kb.drugs["布洛芬"], fixture_kb.drugs["布洛芬"]], fixture_kb)
    assert d2


def test_allergy_cross_reactivity(fixture_kb):
    g = [fixture_kb.drugs["头孢呋辛"], fixture_kb.drugs["阿莫西林"]]
    out = drugs.allergy_conflicts(g, ["青霉素"], fixture_kb)
    levels = {o["drug"]: o["level"] for o in out}
    assert levels["阿莫西林"] == "contraindicated" and levels["头孢呋辛"] == "caution"


def test_contraindications(fixture_kb):
    g = [fixture_kb.drugs["布洛芬"], fixture_kb.drugs["左氧氟沙星"]]
    out = drugs.contraindications(g, conditions=["活动性消化道溃疡"], age=10, pregnant=True, lactating=True,
                                  kb=fixture_kb)
    kinds = {(o["drug"], o["type"]) for o in out}
    assert ("布洛芬", "condition") in kinds
    assert ("左氧氟沙星", "age") in kinds
    assert ("左氧氟沙星", "pregnancy") in kinds and ("左氧氟沙星", "lactation") in kinds


def test_max_daily_dose(fixture_kb):
    ibu = fixture_kb.drugs["布洛芬"]
    assert drugs.dose_check(ibu, 3200, "mg")["level"] == "major"
    assert drugs.dose_check(ibu, 1.2, "g")["level"] == "ok"
    assert drugs.dose_check(fixture_kb.drugs["华法林"], 5, "mg") is None


def test_review_combines_checks(fixture_kb):
    r = drugs.review({"drugs": [{"name": "布洛芬", "daily_dose": {"value": 3.0, "unit": "g"}}, "华法林"],
                      "allergies": ["阿司匹林"], "pregnant": True}, fixture_kb)
    assert r["pairs"] and r["doses"][0]["level"] == "major"
    assert any(a["drug"] == "布洛芬" for a in r["allergies"])  # same NSAID allergy class
    assert any(c["type"] == "pregnancy" for c in r["contraindications"])
