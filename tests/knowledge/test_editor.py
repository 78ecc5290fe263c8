"""Clinician editor: staff only, validation, review by another person, history, effect."""

from __future__ import annotations

from urllib.parse import quote

import yaml

from yiyun.knowledge import kb as kb_module

STAFF = {"X-Yiyun-Role": "staff", "X-Yiyun-User": quote("李医生")}
REVIEWER = {"X-Yiyun-Role": "staff", "X-Yiyun-User": quote("王主任")}


def test_editor_requires_staff(client):
    assert client.get("/knowledge/edit/diseases/原发性高血压").status_code == 403
    assert client.get("/knowledge/review").status_code == 403
    assert client.get("/knowledge/edit/diseases/原发性高血压", headers={"X-Yiyun-Role": "patient"}).status_code == 403


def test_edit_review_history_cycle(client):
    kb = kb_module.get_kb()
    name = next(iter(kb.diseases))
    page = client.get(f"/knowledge/edit/diseases/{name}", headers=STAFF)
    assert page.status_code == 200
    data = dict(kb.diseases[name].raw)
    data["summary"] = "经审核修订的简介。"
    r = client.post(f"/knowledge/edit/diseases/{name}", headers=STAFF, follow_redirects=False,
                    data={"text": yaml.safe_dump(data, allow_unicode=True), "comment": "据指南更新"})
    assert r.status_code == 303
    queue = client.get("/knowledge/review", headers=REVIEWER).text
    assert "经审核修订的简介" in queue and "李医生" in queue
    rid = int(queue.split('id="rev-')[1].split('"')[0])
    # the author cannot approve their own change
    own = client.post(f"/knowledge/review/{rid}", headers=STAFF, data={"decision": "approve"})
    assert own.status_code == 409
    ok = client.post(f"/knowledge/review/{rid}", headers=REVIEWER, data={"decision": "approve"},
                     follow_redirects=False)
    assert ok.status_code == 303
    assert kb_module.get_kb().diseases[name].raw["summary"] == "经审核修订的简介。"
    hist = client.get(f"/knowledge/history/diseases/{name}", headers=REVIEWER).text
    assert "李医生" in hist and "王主任" in hist and "approved" in hist
    again = client.post(f"/knowledge/review/{rid}", headers=REVIEWER, data={"decision": "reject"})
    assert again.status_code == 409


def test_invalid_edit_is_refused_with_reasons(client):
    kb = kb_module.get_kb()
    name = next(iter(kb.diseases))
    data = dict(kb.diseases[name].raw)
    data["icd10"] = "Z99.999x999"
    data["departments"] = ["不存在的科室"]
    r = client.post(f"/knowledge/edit/diseases/{name}", headers=STAFF,
                    data={"text": yaml.safe_dump(data, allow_unicode=True)})
    assert r.status_code == 422
    assert "不存在的科室" in r.text and "Z99.999x999" in r.text
    no_source = {k: v for k, v in data.items() if k != "sources"}
    r2 = client.post(f"/knowledge/edit/diseases/{name}", headers=STAFF,
                     data={"text": yaml.safe_dump(no_source, allow_unicode=True)})
    assert r2.status_code == 422 and "来源" in r2.text
    r3 = client.post(f"/knowledge/edit/diseases/{name}", headers=STAFF, data={"text": "name: [unclosed"})
    assert r3.status_code == 422
