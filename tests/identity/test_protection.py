"""Field encryption, blind indexes, key rotation, masking and de-identification."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from tests.conftest import shared
from yiyun.core import resident_id
from yiyun.core.db import unit_of_work
from yiyun.fhir.validation import validate_resource
from yiyun.identity.protection import (
    PHONE,
    RESIDENT_ID,
    DecryptionError,
    EncryptedColumn,
    FieldProtector,
    KeyConfigurationError,
    date_offset_days,
    deidentify,
    field_keyring,
    mask_email,
    mask_name,
    mask_phone,
    mask_resident_id,
    parse_keyring,
    reset_keyrings,
    rotate_column,
)
from yiyun.identity.protection.scrub import TextScrubber

K1 = "k1:" + base64.b64encode(bytes(range(32))).decode()
K2 = "k2:" + base64.b64encode(bytes(range(32, 64))).decode()
K1_OTHER = "k1:" + base64.b64encode(bytes(range(64, 96))).decode()
ID_NUMBER = "11010519491231002X"  # the worked example of GB 11643-1999


@pytest.fixture(autouse=True)
def _fresh_keys(monkeypatch):
    for var in ("YIYUN_ENCRYPTION_KEYS", "YIYUN_ENCRYPTION_KEY_FILE", "YIYUN_AUDIT_KEYS", "YIYUN_AUDIT_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    reset_keyrings()
    yield
    reset_keyrings()


def fp(ring: str) -> FieldProtector:
    return FieldProtector(parse_keyring(ring))


# ------------------------------------------------------------------ encryption
def test_round_trip_and_format():
    p = fp(K1)
    for value in (ID_NUMBER, "13812345678", "欧阳娜娜", "", "a" * 10_000):
        token = p.encrypt(value, RESIDENT_ID)
        assert re.fullmatch(r"v1\.k1\.[A-Za-z0-9_-]+", token)
        assert p.decrypt(token, RESIDENT_ID) == value
        assert value == "" or value not in token
    assert p.encrypt(ID_NUMBER, RESIDENT_ID) != p.encrypt(ID_NUMBER, RESIDENT_ID)  # a fresh nonce each time


def test_failures_are_closed():
    token = fp(K1).encrypt(ID_NUMBER, RESIDENT_ID)
    with pytest.raises(DecryptionError):
        fp(K1_OTHER).decrypt(token, RESIDENT_ID)  # same key id, different key
    with pytest.raises(DecryptionError):
        fp(K2).decrypt(token, RESIDENT_ID)  # key not in the ring
    with pytest.raises(DecryptionError):
        fp(K1).decrypt(token, PHONE)  # moved to another purpose
    version, kid, blob = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4)))
    for i in (0, 12, len(raw) - 1):  # nonce, ciphertext, tag
        flipped = bytearray(raw)
        flipped[i] ^= 1
        bad = f"{version}.{kid}." + base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        with pytest.raises(DecryptionError):
            fp(K1).decrypt(bad, RESIDENT_ID)
    for bad in (token[:-4], token[:20], f"v2.{kid}.{blob}", f"v1.k2.{blob}", "v1..x", "plain text", "v1.k1.!!", None, 42):
        with pytest.raises(DecryptionError):
            fp(f"{K1},{K2}").decrypt(bad, RESIDENT_ID)
    with pytest.raises(ValueError):
        fp(K1).encrypt(ID_NUMBER, "Not A Purpose")


def test_rotation_reencrypts_and_old_keys_still_decrypt():
    old = fp(K1).encrypt(ID_NUMBER, RESIDENT_ID)
    ring = fp(f"{K2},{K1}")
    assert ring.decrypt(old, RESIDENT_ID) == ID_NUMBER
    assert ring.needs_rotation(old)
    new = ring.rotate(old, RESIDENT_ID)
    assert new.startswith("v1.k2.") and not ring.needs_rotation(new)
    assert ring.rotate(new, RESIDENT_ID) == new
    assert fp(K2).decrypt(new, RESIDENT_ID) == ID_NUMBER
    with pytest.raises(DecryptionError):
        fp(K2).decrypt(old, RESIDENT_ID)


def test_blind_index():
    p = fp(K1)
    bi = p.blind_index(ID_NUMBER, RESIDENT_ID)
    assert re.fullmatch(r"k1\.[A-Za-z0-9_-]{22}", bi)
    assert p.blind_index(" 11010519491231002x ", RESIDENT_ID) == bi
    assert p.blind_index("１１０１０５１９４９１２３１００２Ｘ", RESIDENT_ID) == bi  # full-width, as some keyboards type
    assert p.blind_index("440524188001010014", RESIDENT_ID) != bi
    assert p.blind_index(ID_NUMBER, PHONE) != bi  # purposes never share an index
    assert fp(K1_OTHER).blind_index(ID_NUMBER, RESIDENT_ID) != bi  # nor do keys
    phones = {p.blind_index(v, PHONE) for v in ("13812345678", "+86 138-1234-5678", "0086 138 1234 5678", "138 1234 5678")}
    assert len(phones) == 1
    assert p.blind_index("13812345679", PHONE) not in phones
    both = fp(f"{K2},{K1}").blind_indexes(ID_NUMBER, RESIDENT_ID)
    assert both[1] == bi and both[0].startswith("k2.") and len(set(both)) == 2


def test_key_configuration(monkeypatch, tmp_path):
    monkeypatch.setenv("YIYUN_DATA_DIR", str(tmp_path))
    ring = field_keyring()  # development: generated once, private to its owner
    path = tmp_path / "keys" / "encryption.keys"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    reset_keyrings()
    assert field_keyring().keys == ring.keys
    key_file = tmp_path / "ring.keys"
    key_file.write_text(f"# rotated 2026-01\n{K2}\n{K1}\n")
    key_file.chmod(0o600)
    monkeypatch.setenv("YIYUN_ENCRYPTION_KEY_FILE", str(key_file))
    reset_keyrings()
    assert field_keyring().ids == ["k2", "k1"] and field_keyring().current_id == "k2"
    monkeypatch.setenv("YIYUN_ENCRYPTION_KEYS", K1)
    reset_keyrings()
    assert field_keyring().ids == ["k1"]
    assert "AAEC" not in repr(field_keyring())
    for bad in ("k1:short", "no-colon", "k 1:" + K1.split(":")[1], f"{K1},{K1}", ""):
        with pytest.raises(KeyConfigurationError):
            parse_keyring(bad)
    monkeypatch.delenv("YIYUN_ENCRYPTION_KEYS")
    monkeypatch.delenv("YIYUN_ENCRYPTION_KEY_FILE")
    monkeypatch.setenv("YIYUN_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("YIYUN_GENERATE_DEV_KEYS", "false")
    reset_keyrings()
    with pytest.raises(KeyConfigurationError):
        field_keyring()


async def test_rotate_column_on_the_database(engine):
    md = MetaData()
    table = Table(f"t_rot_{uuid.uuid4().hex[:8]}", md, Column("id", Integer, primary_key=True),
                  Column("rid", String(200)), Column("rid_bi", String(64)))
    col = EncryptedColumn(table, "id", "rid", RESIDENT_ID, "rid_bi")
    old = fp(K1)
    numbers = [resident_id.build("430104", date(1950, 1, 1) + timedelta(days=i), i % 1000) for i in range(23)]
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    try:
        async with unit_of_work(engine) as conn:
            await conn.execute(insert(table), [
                {"id": i, "rid": old.encrypt(n, RESIDENT_ID), "rid_bi": old.blind_index(n, RESIDENT_ID)}
                for i, n in enumerate(numbers)
            ] + [{"id": 99, "rid": None, "rid_bi": None}])
        new = fp(f"{K2},{K1}")
        async with unit_of_work(engine) as conn:
            # during rotation lookups try every key's index
            candidates = new.blind_indexes(numbers[5], RESIDENT_ID)
            hit = (await conn.execute(select(table.c.id).where(table.c.rid_bi.in_(candidates)))).scalar()
            assert hit == 5
            assert await rotate_column(conn, col, batch=7, fp=new) == 23
            assert await rotate_column(conn, col, batch=7, fp=new) == 0
        async with unit_of_work(engine, write=False) as conn:
            rows = (await conn.execute(select(table).order_by(table.c.id))).all()
        assert all(r.rid.startswith("v1.k2.") and r.rid_bi.startswith("k2.") for r in rows if r.id != 99)
        only_new = fp(K2)
        assert [only_new.decrypt(r.rid, RESIDENT_ID) for r in rows if r.id != 99] == numbers
        assert rows[7].rid_bi == only_new.blind_index(numbers[7], RESIDENT_ID)
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(md.drop_all)


# ------------------------------------------------------------------ masking
def test_masking():
    assert mask_resident_id(ID_NUMBER) == "110105********002X"
    assert mask_resident_id("110105194912311234") == "110105********1234"
    assert mask_resident_id("11010519491231002x") == "110105********002X"
    assert mask_resident_id("110105491231002") == "110105******002"
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("+86 138-1234-5678") == "+86 138****5678"
    assert mask_phone("0731-84512345") == "0731-****2345"
    assert mask_name("张三") == "张*"
    assert mask_name("欧阳娜娜") == "欧阳**"
    assert mask_name("李小明") == "李**"
    assert mask_name("张") == "*"
    assert mask_name("John Smith") == "J*** S****"
    assert mask_email("zhang.san@example.com") == "z***@example.com"


# ------------------------------------------------------------------ free text
def test_scrubbing_patterns():
    s = TextScrubber()
    out = s.scrub(
        "患者张三，男，93岁，身份证11010519491231002X，电话138-1234-5678，座机(0731)84512345，"
        "家住长沙市岳麓区麓山南路932号3栋201室。李医生查房，邮箱 zs@example.com。既往高血压、糖尿病。",
        shift_days=10,
    )
    for leaked in ("张三", "11010519491231002X", "138-1234-5678", "84512345", "麓山南路", "李医生", "zs@example.com", "93岁"):
        assert leaked not in out, (leaked, out)
    assert "高血压" in out and "糖尿病" in out and "90岁以上" in out
    en = s.scrub("Mr. John Smith (SSN 999-12-3456) lives at 820 Mayer Village Unit 24; call (555) 887-3298. "
                 "Seen 2019-05-01 and 5/3/2019. A 96-year-old man with hypertension.", shift_days=-3)
    for leaked in ("John", "Smith", "999-12-3456", "Mayer Village", "887-3298", "2019-05-01", "5/3/2019", "96"):
        assert leaked not in en, (leaked, en)
    assert "2019-04-28" in en and "4/30/2019" in en and "hypertension" in en


# ------------------------------------------------------------------ de-identification
SALT = b"export-salt-for-tests-0123456789"
AS_OF = date(2026, 1, 1)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T.*)?$")


def _paths(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, f"{prefix}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, f"{prefix}/{i}")
    else:
        yield prefix, node


def _as_date(value: str) -> date:
    return date.fromisoformat(value[:10])


def _shifts(original: list[dict], output: list[dict], skip=("/birthDate",)) -> set[int]:
    """Day differences between each full date and its de-identified counterpart."""
    shifts = set()
    for a, b in zip(original, output):
        after = dict(_paths(b))
        for path, value in _paths(a):
            if isinstance(value, str) and _DATE.match(value) and path not in skip and isinstance(after.get(path), str):
                new = after[path]
                if _DATE.match(new):
                    assert new[10:] == value[10:], (path, value, new)  # time of day and zone unchanged
                    shifts.add((_as_date(new) - _as_date(value)).days)
    return shifts


def _invalid(resource: dict) -> list:
    return [(i.diagnostics, i.expression) for i in validate_resource(resource) if i.severity == "error"]


def _secrets_of(resources: list[dict]) -> set[str]:
    """Every direct identifier the input holds about people, as written there."""
    found: set[str] = set()
    for r in resources:
        if r["resourceType"] not in ("Patient", "Practitioner", "RelatedPerson", "Person"):
            continue
        found.add(r["id"])
        for name in r.get("name", []) + [c["name"] for c in r.get("contact", []) if "name" in c]:
            found.update(x for x in [name.get("text"), name.get("family"), *name.get("given", [])] if x and len(x) >= 2)
        for c in r.get("telecom", []) + [t for c in r.get("contact", []) for t in c.get("telecom", [])]:
            found.add(c["value"])
        for ident in r.get("identifier", []):
            if len(ident.get("value", "")) >= 5:
                found.add(ident["value"])
        for a in r.get("address", []):
            found.update(a.get("line", []))
            found.update(x for x in (a.get("district"), a.get("text"), a.get("postalCode")) if x)
        for e in r.get("extension", []):
            if e["url"].endswith("mothersMaidenName"):
                found.add(e["valueString"])
    return found


def _leaks(secrets: set[str], output: list[dict]) -> list[str]:
    text = json.dumps(output, ensure_ascii=False)
    return sorted(s for s in secrets if re.search(r"(?<![A-Za-z0-9])" + re.escape(s) + r"(?![A-Za-z0-9])", text))


def _synthea_files():
    folder = shared("fhir", "synthea-r4")
    files = sorted(p for p in folder.glob("*.json") if "Information" not in p.name)
    chosen = files[::7]
    chosen += [p for p in files if p.name.startswith(("Kendall_Keeling", "Bambi_Murray")) and p not in chosen]
    return chosen


def test_deidentify_synthea_patients():
    for path in _synthea_files():
        bundle = json.loads(path.read_text(encoding="utf-8"))
        resources = [e["resource"] for e in bundle["entry"]]
        out = deidentify(resources, salt=SALT, as_of=AS_OF)
        assert len(out) == len(resources)
        assert _leaks(_secrets_of(resources), out) == [], path.name
        assert not {r["id"] for r in resources} & {r["id"] for r in out}
        for before, after in zip(resources, out):
            if not _invalid(before):
                assert _invalid(after) == [], (path.name, after["resourceType"], _invalid(after))
            assert "text" not in after and "name" not in after or after["resourceType"] == "Organization"
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        shifts = _shifts(resources, out)
        assert len(shifts) == 1, (path.name, shifts)  # one offset for all of this patient's dates
        shift = shifts.pop()
        assert 1 <= abs(shift) <= 365 and shift == date_offset_days(SALT, f"Patient/{patient['id']}")
        new_patient = next(r for r in out if r["resourceType"] == "Patient")
        born, died = date.fromisoformat(patient["birthDate"]), patient.get("deceasedDateTime")
        age = ((_as_date(died) if died else AS_OF) - born).days // 365.25
        if age >= 90:
            assert re.fullmatch(r"\d{4}", new_patient["birthDate"])
            shifted_ref_year = (_as_date(died) + timedelta(days=shift)).year if died else AS_OF.year
            assert int(new_patient["birthDate"]) == shifted_ref_year - 90
        else:
            assert _as_date(new_patient["birthDate"]) - born == timedelta(days=shift)
        # references still resolve inside the de-identified set
        ids = {r["id"] for r in out}
        refs = [v for p, v in _paths(out) if p.endswith("/reference") and isinstance(v, str)]
        assert refs and all(ref.removeprefix("urn:uuid:") in ids for ref in refs if ref.startswith("urn:uuid:"))
        address = new_patient["address"][0]
        assert set(address) <= {"city", "state", "country", "postalCode", "use", "type", "period"}
        assert len(address.get("postalCode", "000")) == 3


def test_deidentification_is_repeatable_per_salt_and_unlinkable_across_salts():
    path = _synthea_files()[0]
    resources = [e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]]
    a = deidentify(resources, salt=SALT, as_of=AS_OF)
    assert deidentify(resources, salt=SALT, as_of=AS_OF) == a
    b = deidentify(resources, salt=b"another-recipient-salt-987654321", as_of=AS_OF)
    assert {r["id"] for r in a}.isdisjoint({r["id"] for r in b})
    with pytest.raises(ValueError):
        deidentify(resources, salt=b"short")


def _chinese_patient() -> list[dict]:
    """A demo-like patient of a Changsha clinic, born 1925, with notes that name her."""
    pid, rid, phone = "pat-00042", "430104192504010024", "13812345678"
    note = (f"患者欧阳娜娜，女，100岁，身份证号{rid}，联系电话{phone}，住长沙市岳麓区岳麓街道麓山南路932号中南大学3栋201室。"
            f"其女欧阳建国陪同，电话13987654321。2024年3月5日复诊，李明医生接诊，ouyang.nana@example.cn")
    return [
        {
            "resourceType": "Patient", "id": pid,
            "identifier": [
                {"use": "official", "system": "urn:oid:2.16.156.10011.1.3", "value": rid},
                {"use": "usual", "system": "https://yiyun.example.cn/fhir/sid/mrn/yuelu-clinic", "value": "00001234"},
            ],
            "name": [{"use": "official", "text": "欧阳娜娜", "family": "欧阳", "given": ["娜娜"]}],
            "telecom": [{"system": "phone", "value": phone, "use": "mobile", "rank": 1}],
            "gender": "female", "birthDate": "1925-04-01",
            "address": [{
                "extension": [{"url": "https://yiyun.example.cn/fhir/StructureDefinition/county-code", "valueCode": "430104"}],
                "use": "home", "type": "both", "text": "湖南省长沙市岳麓区岳麓街道麓山南路932号中南大学3栋201室",
                "line": ["岳麓街道", "麓山南路932号中南大学3栋201室"], "city": "长沙市", "district": "岳麓区",
                "state": "湖南省", "postalCode": "410083", "country": "CN",
            }],
            "contact": [{"name": {"text": "欧阳建国", "family": "欧阳", "given": ["建国"]},
                         "telecom": [{"system": "phone", "value": "13987654321"}]}],
            "generalPractitioner": [{"reference": "Practitioner/doc-li", "display": "李明"}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">欧阳娜娜 13812345678</div>"},
        },
        {
            "resourceType": "Practitioner", "id": "doc-li",
            "identifier": [{"system": "https://yiyun.example.cn/fhir/sid/practising-certificate", "value": "110430100012345"}],
            "name": [{"text": "李明", "family": "李", "given": ["明"]}],
            "telecom": [{"system": "email", "value": "liming@yuelu.example.cn"}],
        },
        {
            "resourceType": "Encounter", "id": "enc-1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}", "display": "欧阳娜娜"},
            "participant": [{"individual": {"reference": "Practitioner/doc-li", "display": "李明"}}],
            "period": {"start": "2024-03-05T09:00:00+08:00", "end": "2024-03-05T09:20:00+08:00"},
        },
        {
            "resourceType": "Condition", "id": "cond-1",
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}], "text": "原发性高血压"},
            "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": "Encounter/enc-1"},
            "onsetAge": {"value": 93, "unit": "岁", "system": "http://unitsofmeasure.org", "code": "a"},
            "recordedDate": "2024-03-05",
            "note": [{"authorString": "李明", "time": "2024-03-05T09:15:00+08:00", "text": note}],
        },
        {
            "resourceType": "Observation", "id": "obs-1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2024-03-06T08:00:00+08:00",
            "valueQuantity": {"value": 152, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
            "performer": [{"reference": "Practitioner/doc-li"}],
            "note": [{"text": "家属欧阳建国(13987654321)代为测量"}],
        },
        {
            "resourceType": "DocumentReference", "id": "doc-1", "status": "current",
            "subject": {"reference": f"Patient/{pid}"}, "date": "2024-03-05T10:00:00+08:00",
            "description": "欧阳娜娜门诊病历",
            "content": [
                {"attachment": {"contentType": "text/plain; charset=utf-8", "url": "https://files.example.cn/p/42.txt",
                                "data": base64.b64encode(note.encode()).decode(), "title": "欧阳娜娜 门诊记录"}},
                {"attachment": {"contentType": "image/jpeg", "data": base64.b64encode(b"\xff\xd8 jpeg").decode()}},
            ],
        },
    ]


def test_deidentify_chinese_patient():
    resources = _chinese_patient()
    out = deidentify(resources, salt=SALT, as_of=AS_OF)
    blob = json.dumps(out, ensure_ascii=False)
    attachment = base64.b64decode(out[5]["content"][0]["attachment"]["data"]).decode()
    secrets = _secrets_of(resources) | {"欧阳娜娜", "娜娜", "欧阳建国", "建国", "李明", "13987654321", "麓山南路", "岳麓区",
                                        "岳麓街道", "中南大学3栋201室", "ouyang.nana@example.cn", "liming@yuelu.example.cn",
                                        "00001234", "pat-00042", "410083", "1925-04-01", "100岁"}
    for s in secrets:
        assert s not in blob, s
        assert s not in attachment, s
    assert [r for r in out if _invalid(r)] == []
    patient, practitioner, encounter, condition, observation, document = out
    assert patient["birthDate"] == str(AS_OF.year - 90)  # 90 or older: one group, year only
    assert set(patient) == {"resourceType", "id", "identifier", "gender", "birthDate", "address", "generalPractitioner"}
    assert patient["address"] == [{"use": "home", "type": "both", "city": "长沙市", "state": "湖南省", "postalCode": "410",
                                   "country": "CN"}]
    assert "name" not in practitioner and "telecom" not in practitioner
    assert encounter["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert encounter["participant"][0]["individual"] == {"reference": f"Practitioner/{practitioner['id']}"}
    assert condition["onsetAge"]["value"] == 90 and condition["onsetAge"]["comparator"] == ">="
    shift = date_offset_days(SALT, "Patient/pat-00042")
    assert _shifts(resources, out) == {shift}
    written = date(2024, 3, 5) + timedelta(days=shift)
    assert f"{written.year}年{written.month}月{written.day}日" in condition["note"][0]["text"]
    assert "原发性高血压" in blob and "90岁以上" in condition["note"][0]["text"]
    assert set(document["content"][0]["attachment"]) == {"contentType", "data", "title"}
    assert set(document["content"][1]["attachment"]) == {"contentType"}  # images cannot be scrubbed: dropped


def test_geo_level_state_drops_the_city():
    out = deidentify(_chinese_patient()[:1], salt=SALT, as_of=AS_OF, geo_level="state")
    assert out[0]["address"] == [{"use": "home", "type": "both", "state": "湖南省", "postalCode": "410", "country": "CN"}]


def test_deidentify_bundle_relinks_full_urls():
    from yiyun.identity.protection import deidentify_bundle

    bundle = json.loads(_synthea_files()[0].read_text(encoding="utf-8"))
    out = deidentify_bundle(bundle, salt=SALT, as_of=AS_OF)
    assert _invalid(out) == []
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in out["entry"])
    assert _leaks(_secrets_of([e["resource"] for e in bundle["entry"]]), [out]) == []


def test_keys_rotate_command(db_url, monkeypatch):
    import asyncio

    from typer.testing import CliRunner

    from yiyun.core.db import dispose_engines, get_engine
    from yiyun.identity.cli import keys_app
    from yiyun.identity.protection import fields

    md = MetaData()
    table = Table(f"t_cli_{uuid.uuid4().hex[:8]}", md, Column("id", Integer, primary_key=True),
                  Column("phone", String(200)), Column("phone_bi", String(64)))
    col = fields.register_encrypted_column(EncryptedColumn(table, "id", "phone", PHONE, "phone_bi"))
    old = fp(K1)

    async def setup():
        async with get_engine().begin() as conn:
            await conn.run_sync(md.create_all)
            await conn.execute(insert(table), [{"id": i, "phone": old.encrypt(f"1380000{i:04d}", PHONE),
                                                "phone_bi": old.blind_index(f"1380000{i:04d}", PHONE)} for i in range(12)])
        await dispose_engines()

    async def stored():
        async with get_engine().begin() as conn:
            rows = (await conn.execute(select(table.c.phone, table.c.phone_bi))).all()
        await dispose_engines()
        return rows

    async def drop():
        async with get_engine().begin() as conn:
            await conn.run_sync(md.drop_all)
        await dispose_engines()

    asyncio.run(setup())
    try:
        monkeypatch.setenv("YIYUN_ENCRYPTION_KEYS", f"{K2},{K1}")
        reset_keyrings()
        runner = CliRunner()
        first = runner.invoke(keys_app, ["rotate", "--batch", "5"])
        assert first.exit_code == 0, first.output
        assert f"{col.name}: 12 value(s) re-encrypted under k2" in first.output
        again = runner.invoke(keys_app, ["rotate"])
        assert f"{col.name}: 0 value(s)" in again.output
        rows = asyncio.run(stored())
        assert all(p.startswith("v1.k2.") and bi.startswith("k2.") for p, bi in rows)
        status = runner.invoke(keys_app, ["status"])
        assert "encryption: current=k2 ids=k2,k1" in status.output
    finally:
        fields._registry.pop(col.name, None)
        asyncio.run(drop())
