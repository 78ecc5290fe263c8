"""The packaged knowledge data must validate: no dangling names, sources everywhere, unique
names, ICD-10 codes from the national clinical edition 2.0."""

from __future__ import annotations

from yiyun.knowledge import icd10
from yiyun.knowledge import kb as kb_module


def test_icd10_list_is_available():
    assert icd10.locate() is not None
    assert icd10.name_of("I10.x00") == "特发性(原发性)高血压"


def test_fixture_data_is_valid(fixture_kb):
    assert kb_module.validate(fixture_kb) == []


def test_validation_catches_each_kind_of_problem(fixture_kb, tmp_path):
    import shutil

    from tests.knowledge.conftest import FIXTURES

    shutil.copytree(FIXTURES, tmp_path / "d")
    (tmp_path / "d" / "diseases" / "zz.yaml").write_text(
        "- {name: 肺炎, icd10: J18.900, departments: [呼吸内科], sources: [x]}\n"
        "- {name: 新病, icd10: J18.999x999, departments: [呼吸内科], symptoms: [{name: 鬼症状, weight: common}],"
        " drugs: [鬼药]}\n", encoding="utf-8")
    errors = "\n".join(kb_module.validate(kb_module.load(tmp_path / "d")))
    assert "重复的疾病名称：肺炎" in errors
    assert "鬼症状" in errors and "鬼药" in errors
    assert "J18.999x999" in errors
    assert "「新病」缺少来源" in errors


def test_packaged_data_is_valid(packaged_kb):
    counts = packaged_kb.counts()
    assert counts["diseases"] > 0 and counts["symptoms"] > 0, "packaged knowledge data is missing"
    errors = kb_module.validate(packaged_kb)
    assert errors == [], f"{len(errors)} problems, first: {errors[:20]}"


def test_own_data_files_are_sourced(packaged_kb):
    assert packaged_kb.redflags and all(r.get("sources") for r in packaged_kb.redflags)
    assert all(d.raw.get("sources") for d in packaged_kb.departments.values())
    assert len(packaged_kb.departments) == 49
