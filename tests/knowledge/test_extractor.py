"""The finding extractor on hand-written sentences (fixture knowledge base)."""

from __future__ import annotations

import pytest

from yiyun.knowledge.extractor import Extractor
from yiyun.knowledge.numerals import parse_number


@pytest.fixture(scope="module")
def ex(fixture_kb) -> Extractor:
    return Extractor(fixture_kb)


def findings(ex, text):
    return {f.symptom: f for f in ex.extract(text).findings}


@pytest.mark.parametrize("text,absent,present", [
    ("无发热、咳嗽，咽痛2周", ["发热", "咳嗽"], ["咽痛"]),
    ("否认胸痛，偶有心慌", ["胸痛"], ["心悸"]),
    ("没有发烧 也不咳嗽 就是鼻塞", ["发热", "咳嗽"], ["鼻塞"]),
    ("发烧三天了不咳嗽就是头疼", ["咳嗽"], ["发热", "头痛"]),
    ("未见皮疹，诉腹痛", ["皮疹"], ["腹痛"]),
    ("肚子不疼了但是有点恶心", ["腹痛"], ["恶心"]),
    ("头疼 但是没有呕吐", ["呕吐"], ["头痛"]),
    ("无明显诱因出现腹痛3天", [], ["腹痛"]),
    ("发烧没有，咳嗽有", ["发热"], ["咳嗽"]),
])
def test_negation(ex, text, absent, present):
    f = findings(ex, text)
    for s in absent:
        assert f[s].negated, (text, s)
    for s in present:
        assert f[s].polarity == "present", (text, s)


def test_uncertainty_and_frequency(ex):
    f = findings(ex, "不排除肺炎，可能有发热，偶有咳嗽")
    assert f["发热"].uncertain and not f["发热"].negated
    assert f["咳嗽"].frequency == "occasional" and f["咳嗽"].polarity == "present"
    cond = ex.extract("不排除肺炎").conditions
    assert cond and cond[0]["disease"] == "肺炎" and cond[0]["uncertain"]


def test_question_is_uncertain(ex):
    assert findings(ex, "有没有发烧")["发热"].polarity == "possible"


@pytest.mark.parametrize("text,symptom,days", [
    ("咳嗽三天", "咳嗽", 3),
    ("发热2周", "发热", 14),
    ("腹泻半个月", "腹泻", 15),
    ("头痛十来天", "头痛", 11),
    ("三天前开始发烧", "发热", 3),
    ("两天来咳嗽", "咳嗽", 2),
    ("一天半前开始拉稀", "腹泻", 1.5),
    ("咽痛一个多月", "咽痛", 39),  # 一个多月: a month and a bit
    ("从昨天开始头疼", "头痛", 1),
])
def test_durations(ex, text, symptom, days):
    d = findings(ex, text)[symptom].duration
    assert d is not None and d["days"] == pytest.approx(days, abs=0.5), text


def test_duration_offsets_point_into_text(ex):
    text = "患者咳嗽三天，伴发热"
    r = ex.extract(text)
    for f in r.findings:
        assert text[f.start:f.end] == f.text
    d = next(f for f in r.findings if f.symptom == "咳嗽").duration
    assert text[d["start"]:d["end"]] == "三天"


@pytest.mark.parametrize("text,value", [
    ("体温38.5度", 38.5), ("最高39℃", 39.0), ("烧到三十九度", 39.0), ("三十八度五", 38.5),
    ("T 37.8", 37.8), ("38度5", 38.5),
])
def test_temperatures(ex, text, value):
    r = ex.extract(text)
    assert r.max_temperature == pytest.approx(value)
    assert "发热" in r.present  # ≥37.3℃ is fever


def test_normal_temperature_is_not_fever(ex):
    r = ex.extract("体温36.8℃，咳嗽")
    assert r.max_temperature == 36.8 and "发热" not in r.present


def test_synonyms_typos_and_colloquial(ex):
    r = ex.extract("拉稀好几天 咳簌 嗓子疼 心慌 脑壳疼")
    assert {"腹泻", "咳嗽", "咽痛", "心悸", "头痛"} <= set(r.present)


def test_site_pain_and_severity(ex):
    f = findings(ex, "右下腹疼得厉害")
    assert f["腹痛"].body_site == "右下腹" and f["腹痛"].severity == "severe"
    assert findings(ex, "有点头疼")["头痛"].severity == "mild"
    assert findings(ex, "剧烈头痛")["头痛"].severity == "severe"


def test_single_character_terms_need_a_word_boundary(ex):
    assert "呕吐" in ex.extract("吃了就吐").present
    assert "呕吐" not in ex.extract("我想吐槽一下医院").present


def test_department_names_are_not_symptoms(ex):
    assert "发热" not in ex.extract("去了发热门诊").present


def test_epidemiological_history(ex):
    r = ex.extract("上周去过武汉出差，接触过确诊病例")
    kinds = {(e["type"], e.get("place") or e.get("with")): e for e in r.epidemiology}
    assert ("travel", "武汉") in kinds and not kinds[("travel", "武汉")]["negated"]
    contact = next(e for e in r.epidemiology if e["type"] == "contact")
    assert not contact["negated"] and "确诊" in contact["with"]
    assert r.text[contact["start"]:contact["end"]] == contact["text"]


def test_negated_epidemiological_history(ex):
    r = ex.extract("否认疫区旅居史，否认与确诊病例接触")
    assert r.epidemiology and all(e["negated"] for e in r.epidemiology)


def test_colleague_confirmed_is_contact(ex):
    r = ex.extract("同事确诊了，我这两天嗓子疼")
    assert any(e["type"] == "contact" and not e["negated"] for e in r.epidemiology)


def test_note_sections_by_heading(ex):
    note = ("主诉：发热伴咳嗽3天。现病史：患者3天前无明显诱因出现发热，最高39℃，伴咳嗽。"
            "既往史：高血压病史5年。流行病学史：否认疫区旅居史。")
    s = ex.structure_note(note)
    assert s["chief_complaint"] == "发热伴咳嗽3天"
    assert "最高39℃" in s["present_illness"]
    assert "高血压" in s["past_history"]
    assert "疫区" in s["epidemiological_history"]


def test_note_sections_by_heuristics(ex):
    s = ex.structure_note("咳嗽三天。昨天开始发烧，吃了退烧药。以前有高血压病史。上周从武汉回来。")
    assert s["chief_complaint"] == "咳嗽三天"
    assert "高血压" in s["past_history"]
    assert "武汉" in s["epidemiological_history"]
    assert "发烧" in s["present_illness"]


@pytest.mark.parametrize("text,value", [("三", 3), ("十五", 15), ("二十三", 23), ("两三", 2.5), ("十几", 15),
                                        ("半", 0.5), ("2.5", 2.5), ("一百", 100)])
def test_chinese_numerals(text, value):
    assert parse_number(text) == value
