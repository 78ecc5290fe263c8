"""Resident ID and mobile numbers written into narratives, notes and messages are masked before
they are stored (create, update, transaction Bundle), conservatively; numbers stored before the
guard are found, and masked on request, by `yiyun security scan --free-text`."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter

import orjson
import pytest
from sqlalchemy import select

from tests.conftest import REPO
from tests.fhir.test_protected_identifiers import raw_rows, rid_of
from yiyun.core.db import unit_of_work
from yiyun.fhir import free_text
from yiyun.fhir.tables import resource_version as version_t
from yiyun.identity.protection import reset_keyrings
from yiyun.identity.protection import store as protection_store

FHIR = "/fhir/R4"
RID = "11010519491231002X"  # GB 11643-1999 worked example
RID_MASK = "110105********002X"
OLD_RID = "110105491231002"  # first generation, 15 digits
PHONE = "13812345678"
PHONE_MASK = "138****5678"
BAD_CHECKSUM = "110105194912310021"  # the worked example with a wrong check character
ORDER_NO = "202411251391234567890"  # an order number holding a mobile-like run
TIMESTAMP_NO = "202411250930150001"  # 18 digits, "born" in 2509
XHTML_NS = "http://www.w3.org/1999/xhtml"
K1 = "k1:" + base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("YIYUN_ENCRYPTION_KEYS", K1)
    reset_keyrings()
    protection_store.install()
    yield monkeypatch
    monkeypatch.delenv("YIYUN_MASK_FREE_TEXT", raising=False)
    reset_keyrings()
    protection_store.install()


def guard_off(keys) -> None:
    keys.setenv("YIYUN_MASK_FREE_TEXT", "false")
    reset_keyrings()
    protection_store.install()


def guard_on(keys) -> None:
    keys.delenv("YIYUN_MASK_FREE_TEXT")
    reset_keyrings()
    protection_store.install()


def narrative(inner: str) -> dict:
    return {"status": "generated", "div": f'<div xmlns="{XHTML_NS}">{inner}</div>'}


def masked(text: str) -> tuple[str, Counter]:
    counts: Counter = Counter()
    return free_text.mask_text(text, counts), counts


# ------------------------------------------------------------------ recognising numbers
@pytest.mark.parametrize("text, expected, n", [
    (f"身份证{RID}，电话{PHONE}。", f"身份证{RID_MASK}，电话{PHONE_MASK}。", 2),
    (f"身份证 {RID.lower()}", f"身份证 {RID_MASK}", 1),
    (f"身份证号码：{OLD_RID}", "身份证号码：110105******002", 1),
    (f"+86{PHONE} 或 0086 {PHONE}", f"+86{PHONE_MASK} 或 0086 {PHONE_MASK}", 2),
    ("138-1234-5678 / 138 1234 5678", "138-****-5678 / 138 **** 5678", 2),
    (f"tel:{PHONE}", f"tel:{PHONE_MASK}", 1),
])
def test_numbers_are_masked(text, expected, n):
    out, counts = masked(text)
    assert out == expected and sum(counts.values()) == n
    assert masked(out) == (out, Counter())  # masking again changes nothing


@pytest.mark.parametrize("text", [
    f"身份证{BAD_CHECKSUM}",  # wrong check character
    f"订单号{ORDER_NO}",  # mobile-like digits inside a longer number
    f"流水号{TIMESTAMP_NO}",  # 18 digits, impossible birth date
    f"标本号{OLD_RID}",  # 15 digits without a resident-ID label
    "身份证号：990105491231002",  # no such province
    f"ORD{PHONE}", f"{PHONE}A", f"3.{PHONE}", "金额12345678901",  # part of a code, a decimal, not 1[3-9]
    "138-1234 5678",  # mixed separators
    "９９０１０５１９４９１２３１００２Ｘ",  # full-width digits are not looked at
])
def test_look_alikes_are_left_alone(text):
    assert masked(text) == (text, Counter())


def test_narrative_markup_stays_well_formed():
    div = (f'<div xmlns="{XHTML_NS}"><p title="{PHONE}">张三 &amp; 家属 <b>{RID}</b></p>'
           f'<a href="tel:+86-{PHONE}">电话</a><!-- {PHONE} --><p>订单 {ORDER_NO}</p></div>')
    counts: Counter = Counter()
    out = free_text.mask_xhtml(div, counts)
    assert counts == Counter({"resident-id": 1, "phone": 3})
    root = ET.fromstring(out)  # still XML
    assert [e.tag for e in root.iter()] == [e.tag for e in ET.fromstring(div).iter()]
    text = "".join(root.itertext())
    assert RID_MASK in text and ORDER_NO in text and RID not in out and PHONE not in out
    assert root.find(f"{{{XHTML_NS}}}a").get("href") == f"tel:+86-{PHONE_MASK}"


def test_the_pre_check_skips_structured_values_and_fractions():
    structured = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": RID}],
                  "telecom": [{"system": "phone", "value": PHONE}],
                  "extension": [{"url": "http://example.cn/x", "valueDecimal": 10.326267565418876}],
                  "maritalStatus": {"coding": [{"system": "http://snomed.info/sct", "code": "428191000124101"}]}}
    assert not free_text.may_hold(orjson.dumps(structured))
    for text in (f"电话{PHONE}", f"{PHONE}", f"138 1234 5678 张三", f"Tel.{PHONE}"):
        assert free_text.may_hold(orjson.dumps({**structured, "text": narrative(text)})), text
        assert free_text.may_hold(orjson.dumps({"resourceType": "Observation", "valueString": text})), text


def test_every_listed_path_says_why():
    for rule in free_text.FREE_TEXT_PATHS:
        assert rule.reason and rule.syntax in (free_text.TEXT, free_text.XHTML), rule
    paths = {(r.resource_type, r.path) for r in free_text.FREE_TEXT_PATHS}
    for required in [("*", "**.text.div"), ("*", "**.note.text"), ("Communication", "payload.contentString"),
                     ("Observation", "valueString"), ("ClinicalImpression", "summary"),
                     ("DocumentReference", "description")]:
        assert required in paths


# ------------------------------------------------------------------ on writes
def patient_with_narrative() -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": RID}],
        "text": narrative(f"<p>张三，身份证<b>{RID}</b>，手机 {PHONE}</p><p>订单号{ORDER_NO}，"
                          f"流水{BAD_CHECKSUM}</p>"),
        "name": [{"family": "张", "given": ["三"]}],
    }


def xhtml_text(div: str) -> str:
    """The text of a narrative; parsing it proves it is still well-formed XML."""
    return "".join(ET.fromstring(div).itertext())


async def test_create_masks_the_narrative_and_keeps_look_alikes(client, engine, tenant):
    before = free_text.masked_totals()
    r = await client.post(f"{FHIR}/Patient", json=patient_with_narrative())
    assert r.status_code == 201, r.text
    text = xhtml_text(r.json()["text"]["div"])
    assert f"身份证{RID_MASK}，手机 {PHONE_MASK}" in text
    assert ORDER_NO in text and BAD_CHECKSUM in text
    after = free_text.masked_totals()
    assert after.get("resident-id", 0) - before.get("resident-id", 0) == 1
    assert after.get("phone", 0) - before.get("phone", 0) == 1

    pid = r.json()["id"]
    raw = await raw_rows(engine, await rid_of(engine, tenant, pid))
    assert RID.encode() not in raw and PHONE.encode() not in raw
    assert ORDER_NO.encode() in raw and BAD_CHECKSUM.encode() in raw
    # the structured identifier is still sealed, not masked for good: the system caller reads it in full
    read = (await client.get(f"{FHIR}/Patient/{pid}")).json()
    assert read["identifier"][0]["value"] == RID and RID not in read["text"]["div"]


async def test_update_masks_notes_and_values_in_every_stored_copy(client, engine, tenant):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "随访记录"},
           "valueString": "血压平稳", "note": [{"text": "复诊"}]}
    created = (await client.post(f"{FHIR}/Observation", json=obs)).json()
    obs = {**created, "valueString": f"家属电话{PHONE}，请回电", "note": [{"text": f"患者身份证{RID}"}],
           "component": [{"code": {"text": "备注"}, "valueString": f"备用 {PHONE}"}]}
    r = await client.put(f"{FHIR}/Observation/{created['id']}", json=obs)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["valueString"] == f"家属电话{PHONE_MASK}，请回电"
    assert got["note"][0]["text"] == f"患者身份证{RID_MASK}"
    assert got["component"][0]["valueString"] == f"备用 {PHONE_MASK}"
    raw = await raw_rows(engine, await rid_of(engine, tenant, created["id"]))  # current, history, index rows
    assert RID.encode() not in raw and PHONE.encode() not in raw
    found = await client.get(f"{FHIR}/Observation", params={"value-string": "家属电话138"})
    assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [created["id"]]


async def test_transaction_bundle_masks_messages_and_contained_resources(client, engine, tenant):
    message = {"resourceType": "Communication", "status": "completed",
               "payload": [{"contentString": f"医生您好，我的手机号是{PHONE}，身份证{RID}"},
                           {"contentString": f"订单{ORDER_NO}已支付"}]}
    condition = {"resourceType": "Condition", "subject": {"reference": "urn:uuid:7d3c2a1e-0f4b-4c55-9a43-2b1d9e8f6a01"},
                 "contained": [{"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "自述"},
                                "valueString": f"联系 {PHONE}"}],
                 "evidence": [{"detail": [{"reference": "#o"}]}],
                 "text": narrative(f"<p>高血压</p><p>电话 <i>{PHONE}</i></p>"),
                 "code": {"text": "高血压"}, "note": [{"text": f"身份证号：{OLD_RID}"}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": message, "request": {"method": "POST", "url": "Communication"}},
        {"resource": condition, "request": {"method": "POST", "url": "Condition"}},
        {"fullUrl": "urn:uuid:7d3c2a1e-0f4b-4c55-9a43-2b1d9e8f6a01", "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    r = await client.post(FHIR, json=bundle, headers={"Prefer": "return=representation"})
    assert r.status_code == 200, r.text
    comm, cond, _ = (e["resource"] for e in r.json()["entry"])
    assert comm["payload"][0]["contentString"] == f"医生您好，我的手机号是{PHONE_MASK}，身份证{RID_MASK}"
    assert comm["payload"][1]["contentString"] == f"订单{ORDER_NO}已支付"
    assert cond["note"][0]["text"] == "身份证号：110105******002"
    assert cond["contained"][0]["valueString"] == f"联系 {PHONE_MASK}"
    assert xhtml_text(cond["text"]["div"]) == f"高血压电话 {PHONE_MASK}"
    for res in (comm, cond):
        raw = await raw_rows(engine, await rid_of(engine, tenant, res["id"]))
        assert RID.encode() not in raw and PHONE.encode() not in raw and OLD_RID.encode() not in raw


async def test_switched_off_free_text_is_stored_as_written(client, keys):
    guard_off(keys)
    r = await client.post(f"{FHIR}/Patient", json=patient_with_narrative())
    assert r.status_code == 201, r.text
    assert RID in r.json()["text"]["div"] and PHONE in r.json()["text"]["div"]


# ------------------------------------------------------------------ data stored before the guard
async def legacy_rows(client, keys) -> tuple[str, str]:
    """A Patient and an Observation (two versions) written while the guard was off."""
    guard_off(keys)
    try:
        pid = (await client.post(f"{FHIR}/Patient", json=patient_with_narrative())).json()["id"]
        obs = (await client.post(f"{FHIR}/Observation", json={
            "resourceType": "Observation", "status": "final", "code": {"text": "随访"},
            "note": [{"text": f"电话{PHONE}"}]})).json()
        obs["valueString"] = f"身份证{RID}"
        assert (await client.put(f"{FHIR}/Observation/{obs['id']}", json=obs)).status_code == 200
    finally:
        guard_on(keys)
    return pid, obs["id"]


async def test_scan_finds_old_rows_and_rewrites_them(client, engine, tenant, keys):
    pid, oid = await legacy_rows(client, keys)
    clean = (await client.post(f"{FHIR}/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "随访"},
        "note": [{"text": f"订单{ORDER_NO}"}]})).json()["id"]

    report = await free_text.scan_stored(engine, tenant=tenant, batch=2)
    found = {(h.reference, h.version, h.current): h for h in report.hits}
    assert set(found) == {(f"Patient/{pid}", 1, True), (f"Observation/{oid}", 2, True),
                          (f"Observation/{oid}", 1, False)}
    assert found[(f"Patient/{pid}", 1, True)].counts == {"resident-id": 1, "phone": 1}
    assert found[(f"Patient/{pid}", 1, True)].paths == ["**.text.div"]
    assert found[(f"Observation/{oid}", 2, True)].paths == ["**.note.text", "Observation.valueString"]
    assert report.rewritten == 0 and f"Observation/{clean}" not in str(report.as_dict())
    assert RID not in orjson.dumps(report.as_dict()).decode() and PHONE not in orjson.dumps(report.as_dict()).decode()
    assert RID.encode() in await raw_rows(engine, await rid_of(engine, tenant, pid))  # a report changes nothing

    report = await free_text.scan_stored(engine, tenant=tenant, rewrite=True, batch=2)
    assert report.rewritten == 5  # Patient current + history; Observation current + two history rows
    for res_id in (pid, oid):
        raw = await raw_rows(engine, await rid_of(engine, tenant, res_id))
        assert RID.encode() not in raw and PHONE.encode() not in raw
    async with unit_of_work(engine, write=False) as conn:
        versions = (await conn.execute(select(version_t.c.version_id).where(
            version_t.c.rid == await rid_of(engine, tenant, oid)))).scalars().all()
    assert sorted(versions) == [1, 2]  # corrected in place, no new version
    read = (await client.get(f"{FHIR}/Patient/{pid}")).json()
    assert read["identifier"][0]["value"] == RID  # the sealed identifier still opens
    assert RID_MASK in read["text"]["div"]
    assert (await free_text.scan_stored(engine, tenant=tenant)).hits == []


def yiyun(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yiyun.cli", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


async def test_security_scan_command(client, engine, tenant, keys, db_url, tmp_path):
    pid, _ = await legacy_rows(client, keys)
    env = {"YIYUN_DATABASE_URL": db_url, "YIYUN_DATA_DIR": str(tmp_path / "var"), "YIYUN_LOG_LEVEL": "WARNING",
           "YIYUN_ENCRYPTION_KEYS": K1}
    report = yiyun("security", "scan", "--free-text", "--tenant", tenant, env=env)
    assert report.returncode == 0, report.stderr
    assert f"FREE-TEXT {tenant} Patient/{pid} version 1 (current): 1 resident ID(s), 1 phone(s)" in report.stdout
    assert "--rewrite" in report.stdout and RID not in report.stdout + report.stderr
    assert yiyun("security", "scan", "--rewrite", env=env).returncode == 2

    rewritten = yiyun("security", "scan", "--free-text", "--rewrite", "--tenant", tenant, "--json", env=env)
    assert rewritten.returncode == 0, rewritten.stderr
    totals = orjson.loads(rewritten.stdout)
    assert totals["resident_ids"] == 2 and totals["phones"] == 3 and totals["rewritten"] == 5
    again = orjson.loads(yiyun("security", "scan", "--free-text", "--tenant", tenant, "--json", env=env).stdout)
    assert again["versions"] == 0
    assert RID.encode() not in await raw_rows(engine, await rid_of(engine, tenant, pid))
    from yiyun.identity.audit import query

    async with unit_of_work(engine, write=False) as conn:
        logged = await query(conn, tenant=tenant, action="free-text-masked")
    assert sorted(e.resource_type for e in logged) == ["Observation", "Patient"]
    assert all(e.actor == "cli:security-scan" for e in logged) and RID not in str(logged)
