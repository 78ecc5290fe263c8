"""Triage rules on the fixture knowledge base plus the packaged red-flag rules."""

from __future__ import annotations

import pytest

from yiyun.knowledge.triage import CHILD_AGE_LIMIT, age_from_text, triage


def top(r):
    return r["departments"][0]["name"]


@pytest.mark.parametrize("text,kwargs,rule", [
    ("胸口疼出冷汗", {}, "chest_pain_sweating"),
    ("我爸突然嘴歪了说话不清楚", {}, "stroke_signs"),
    ("一侧肢体无力", {}, "stroke_signs"),
    ("喘不上气 嘴唇发紫", {}, "severe_dyspnea"),
    ("吃了海鲜后全身起风团 喉咙发紧喘不过气", {}, "anaphylaxis"),
    ("被刀捅伤 血流不止", {}, "heavy_bleeding"),
    ("不想活了", {}, "suicidal"),
    ("想自杀", {}, "suicidal"),
    ("喝了农药", {}, "poisoning"),
    ("老人晕倒了叫不醒", {}, "unconscious"),
    ("孩子抽搐 口吐白沫", {"age": 3}, "seizure"),
    ("出车祸了 腿上骨头露出来了", {}, "severe_trauma"),
    ("孩子发烧39度 脖子硬", {"age": 5}, "child_fever_stiff_neck"),
])
def test_red_flags_go_to_emergency(fixture_kb, text, kwargs, rule):
    r = triage(text, kb=fixture_kb, **kwargs)
    assert r["urgency"] == "emergency", text
    assert top(r) == "急诊医学科"
    assert r["call_120"] and "120" in r["advice"]
    assert rule in {f["id"] for f in r["red_flags"]}
    assert all(f["sources"] for f in r["red_flags"])


@pytest.mark.parametrize("text", ["无胸痛，无出汗，咳嗽三天", "否认胸痛，没有出汗", "我没有想自杀 就是最近睡不好",
                                  "没有口角歪斜，说话清楚", "腿抽筋 晚上睡觉的时候"])
def test_negated_red_flags_do_not_fire(fixture_kb, text):
    assert triage(text, kb=fixture_kb)["urgency"] != "emergency", text


def test_stiff_neck_rule_is_for_children_only(fixture_kb):
    r = triage("发烧 脖子硬", age=30, kb=fixture_kb)
    assert "child_fever_stiff_neck" not in {f["id"] for f in r["red_flags"]}


def test_high_fever_is_urgent(fixture_kb):
    r = triage("高烧39度8 浑身疼", kb=fixture_kb)
    assert r["urgency"] == "urgent"
    assert top(r) == "发热门诊"


def test_children_go_to_paediatrics(fixture_kb):
    assert CHILD_AGE_LIMIT == 14
    r = triage("发烧咳嗽", age=3, kb=fixture_kb)
    assert top(r) == "儿科"
    assert "医疗机构诊疗科目名录" in r["departments"][0]["reason"]
    assert top(triage("发烧咳嗽", age=14, kb=fixture_kb)) != "儿科"


def test_age_read_from_text(fixture_kb):
    assert age_from_text("我家宝宝8个月") == pytest.approx(8 / 12)
    assert age_from_text("孩子3岁半") == 3.5
    assert top(triage("我家宝宝8个月 拉肚子", kb=fixture_kb)) == "儿科"


def test_newborn_goes_to_neonatology(fixture_kb):
    r = triage("新生儿出生5天 皮肤发黄", kb=fixture_kb)
    assert top(r) == "新生儿科"


def test_child_organ_specialty_kept(fixture_kb):
    names = [d["name"] for d in triage("孩子牙疼", age=8, kb=fixture_kb)["departments"]]
    assert "口腔科" in names


def test_pregnancy_goes_to_obstetrics(fixture_kb):
    r = triage("怀孕8周 肚子有点疼", kb=fixture_kb)
    assert top(r) == "产科" and r["patient"]["pregnant"]
    assert r["urgency"] == "urgent"
    assert not triage("备孕中 肚子疼", kb=fixture_kb)["patient"]["pregnant"]
    assert not triage("没怀孕 肚子疼", kb=fixture_kb)["patient"]["pregnant"]


def test_sex_specific_departments(fixture_kb):
    male = [d["name"] for d in triage("下面出血 肚子疼", sex="male", kb=fixture_kb)["departments"]]
    assert "妇科" not in male and "产科" not in male
    female = [d["name"] for d in triage("下面出血", sex="female", kb=fixture_kb)["departments"]]
    assert "妇科" in female


def test_adult_fever_goes_to_fever_clinic_first(fixture_kb):
    r = triage("发烧38度 咳嗽 嗓子疼", kb=fixture_kb)
    assert top(r) == "发热门诊"
    assert "呼吸内科" in [d["name"] for d in r["departments"]]


