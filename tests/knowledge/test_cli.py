"""`yiyun knowledge …` commands print one JSON object with --json."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from yiyun.knowledge.cli import app

from .conftest import FIXTURES

runner = CliRunner()


def run(*args):
    r = runner.invoke(app, [*args, "--json", "--data-dir", str(FIXTURES)])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_triage():
    out = run("triage", "胸口疼出冷汗", "--age", "60", "--sex", "male")
    assert out["urgency"] == "emergency"


def test_diagnose_lists_and_text():
    out = run("diagnose", "--present", "发热,咳嗽", "--absent", "腹泻")
    assert out["candidates"] and "disclaimer" in out
    out2 = run("diagnose", "--text", "发烧咳嗽有黄痰")
    assert out2["candidates"][0]["disease"] == "肺炎"


def test_ask_extract_interactions_search():
    assert run("ask", "感冒了挂什么科")["known"]
    assert run("extract", "无发热，咳嗽3天")["absent"] == ["发热"]
    assert run("interactions", "华法林", "阿司匹林")["pairs"][0]["severity"] == "major"
    assert run("search", "gxy")["results"][0]["name"] == "原发性高血压"


def test_validate_fixture_data():
    assert run("validate")["ok"]


def test_import_into_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    r = runner.invoke(app, ["import", "--json", "--data-dir", str(FIXTURES), "--database-url", url,
                            "--create-tables"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["counts"]["diseases"] == 15 and out["inserted"] > 0
    again = json.loads(runner.invoke(app, ["import", "--json", "--data-dir", str(FIXTURES), "--database-url",
                                           url]).stdout)
    assert again["inserted"] == 0 and again["updated"] == out["inserted"]


def test_import_refuses_invalid_data(tmp_path):
    bad = tmp_path / "data"
    (bad / "diseases").mkdir(parents=True)
    (bad / "diseases" / "x.yaml").write_text(
        "- {name: 某病, icd10: ZZZ, departments: [没有的科], symptoms: [{name: 没有的症状, weight: common}]}\n",
        encoding="utf-8")
    r = runner.invoke(app, ["import", "--json", "--data-dir", str(bad), "--database-url",
                            f"sqlite:///{tmp_path / 'k.db'}"])
    assert r.exit_code == 1
    errors = json.loads(r.stdout)["errors"]
    text = "\n".join(errors)
    assert "没有的科" in text and "没有的症状" in text and "sources" in text and "ZZZ" in text
