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


def test_checks_plain_text_is_fine_and_described_checks_are_validated(tmp_path):
    import shutil

    from tests.knowledge.conftest import FIXTURES

    shutil.copytree(FIXTURES, tmp_path / "d")
    (tmp_path / "d" / "diseases" / "zz.yaml").write_text(
        "- {name: 新病, icd10: J18.900, category: J18, departments: [呼吸内科], checks: [某个没写介绍的检查, 血常规],"
        " sources: [x]}\n", encoding="utf-8")
    (tmp_path / "d" / "checks").mkdir()
    (tmp_path / "d" / "checks" / "a.yaml").write_text(
        "- {name: 血常规, aliases: [血象], category: 检验, what: 抽血计数, purpose: 看贫血和感染, fasting: false,"
        " sources: [《诊断学》第9版]}\n"
        "- {name: 没来源的检查, what: 某, purpose: 某}\n"
        "- {name: 撞名的检查, aliases: [血象], what: 某, purpose: 某, category: 算命, sources: [x]}\n"
        "- {name: 没介绍的检查, sources: [x]}\n", encoding="utf-8")
    kb = kb_module.load(tmp_path / "d")
    errors = "\n".join(kb_module.validate(kb, check_icd10=False))
    assert "某个没写介绍的检查" not in errors  # a plain-text check is not a dangling reference
    assert "检查「没来源的检查」缺少来源" in errors
    assert "「血象」与检查「血常规」重复" in errors
    assert "category「算命」" in errors
    assert "检查「没介绍的检查」缺少 what" in errors
    # the plain name and the described one both list the disease
    assert kb.diseases_by_check["某个没写介绍的检查"] == ["新病"]
    assert "新病" in kb.diseases_by_check["血常规"] and kb.check("血象")["name"] == "血常规"


COMMON_CHECKS = ("血常规", "尿常规", "肝功能", "肾功能", "血脂", "空腹血糖", "糖化血红蛋白", "心电图", "胸部X线",
                 "胸部CT", "腹部B超", "甲状腺功能", "幽门螺杆菌检测", "胃镜", "肠镜", "头颅CT", "头颅MRI", "核酸检测",
                 "抗原检测")


def test_packaged_checks_explain_themselves(packaged_kb):
    checks = packaged_kb.checks
    assert len(checks) >= 60
    for name in COMMON_CHECKS:
        assert name in checks, name
    for name, c in checks.items():
        for key in ("what", "purpose", "preparation", "results", "sources", "category"):
            assert c.get(key), (name, key)
        assert isinstance(c.get("fasting"), bool), name
    assert not [e for e in kb_module.validate(packaged_kb, check_icd10=False) if "检查「" in e]
    # names used by the diseases resolve to the described entries
    assert packaged_kb.check_name("头颅磁共振") == "头颅MRI"
    assert packaged_kb.check_name("腹部超声") == "腹部B超"
    assert packaged_kb.check_name("碳13尿素呼气试验") == "幽门螺杆菌检测"
    assert checks["腹部B超"]["fasting"] and checks["泌尿系超声"]["full_bladder"]
    assert not checks["糖化血红蛋白"]["fasting"]