def test_scores_and_reasons(fixture_kb):
    r = triage("咳嗽三天有黄痰", kb=fixture_kb)
    assert top(r) == "呼吸内科"
    assert abs(sum(d["score"] for d in r["departments"]) - 1) < 1e-3
    assert all(d["reason"] for d in r["departments"])
    assert r["urgency"] == "routine"


def test_unrecognised_text_gets_general_department(fixture_kb):
    r = triage("今天天气怎么样", kb=fixture_kb)
    assert not r["recognized"] and r["urgency"] == "routine"
    assert top(r) in ("全科医疗科", "内科")


# --- timing: BE-FAST signs are an emergency when sudden, recent or of unknown timing --------


@pytest.mark.parametrize("text", ["突然嘴歪了", "我爸今天早上说话不清", "刚才说话不清", "嘴歪 一小时了",
                                  "昨天开始说话不清", "说话不清两周了 今天突然加重", "嘴歪了"])
def test_stroke_signs_recent_or_untimed_are_an_emergency(fixture_kb, text):
    r = triage(text, kb=fixture_kb)
    assert r["urgency"] == "emergency", text
    assert "stroke_signs" in {f["id"] for f in r["red_flags"]}


@pytest.mark.parametrize("text,urgency", [
    ("说话不清两周了", "urgent"),         # days to weeks: the same day, not an ambulance
    ("三天前开始嘴歪", "urgent"),
    ("嘴歪了三个月了", "routine"),        # months: a sequela
    ("说话不清一年多了", "routine"),
])
def test_old_stroke_signs_are_not_an_emergency(fixture_kb, text, urgency):
    r = triage(text, kb=fixture_kb)
    assert r["urgency"] == urgency, (text, r["red_flags"])
    assert not r["call_120"]
    assert top(r) == "神经内科"
    if urgency == "urgent":
        assert "stroke_signs_subacute" in {f["id"] for f in r["red_flags"]}


def test_chronic_breathlessness_is_not_an_emergency(fixture_kb):
    assert triage("气短好几年了", kb=fixture_kb)["urgency"] == "routine"
    assert triage("喘不上气好几年了", kb=fixture_kb)["urgency"] == "routine"
    assert triage("气短好几年了 这两天加重了", kb=fixture_kb)["urgency"] == "urgent"
    for text in ("喘不上气三天了", "喘不上气", "躺着也喘不上气 好几年了", "喘不上气好几年了 嘴唇发紫"):
        assert triage(text, kb=fixture_kb)["urgency"] == "emergency", text


def test_cramps_are_not_seizures(packaged_kb):
    for text in ("腿抽筋", "腿老抽筋", "晚上睡觉小腿经常抽筋", "脚趾头抽筋", "游泳的时候抽筋了", "手抽筋"):
        r = triage(text, kb=packaged_kb)
        assert r["urgency"] == "routine", (text, r["red_flags"])
        assert "抽搐" not in r["findings"]["present"], text
    # a bare 抽筋 is how parents describe a convulsion; with fever even 手脚抽筋 is one
    assert triage("孩子抽筋了", age=3, kb=packaged_kb)["urgency"] == "emergency"
    assert triage("孩子发烧 手脚抽筋", age=2, kb=packaged_kb)["urgency"] == "emergency"
    assert triage("腿没抽筋", kb=packaged_kb)["urgency"] != "emergency"


def test_context_decides_what_a_phrase_means(packaged_kb):
    r = triage("声音嘶哑 说不出话两周了", kb=packaged_kb)
    assert r["urgency"] == "routine" and top(r) == "耳鼻咽喉科"
    assert "言语不清" not in r["findings"]["present"]
    # a sudden loss of speech stays a stroke sign whatever comes with it
    assert triage("突然声音嘶哑说不出话", kb=packaged_kb)["urgency"] == "emergency"
    r = triage("肩膀疼 胳膊抬不起来", kb=packaged_kb)
    assert r["urgency"] == "routine" and top(r) == "骨科"
    assert triage("爬楼梯就喘", kb=packaged_kb)["urgency"] == "routine"
    assert triage("左边手脚没劲", kb=packaged_kb)["urgency"] == "emergency"


def test_unrecognised_complaint_says_so_and_asks_for_more(packaged_kb):
    r = triage("我也说不上来哪里不对劲", kb=packaged_kb)
    assert r["recognized"] is False and r["urgency"] == "routine"
    assert top(r) == "全科医疗科"
    assert "识别" in r["departments"][0]["reason"]
    assert r["ask_for_detail"] and "没能看懂" in r["advice"] and "具体" in r["advice"]
    assert triage("咳嗽三天", kb=packaged_kb)["ask_for_detail"] is None
