"""The HTTP API and pages through FastAPI's TestClient on an app built from the routers."""

from __future__ import annotations

from urllib.parse import quote

from fastapi.testclient import TestClient

from yiyun.knowledge.kb import get_kb
from yiyun.knowledge.ratelimit import TokenBucketLimiter, set_limiter


def test_triage_endpoint(client):
    r = client.post("/api/knowledge/triage", json={"text": "胸口疼出冷汗", "age": 60, "sex": "male"})
    assert r.status_code == 200
    body = r.json()
    assert body["urgency"] == "emergency" and body["departments"][0]["name"] == "急诊医学科"
    assert {"urgency", "departments", "red_flags"} <= set(body)


def test_diagnose_endpoint(client):
    r = client.post("/api/knowledge/diagnose", json={"present": ["发热", "咳嗽"], "absent": ["腹泻"], "age": 40})
    body = r.json()
    assert r.status_code == 200 and body["candidates"] and "disclaimer" in body
    assert abs(sum(c["probability"] for c in body["candidates"]) - 1) < 1e-3
    assert isinstance(body["uncertain"], bool) and isinstance(body["ask_next"], list)


def test_ask_and_extract_and_interactions(client):
    body = client.post("/api/knowledge/ask", json={"question": "今天天气怎么样"}).json()
    assert body["known"] is False and {"intent", "entities", "answer", "sources"} <= set(body)
    ex = client.post("/api/knowledge/extract", json={"text": "主诉：发热3天。现病史：无咳嗽。"}).json()
    assert ex["note"]["chief_complaint"] == "发热3天"
    assert any(f["start"] >= 0 and f["end"] > f["start"] for f in ex["findings"])
    it = client.post("/api/knowledge/interactions", json={"drugs": ["阿司匹林", "不存在的药"]}).json()
    assert "pairs" in it and "不存在的药" in it["unknown"]


def test_selfcheck_endpoints(client):
    q = client.get("/api/knowledge/selfcheck").json()
    assert q["questions"] and q["version"]
    r = client.post("/api/knowledge/selfcheck", json={"answers": {"age": 40, "spo2": 90}}).json()
    assert r["outcome"] == "call_120" and r["reasons"]
    bad = client.post("/api/knowledge/selfcheck", json={"answers": {"age": "x"}})
    assert bad.status_code == 400


def test_validation_errors_are_4xx(client):
    assert client.post("/api/knowledge/triage", json={"text": ""}).status_code == 422
    assert client.post("/api/knowledge/triage", json={"text": "x", "sex": "other"}).status_code == 422
    assert client.post("/api/knowledge/triage", json={"text": "x" * 5000}).status_code == 422
    assert client.post("/api/knowledge/interactions", json={"drugs": []}).status_code == 422
    assert client.get("/api/knowledge/drugs/不存在的药").status_code == 404


def test_search_endpoint(client):
    body = client.get("/api/knowledge/search", params={"q": "gxy"}).json()
    assert body["results"] and body["results"][0]["name"] == "原发性高血压"


def test_feedback_lands_in_review_queue(client):
    r = client.post("/api/knowledge/feedback", json={"question": "感冒吃什么", "answer": "…", "verdict": "wrong",
                                                     "entity_kind": "disease", "entity_name": "急性上呼吸道感染"})
    assert r.status_code == 201
    page = client.get("/knowledge/review", headers={"X-Yiyun-Role": "staff"})
    assert page.status_code == 200 and "感冒吃什么" in page.text


def test_public_pages(client):
    for path in ("/knowledge/", "/knowledge/search?q=gaoxueya", "/knowledge/disease/原发性高血压",
                 "/knowledge/disease/高血压", "/knowledge/symptom/发热", "/knowledge/list/diseases",
                 "/knowledge/list/symptoms", "/knowledge/triage?text=发烧咳嗽&age=30",
                 "/knowledge/ask?q=高血压吃什么好", "/knowledge/selfcheck"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert 'name="viewport"' in r.text
    assert client.get("/knowledge/disease/没有这个病").status_code == 404
    symptom = client.get("/knowledge/symptom/发热").text
    assert "/knowledge/disease/" in symptom  # a symptom page lists the diseases presenting with it
    res = client.post("/knowledge/selfcheck", data={"age": "40", "spo2": "90"})
    assert res.status_code == 200 and "120" in res.text


def test_rate_limit_per_client(db_url):
    from tests.knowledge.conftest import build_app

    set_limiter(TokenBucketLimiter(rate_per_minute=1, burst=3))
    try:
        c = TestClient(build_app())
        codes = [c.post("/api/knowledge/ask", json={"question": "感冒"}).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = c.post("/api/knowledge/ask", json={"question": "感冒"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    finally:
        set_limiter(None)


def test_token_bucket_refills():
    now = [0.0]
    lim = TokenBucketLimiter(rate_per_minute=60, burst=2, clock=lambda: now[0])
    assert lim.take("a")[0] and lim.take("a")[0] and not lim.take("a")[0]
    assert lim.take("b")[0]  # per client
    now[0] = 1.0
    assert lim.take("a")[0]


def test_check_pages_and_links(client):
    page = client.get("/knowledge/check/血脂").text
    assert "需空腹" in page and "结果怎么看" in page and "/knowledge/disease/" in page
    alias = client.get("/knowledge/check/头颅磁共振")  # the name a disease uses finds the described entry
    assert alias.status_code == 200 and "<h1>头颅MRI</h1>" in alias.text
    plain = client.get("/knowledge/check/" + next(c for c in get_kb().all_checks() if c not in get_kb().checks))
    assert plain.status_code == 200 and "暂无详细介绍" in plain.text
    disease = client.get("/knowledge/disease/原发性高血压").text
    assert "/knowledge/check/" + quote("血脂") in disease


def test_pages_share_the_nav_and_missing_entries_are_pages(client):
    for path in ("/knowledge/", "/knowledge/ask", "/knowledge/triage", "/knowledge/selfcheck",
                 "/knowledge/check/血常规", "/knowledge/list/checks"):
        text = client.get(path).text
        for label in ("医典</a>", "问答</a>", "导诊</a>", "自查</a>"):
            assert label in text, (path, label)
        assert "不能替代医生" in text
    r = client.get("/knowledge/symptom/没有这个症状")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html") and "医典导航" in r.text
    bad = client.get("/knowledge/triage?text=头疼&age=abc")
    assert bad.status_code == 422 and "年龄请填数字" in bad.text
