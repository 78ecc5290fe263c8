"""The home page and the health probes."""

from __future__ import annotations


async def test_home_page_is_chinese_by_default_and_links_the_api(client):
    r = await client.get("/")
    assert r.status_code == 200
    html = r.text
    assert '<html lang="zh-CN">' in html
    for text in ("医云", "患者服务", "医生工作站", "药师审方", "医院管理", "公共卫生"):
        assert text in html
    assert "/fhir/R4/metadata" in html and "/api/docs" in html
    assert 'href="/knowledge"' in html


async def test_home_page_in_english(client):
    r = await client.get("/", params={"lang": "en"})
    assert "Patients" in r.text and '<html lang="en">' in r.text
    assert r.cookies.get("lang") == "en"


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["revision"] == ready.json()["head"]


async def test_readiness_fails_without_database(client, monkeypatch, tmp_path):
    from yiyun.core.db import dispose_engines
    from yiyun.core.settings import get_settings

    monkeypatch.setenv("YIYUN_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    r = await client.get("/readyz")
    assert r.status_code == 503
    await dispose_engines()
