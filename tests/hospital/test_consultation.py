"""Online consultations through the JSON API, on SQLite and PostgreSQL.

Personas: patient Zhang (pat-zhang, type 2 diabetes diagnosed at an outpatient visit),
patient Liu (pat-liu, diabetes recorded only at an earlier online visit), outsider Wang
(pat-wang, never seen here); doctors Li and Zhao (endocrinology), Sun (respiratory).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import pytest_asyncio
from PIL import Image

from tests.conftest import auth_headers
from tests.hospital.people import verify_patients

ENDO = "HealthcareService/hs-endo"
RESP = "HealthcareService/hs-resp"
ICD = "http://www.nhc.gov.cn/icd10/clinical-v2"
DEPT_EXT = "https://yiyun.example.cn/fhir/StructureDefinition/department"


@dataclass
class Clinic:
    tenant: str

    def patient(self, pid: str = "pat-zhang") -> dict[str, str]:
        return auth_headers(self.tenant, scope="patient/*.cruds", subject=f"user:{pid}", roles=("patient",),
                            patient=pid, fhir_user=f"Patient/{pid}")

    def doctor(self, pid: str = "prac-li") -> dict[str, str]:
        return auth_headers(self.tenant, scope="user/*.cruds", subject=f"user:{pid}", roles=("doctor",),
                            fhir_user=f"Practitioner/{pid}")


def clinic_resources() -> list[dict]:
    out: list[dict] = [
        {"resourceType": "Organization", "id": "org-h", "name": "测试医院", "active": True},
        {"resourceType": "Organization", "id": "dept-endo", "name": "内分泌科", "partOf": {"reference": "Organization/org-h"}},
        {"resourceType": "Organization", "id": "dept-resp", "name": "呼吸内科", "partOf": {"reference": "Organization/org-h"}},
        {"resourceType": "Organization", "id": "other-hospital", "name": "上级医院", "active": True},
    ]
    for hs, dept, name in (("hs-endo", "dept-endo", "内分泌科门诊"), ("hs-resp", "dept-resp", "呼吸内科门诊")):
        out.append({"resourceType": "HealthcareService", "id": hs, "active": True, "name": name,
                    "providedBy": {"reference": "Organization/org-h"},
                    "extension": [{"url": DEPT_EXT, "valueReference": {"reference": f"Organization/{dept}"}}]})
    for pid, name, hs in (("prac-li", "李医生", "hs-endo"), ("prac-zhao", "赵医生", "hs-endo"),
                          ("prac-sun", "孙医生", "hs-resp")):
        out.append({"resourceType": "Practitioner", "id": pid, "active": True, "name": [{"text": name}]})
        out.append({"resourceType": "PractitionerRole", "id": pid.replace("prac", "role"), "active": True,
                    "practitioner": {"reference": f"Practitioner/{pid}"},
                    "organization": {"reference": "Organization/org-h"},
                    "healthcareService": [{"reference": f"HealthcareService/{hs}"}]})
    for pid, name in (("pat-zhang", "张三"), ("pat-wang", "王五"), ("pat-liu", "刘六")):
        out.append({"resourceType": "Patient", "id": pid, "active": True, "name": [{"text": name}]})
    for pid, enc, cls, cond in (("pat-zhang", "enc-clinic", "AMB", "cond-dm"),
                                ("pat-liu", "enc-online", "VR", "cond-dm-online")):
        out.append({"resourceType": "Encounter", "id": enc, "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
                    "subject": {"reference": f"Patient/{pid}"},
                    "period": {"start": "2026-03-02T01:00:00Z", "end": "2026-03-02T01:20:00Z"}})
        out.append({"resourceType": "Condition", "id": cond,
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                   "code": "active"}]},
                    "verificationStatus": {"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                    "code": {"coding": [{"system": ICD, "code": "E11.900", "display": "2型糖尿病"}]},
                    "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
                    "recordedDate": "2026-03-02T01:10:00Z"})
    return out


VERIFIED = {"pat-zhang": "张三", "pat-wang": "王五", "pat-liu": "刘六"}  # real-name verified patients


@pytest_asyncio.fixture
async def clinic(repo_factory, tenant, engine) -> Clinic:
    async with repo_factory() as repo:
        for r in clinic_resources():
            await repo.update(r["resourceType"], r["id"], r)
    await verify_patients(engine, tenant, VERIFIED)
    return Clinic(tenant)


FORM = {"chief_complaint": "血糖控制不佳两周", "duration": "两周", "history": "2型糖尿病5年",
        "allergies": "青霉素", "medications": "二甲双胍 0.5g tid"}


async def start(client, clinic: Clinic, patient: str = "pat-zhang", **body) -> dict:
    body = {"mode": "text", "department": ENDO, "form": FORM, **body}
    r = await client.post("/api/consultations", json=body, headers=clinic.patient(patient))
    assert r.status_code == 201, r.text
    return r.json()


async def accepted(client, clinic: Clinic, patient: str = "pat-zhang", doctor: str = "prac-li") -> str:
    cid = (await start(client, clinic, patient))["id"]
    r = await client.post(f"/api/consultations/{cid}/accept", headers=clinic.doctor(doctor))
    assert r.status_code == 200, r.text
    return cid


def image_bytes(fmt: str = "JPEG", size=(64, 48), gps: bool = False) -> bytes:
    img = Image.new("RGB", size, (200, 80, 60))
    out = io.BytesIO()
    if gps:
        exif = Image.Exif()
        exif[0x010F] = "PhoneMaker"
        exif[0x8825] = {1: "N", 2: (28.0, 11.0, 0.0), 3: "E", 4: (112.0, 58.0, 0.0)}  # GPSInfo IFD
        img.save(out, fmt, exif=exif)
    else:
        img.save(out, fmt)
    return out.getvalue()


# ------------------------------------------------------------------ start, queue, who
async def test_patient_starts_and_the_department_doctor_sees_the_form_first(client, clinic):
    c = await start(client, clinic)
    assert c["state"] == "waiting" and c["doctor"] is None and c["department"] == ENDO
    queue = (await client.get("/api/consultations/queue", headers=clinic.doctor("prac-li"))).json()
    mine = [q for q in queue["waiting"] if q["id"] == c["id"]]
    assert mine and mine[0]["chief_complaint"] == FORM["chief_complaint"] and mine[0]["patient_name"] == "张三"
    assert mine[0]["waiting_seconds"] >= 0
    detail = (await client.get(f"/api/consultations/{c['id']}", headers=clinic.doctor("prac-li"))).json()
    assert detail["relation"] == "candidate"
    assert detail["form"]["allergies"] == "青霉素" and detail["form"]["medications"].startswith("二甲双胍")
    # the doctor of another department neither sees it queued nor can open it
    other = (await client.get("/api/consultations/queue", headers=clinic.doctor("prac-sun"))).json()
    assert all(q["id"] != c["id"] for q in other["waiting"])
    assert (await client.get(f"/api/consultations/{c['id']}", headers=clinic.doctor("prac-sun"))).status_code == 404
    # the consultation is an Encounter of class VR, the form a QuestionnaireResponse of it
    enc = (await client.get(f"/fhir/R4/Encounter/{c['id']}")).json()
    assert enc["class"]["code"] == "VR" and enc["status"] == "planned"
    qr = (await client.get(f"/fhir/R4/QuestionnaireResponse?encounter=Encounter/{c['id']}")).json()
    assert qr["total"] == 1 if "total" in qr else len(qr["entry"]) == 1


async def test_another_patient_gets_404_everywhere_and_learns_nothing(client, clinic):
    cid = await accepted(client, clinic)
    await client.post(f"/api/consultations/{cid}/messages", json={"text": "我的血糖 12"}, headers=clinic.patient())
    wang = clinic.patient("pat-wang")
    for method, path, kwargs in (
        ("GET", "", {}), ("GET", "/messages", {}), ("POST", "/messages", {"json": {"text": "hi"}}),
        ("POST", "/read", {"json": {"seq": 1}}), ("GET", "/record", {}), ("POST", "/cancel", {}),
        ("GET", "/ice-servers", {}), ("POST", "/calls", {}),
        ("POST", "/images", {"files": {"file": ("a.jpg", image_bytes(), "image/jpeg")}}),
    ):
        r = await client.request(method, f"/api/consultations/{cid}{path}", headers=wang, **kwargs)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert "血糖" not in r.text  # the message itself never leaks (ids may contain any digits)
    missing = await client.get("/api/consultations/no-such-id", headers=wang)
    assert missing.status_code == 404 and missing.json()["detail"].replace("no-such-id", cid) == \
        (await client.get(f"/api/consultations/{cid}", headers=wang)).json()["detail"]
    # a doctor of the department may not open it once another doctor has it
    assert (await client.get(f"/api/consultations/{cid}", headers=clinic.doctor("prac-zhao"))).status_code == 404
    # nobody without a patient or doctor identity
    assert (await client.get(f"/api/consultations/{cid}")).status_code == 403


async def test_start_refuses_bad_input(client, clinic):
    h = clinic.patient()
    assert (await client.post("/api/consultations", json={"mode": "text"}, headers=h)).status_code == 400
    assert (await client.post("/api/consultations", json={"mode": "phone", "department": ENDO},
                              headers=h)).status_code == 422
    assert (await client.post("/api/consultations", json={"department": "HealthcareService/none"},
                              headers=h)).status_code == 404
    assert (await client.post("/api/consultations", json={"department": "Patient/pat-wang"},
                              headers=h)).status_code == 400
    wrong = await client.post("/api/consultations", json={"doctor": "Practitioner/prac-sun", "department": ENDO},
                              headers=h)
    assert wrong.status_code == 400
    assert (await client.post("/api/consultations", json={"department": ENDO},
                              headers=clinic.doctor())).status_code == 403


async def test_booked_doctor_consultation_waits_for_that_doctor_only(client, clinic):
    c = await start(client, clinic, doctor="Practitioner/prac-zhao", department=None)
    assert c["doctor"] == "Practitioner/prac-zhao"
    assert (await client.post(f"/api/consultations/{c['id']}/accept", headers=clinic.doctor("prac-li"))).status_code == 404
    assert (await client.post(f"/api/consultations/{c['id']}/accept",
                              headers=clinic.doctor("prac-zhao"))).status_code == 200


async def test_two_doctors_accepting_at_once_exactly_one_wins(client, clinic):
    cid = (await start(client, clinic))["id"]
    results = await asyncio.gather(
        client.post(f"/api/consultations/{cid}/accept", headers=clinic.doctor("prac-li")),
        client.post(f"/api/consultations/{cid}/accept", headers=clinic.doctor("prac-zhao")),
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409], [r.text for r in results]
    winner = next(r for r in results if r.status_code == 200).json()["doctor"]
    enc = (await client.get(f"/fhir/R4/Encounter/{cid}")).json()
    assert enc["status"] == "in-progress"
    attenders = [p["individual"]["reference"] for p in enc["participant"]]
    assert attenders == [winner]
    msgs = (await client.get(f"/api/consultations/{cid}/messages", headers=clinic.patient())).json()["messages"]
    assert [m["text"] for m in msgs].count("李医生已接诊") + [m["text"] for m in msgs].count("赵医生已接诊") == 1


# ------------------------------------------------------------------ messages
async def test_messages_are_stored_in_order_replayed_since_and_never_twice(client, clinic):
    cid = await accepted(client, clinic)
    p, d = clinic.patient(), clinic.doctor()
    sent = []
    for i in range(5):
        h = p if i % 2 == 0 else d
        r = await client.post(f"/api/consultations/{cid}/messages", json={"text": f"第{i}条", "client_id": f"c{i}"},
                              headers=h)
        assert r.status_code == 201
        sent.append(r.json())
    seqs = [m["seq"] for m in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    again = await client.post(f"/api/consultations/{cid}/messages", json={"text": "第0条", "client_id": "c0"},
                              headers=p)
    assert again.status_code == 200 and again.json()["seq"] == sent[0]["seq"]
    all_msgs = (await client.get(f"/api/consultations/{cid}/messages", headers=d)).json()["messages"]
    texts = [m["text"] for m in all_msgs if m["from"] != "system"]
    assert texts == [f"第{i}条" for i in range(5)]
    later = (await client.get(f"/api/consultations/{cid}/messages?since={sent[2]['seq']}", headers=p)).json()
    assert [m["text"] for m in later["messages"]] == ["第3条", "第4条"]
    # each message is a Communication of the Encounter, sender and recipient set
    comm = (await client.get(f"/fhir/R4/Communication/{sent[1]['id']}")).json()
    assert comm["encounter"]["reference"] == f"Encounter/{cid}"
    assert comm["sender"]["reference"] == "Practitioner/prac-li"
    assert comm["recipient"][0]["reference"] == "Patient/pat-zhang"
    assert comm["payload"][0]["contentString"] == "第1条"
    bad = await client.post(f"/api/consultations/{cid}/messages", json={"text": ""}, headers=p)
    assert bad.status_code == 422


async def test_a_waiting_doctor_cannot_reply_before_accepting(client, clinic):
    cid = (await start(client, clinic))["id"]
    r = await client.post(f"/api/consultations/{cid}/messages", json={"text": "你好"}, headers=clinic.doctor())
    assert r.status_code == 403
    # the patient may add details while waiting
    r = await client.post(f"/api/consultations/{cid}/messages", json={"text": "补充：晚上口渴"}, headers=clinic.patient())
    assert r.status_code == 201


async def test_closed_consultation_refuses_messages_with_409_and_writes_nothing(client, clinic):
    cid = await accepted(client, clinic)
    r = await client.post(f"/api/consultations/{cid}/end", headers=clinic.doctor())
    assert r.status_code == 200 and r.json()["state"] == "ended"
    before = (await client.get(f"/fhir/R4/Communication?encounter=Encounter/{cid}&_summary=count")).json()["total"]
    for h in (clinic.patient(), clinic.doctor()):
        r = await client.post(f"/api/consultations/{cid}/messages", json={"text": "还在吗"}, headers=h)
        assert r.status_code == 409 and "已结束" in r.json()["detail"]
    after = (await client.get(f"/fhir/R4/Communication?encounter=Encounter/{cid}&_summary=count")).json()["total"]
    assert after == before
    enc = (await client.get(f"/fhir/R4/Encounter/{cid}")).json()
    assert enc["status"] == "finished" and "end" in enc["period"]
    assert [h["status"] for h in enc["statusHistory"]] == ["planned", "in-progress"]
    assert (await client.post(f"/api/consultations/{cid}/end", headers=clinic.doctor())).status_code == 409


async def test_patient_cancels_while_waiting_but_not_after_accept(client, clinic):
    cid = (await start(client, clinic))["id"]
    r = await client.post(f"/api/consultations/{cid}/cancel", headers=clinic.patient())
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert (await client.post(f"/api/consultations/{cid}/accept", headers=clinic.doctor())).status_code == 409
    cid2 = await accepted(client, clinic)
    assert (await client.post(f"/api/consultations/{cid2}/cancel", headers=clinic.patient())).status_code == 409


async def test_read_receipts_move_forward_only(client, clinic):
    cid = await accepted(client, clinic)
    for text in ("一", "二", "三"):
        await client.post(f"/api/consultations/{cid}/messages", json={"text": text}, headers=clinic.patient())
    last = (await client.get(f"/api/consultations/{cid}", headers=clinic.doctor())).json()["last_seq"]
    r = await client.post(f"/api/consultations/{cid}/read", json={"seq": last}, headers=clinic.doctor())
    assert r.json() == {"by": "doctor", "seq": last}
    r = await client.post(f"/api/consultations/{cid}/read", json={"seq": 1}, headers=clinic.doctor())
    assert r.json()["seq"] == last
    r = await client.post(f"/api/consultations/{cid}/read", json={"seq": last + 100}, headers=clinic.patient())
    assert r.json()["seq"] == last  # never beyond the last message
    detail = (await client.get(f"/api/consultations/{cid}", headers=clinic.patient())).json()
    assert detail["doctor_read_seq"] == last and detail["patient_read_seq"] == last


# ------------------------------------------------------------------ images
async def test_image_upload_is_checked_cleaned_and_served_to_the_parties_only(client, clinic):
    cid = await accepted(client, clinic)
    photo = image_bytes("JPEG", gps=True)
    assert Image.open(io.BytesIO(photo)).getexif().get(0x8825)
    r = await client.post(f"/api/consultations/{cid}/images", headers=clinic.patient(),
                          files={"file": ("rash.jpg", photo, "image/jpeg")}, data={"client_id": "img-1"})
    assert r.status_code == 201, r.text
    frame = r.json()
    assert frame["kind"] == "image" and frame["image"]["content_type"] == "image/jpeg"
    got = await client.get(frame["image"]["url"], headers=clinic.doctor())
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    cleaned = Image.open(io.BytesIO(got.content))
    assert cleaned.size == (64, 48) and not cleaned.getexif()  # GPS and camera gone
    assert (await client.get(frame["image"]["url"], headers=clinic.patient("pat-wang"))).status_code == 404
    retry = await client.post(f"/api/consultations/{cid}/images", headers=clinic.patient(),
                              files={"file": ("rash.jpg", photo, "image/jpeg")}, data={"client_id": "img-1"})
    assert retry.status_code == 200 and retry.json()["seq"] == frame["seq"]
    comm = (await client.get(f"/fhir/R4/Communication/{frame['id']}")).json()
    assert comm["payload"][0]["contentAttachment"]["url"] == frame["image"]["url"]
    png = await client.post(f"/api/consultations/{cid}/images", headers=clinic.patient(), data={"purpose": "form"},
                            files={"file": ("x.png", image_bytes("PNG"), "image/png")})
    assert png.status_code == 201
    detail = (await client.get(f"/api/consultations/{cid}", headers=clinic.doctor())).json()
    assert [p["contentType"] for p in detail["form"]["photos"]] == ["image/png"]


async def test_uploads_that_are_not_images_or_too_large_are_refused(client, clinic):
    cid = await accepted(client, clinic)
    h = clinic.patient()
    before = (await client.get(f"/api/consultations/{cid}", headers=h)).json()["last_seq"]
    fake = await client.post(f"/api/consultations/{cid}/images", headers=h,
                             files={"file": ("photo.jpg", b"%PDF-1.4 not an image" * 10, "image/jpeg")})
    assert fake.status_code == 422 and "JPEG" in fake.json()["detail"]
    truncated = image_bytes("JPEG")[:200]
    assert (await client.post(f"/api/consultations/{cid}/images", headers=h,
                              files={"file": ("a.jpg", truncated, "image/jpeg")})).status_code == 422
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    assert (await client.post(f"/api/consultations/{cid}/images", headers=h,
                              files={"file": ("a.jpg", gif.getvalue(), "image/jpeg")})).status_code == 422
    big = image_bytes("JPEG") + b"\0" * (10 * 1024 * 1024)
    r = await client.post(f"/api/consultations/{cid}/images", headers=h, files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413
    assert (await client.get(f"/api/consultations/{cid}", headers=h)).json()["last_seq"] == before


# ------------------------------------------------------------------ visit record and the follow-up rule
RECORD = {
    "chief_complaint": "血糖控制不佳两周",
    "present_illness": "空腹血糖 9-11 mmol/L，无低血糖",
    "past_history": "2型糖尿病5年",
    "examination": "患者自测血压 128/78 mmHg",
    "assessment": "2型糖尿病，血糖控制欠佳",
    "diagnoses": [{"code": "E11.900"}],
    "advice": "二甲双胍加量，两周后复诊",
}


async def test_follow_up_visit_record_creates_encounter_condition_and_impression_and_keeps_the_chat(client, clinic):
    cid = await accepted(client, clinic)
    await client.post(f"/api/consultations/{cid}/messages", json={"text": "最近空腹血糖 10"}, headers=clinic.patient())
    await client.post(f"/api/consultations/{cid}/messages", json={"text": "请继续监测"}, headers=clinic.doctor())
    r = await client.post(f"/api/consultations/{cid}/record", json=RECORD, headers=clinic.doctor())
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["follow_up_visit"] is True and len(out["conditions"]) == 1
    enc = (await client.get(f"/fhir/R4/Encounter/{cid}")).json()
    assert enc["status"] == "finished" and enc["diagnosis"][0]["condition"]["reference"] == out["conditions"][0]
    assert any(c["code"] == "online-follow-up" for t in enc["type"] for c in t["coding"])
    cond = (await client.get(f"/fhir/R4/{out['conditions'][0]}")).json()
    assert cond["code"]["coding"][0]["code"] == "E11.900" and cond["verificationStatus"]["coding"][0]["code"] == "confirmed"
    ci = (await client.get(f"/fhir/R4/{out['clinical_impression']}")).json()
    assert ci["description"] == RECORD["chief_complaint"] and ci["summary"] == RECORD["assessment"]
    assert [n["text"].split("：")[0] for n in ci["note"]] == ["现病史", "既往史", "体格检查", "处理意见"]
    record = (await client.get(f"/api/consultations/{cid}/record", headers=clinic.patient())).json()
    texts = [m.get("text") for m in record["conversation"]]
    assert "最近空腹血糖 10" in texts and "请继续监测" in texts
    assert record["clinical_impression"]["id"] == out["clinical_impression"].split("/")[1]
    again = await client.post(f"/api/consultations/{cid}/record", json=RECORD, headers=clinic.doctor())
    assert again.status_code == 409
    conds = (await client.get(f"/fhir/R4/Condition?encounter=Encounter/{cid}&_summary=count")).json()["total"]
    assert conds == 1


async def test_first_visit_cannot_be_diagnosed_online_and_nothing_is_written(client, clinic):
    cid = await accepted(client, clinic, patient="pat-wang")
    r = await client.post(f"/api/consultations/{cid}/record", json=RECORD, headers=clinic.doctor())
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("首诊患者不能在线诊断和开具处方：") and "第十六条" in detail and "E11" in detail
    assert (await client.get(f"/fhir/R4/Condition?subject=Patient/pat-wang&_summary=count")).json()["total"] == 0
    assert (await client.get(f"/fhir/R4/ClinicalImpression?encounter=Encounter/{cid}&_summary=count")).json()["total"] == 0
    assert (await client.get(f"/api/consultations/{cid}", headers=clinic.doctor())).json()["state"] == "active"
    # advice and a referral are what a first visit may get
    advice = {**RECORD, "diagnoses": [], "assessment": "",
              "referral": {"to": "Organization/other-hospital", "reason": "初诊糖尿病需线下确诊"}}
    r = await client.post(f"/api/consultations/{cid}/record", json=advice, headers=clinic.doctor())
    assert r.status_code == 201, r.text
    assert r.json()["conditions"] == [] and r.json()["follow_up_visit"] is False
    sr = (await client.get(f"/fhir/R4/{r.json()['referral']}")).json()
    assert sr["performer"][0]["reference"] == "Organization/other-hospital"
    assert sr["category"][0]["coding"][0]["code"] == "3457005"
    enc = (await client.get(f"/fhir/R4/Encounter/{cid}")).json()
    assert any(c["code"] == "online-advice" for t in enc["type"] for c in t["coding"])


async def test_a_diagnosis_made_only_online_does_not_qualify(client, clinic):
    cid = await accepted(client, clinic, patient="pat-liu")
    r = await client.post(f"/api/consultations/{cid}/record", json=RECORD, headers=clinic.doctor())
    assert r.status_code == 422 and "只来自互联网诊疗" in r.json()["detail"]


async def test_record_refuses_unknown_codes_and_other_categories(client, clinic):
    cid = await accepted(client, clinic)
    r = await client.post(f"/api/consultations/{cid}/record", json={**RECORD, "diagnoses": [{"code": "E11.XYZ"}]},
                          headers=clinic.doctor())
    assert r.status_code == 422 and "ICD-10" in r.json()["detail"]
    r = await client.post(f"/api/consultations/{cid}/record", json={**RECORD, "diagnoses": [{"code": "I10.x00"}]},
                          headers=clinic.doctor())
    assert r.status_code == 422 and "I10" in r.json()["detail"]
    assert (await client.post(f"/api/consultations/{cid}/record", json=RECORD,
                              headers=clinic.patient())).status_code == 403


async def test_online_diagnosis_allowed_for_the_prescribing_module(repo_factory, clinic):
    from yiyun.hospital.consultations.records import online_diagnosis_allowed

    async with repo_factory(write=False) as repo:
        ok, why = await online_diagnosis_allowed(repo, "Patient/pat-zhang", "E11.200")  # same category E11
        assert ok and "复诊" in why
        ok, why = await online_diagnosis_allowed(repo, "Patient/pat-zhang", "E10.900")
        assert not ok and "E10" in why
        ok, _ = await online_diagnosis_allowed(repo, "Patient/pat-liu", "E11.900")
        assert not ok
        ok, _ = await online_diagnosis_allowed(repo, "Patient/pat-wang", "E11.900")
        assert not ok


# ------------------------------------------------------------------ handover and referral
async def test_handover_to_a_colleague_moves_the_consultation_with_a_note(client, clinic):
    cid = await accepted(client, clinic)
    bad = await client.post(f"/api/consultations/{cid}/handover", json={"doctor": "Practitioner/prac-sun", "note": "x"},
                            headers=clinic.doctor())
    assert bad.status_code == 400
    r = await client.post(f"/api/consultations/{cid}/handover",
                          json={"doctor": "Practitioner/prac-zhao", "note": "患者血糖偏高，请调整用药"},
                          headers=clinic.doctor())
    assert r.status_code == 200 and r.json()["doctor"] == "Practitioner/prac-zhao"
    assert (await client.get(f"/api/consultations/{cid}", headers=clinic.doctor("prac-li"))).status_code == 404
    zhao = (await client.get(f"/api/consultations/{cid}", headers=clinic.doctor("prac-zhao"))).json()
    assert zhao["relation"] == "doctor" and zhao["handovers"][0]["note"] == "患者血糖偏高，请调整用药"
    assert (await client.post(f"/api/consultations/{cid}/messages", json={"text": "我是赵医生"},
                              headers=clinic.doctor("prac-zhao"))).status_code == 201
    patient_view = (await client.get(f"/api/consultations/{cid}/messages", headers=clinic.patient())).json()
    assert all("请调整用药" not in (m.get("text") or "") for m in patient_view["messages"])
    assert any("转交给赵医生" in (m.get("text") or "") for m in patient_view["messages"])


async def test_referral_is_a_service_request_of_the_encounter(client, clinic):
    cid = await accepted(client, clinic)
    r = await client.post(f"/api/consultations/{cid}/referral",
                          json={"to": "Organization/other-hospital", "reason": "需眼底检查"}, headers=clinic.doctor())
    assert r.status_code == 201
    sr = r.json()["resource"]
    assert sr["encounter"]["reference"] == f"Encounter/{cid}" and sr["requester"]["reference"] == "Practitioner/prac-li"
    assert (await client.post(f"/api/consultations/{cid}/referral", json={"to": "Organization/other-hospital",
                                                                          "reason": "x"},
                              headers=clinic.patient())).status_code == 403


async def test_calls_and_ice_servers(client, clinic, monkeypatch):
    from yiyun.core.settings import get_settings

    cid = await accepted(client, clinic)
    assert (await client.get(f"/api/consultations/{cid}/ice-servers", headers=clinic.patient())).json() == \
        {"iceServers": []}
    monkeypatch.setenv("YIYUN_STUN_URLS", "stun:stun.example.cn:3478")
    monkeypatch.setenv("YIYUN_TURN_URLS", "turn:turn.example.cn:3478?transport=udp")
    monkeypatch.setenv("YIYUN_TURN_USERNAME", "u")
    monkeypatch.setenv("YIYUN_TURN_CREDENTIAL", "p")
    get_settings.cache_clear()
    servers = (await client.get(f"/api/consultations/{cid}/ice-servers", headers=clinic.patient())).json()["iceServers"]
    assert servers == [{"urls": ["stun:stun.example.cn:3478"]},
                       {"urls": ["turn:turn.example.cn:3478?transport=udp"], "username": "u", "credential": "p"}]
    call = (await client.post(f"/api/consultations/{cid}/calls", headers=clinic.doctor())).json()
    same = (await client.post(f"/api/consultations/{cid}/calls", headers=clinic.patient())).json()
    assert same["id"] == call["id"] and call["state"] == "ringing"
    ended = (await client.post(f"/api/consultations/{cid}/calls/{call['id']}/hangup", headers=clinic.patient())).json()
    assert ended["state"] == "ended" and ended["ended_by"] == "patient"
    msgs = (await client.get(f"/api/consultations/{cid}/messages", headers=clinic.doctor())).json()["messages"]
    assert msgs[-1]["kind"] == "call" and "未接通" in msgs[-1]["text"]


async def test_messages_are_retained_unchanged_through_the_fhir_api_too(client, clinic):
    cid = await accepted(client, clinic)
    sent = (await client.post(f"/api/consultations/{cid}/messages", json={"text": "原话"},
                              headers=clinic.patient())).json()
    assert (await client.delete(f"/fhir/R4/Communication/{sent['id']}")).status_code == 409
    comm = (await client.get(f"/fhir/R4/Communication/{sent['id']}")).json()
    changed = {**comm, "payload": [{"contentString": "改过的话"}]}
    assert (await client.put(f"/fhir/R4/Communication/{sent['id']}", json=changed)).status_code == 409
    noted = {**comm, "note": [{"text": "医生已阅"}]}
    assert (await client.put(f"/fhir/R4/Communication/{sent['id']}", json=noted)).status_code == 200
    other = (await client.post("/fhir/R4/Communication", json={"resourceType": "Communication",
                                                                "status": "completed"})).json()
    assert (await client.delete(f"/fhir/R4/Communication/{other['id']}")).status_code in (200, 204)


async def test_concurrent_messages_get_distinct_consecutive_sequence_numbers(client, clinic):
    cid = await accepted(client, clinic)
    start_seq = (await client.get(f"/api/consultations/{cid}", headers=clinic.patient())).json()["last_seq"]
    sends = [client.post(f"/api/consultations/{cid}/messages", json={"text": f"并发{i}", "client_id": f"k{i}"},
                         headers=clinic.patient() if i % 2 else clinic.doctor()) for i in range(12)]
    # the same message retried at the same moment is stored once
    sends += [client.post(f"/api/consultations/{cid}/messages", json={"text": "重试", "client_id": "same"},
                          headers=clinic.patient()) for _ in range(3)]
    results = await asyncio.gather(*sends)
    assert all(r.status_code in (200, 201) for r in results), [r.text for r in results]
    assert sorted(r.status_code for r in results[12:]) == [200, 200, 201]
    seqs = sorted({r.json()["seq"] for r in results})
    assert seqs == list(range(start_seq + 1, start_seq + 14))
    comms = (await client.get(f"/fhir/R4/Communication?encounter=Encounter/{cid}&_summary=count")).json()["total"]
    assert comms == start_seq + 13


async def test_messages_written_together_keep_their_own_answers(client, clinic):
    from yiyun.core.errors import Conflict, NotFound
    from yiyun.hospital.consultations.service import Party
    from yiyun.hospital.consultations.writer import message_writer, send_text

    open_ids = [await accepted(client, clinic) for _ in range(2)]
    closed = await accepted(client, clinic)
    await client.post(f"/api/consultations/{closed}/end", headers=clinic.doctor())
    zhang = Party(clinic.tenant, "user:pat-zhang", "patient", "pat-zhang")
    li = Party(clinic.tenant, "user:prac-li", "doctor", "prac-li")
    wang = Party(clinic.tenant, "user:pat-wang", "patient", "pat-wang")
    jobs = []
    for i in range(10):
        for cid in open_ids:
            jobs.append(send_text(zhang if i % 2 else li, cid, f"消息{i}", f"w{i}"))
    jobs.append(send_text(zhang, closed, "晚了", "late"))
    jobs.append(send_text(wang, open_ids[0], "偷看", None))
    jobs.append(send_text(zhang, open_ids[0], "消息1", "w1"))  # the same message twice in one batch
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert isinstance(results[20], Conflict) and isinstance(results[21], NotFound)
    assert results[22][1] is False and results[22][0]["seq"] == results[2][0]["seq"]
    assert message_writer().largest > 1
    for cid in open_ids:
        mine = [r[0] for r in results[:20] if r[0]["consultation"] == cid]
        msgs = (await client.get(f"/api/consultations/{cid}/messages", headers=clinic.patient())).json()["messages"]
        stored = [m for m in msgs if m["from"] != "system"]
        assert sorted(m["seq"] for m in mine) == [m["seq"] for m in stored]
        assert [m["text"] for m in stored] == [f"消息{i}" for i in range(10)]
        assert {m["sender"] for m in stored} == {"Patient/pat-zhang", "Practitioner/prac-li"}
    # each message written in a batch is audited under its own sender
    from sqlalchemy import select

    from yiyun.core.db import get_engine
    from yiyun.identity.audit_tables import audit_log

    written = {r[0]["id"]: r[0]["from"] for r in results[:20]}
    async with get_engine().connect() as conn:
        rows = (await conn.execute(select(audit_log.c.resource_id, audit_log.c.actor, audit_log.c.action).where(
            audit_log.c.tenant == clinic.tenant, audit_log.c.resource_id.in_(list(written))))).all()
    actors = {rid: actor for rid, actor, action in rows if action == "create"}
    assert actors == {rid: "user:pat-zhang" if who == "patient" else "user:prac-li" for rid, who in written.items()}
    from yiyun.identity.audit import verify

    async with get_engine().connect() as conn:
        assert (await verify(conn, tenant=clinic.tenant)).ok  # the chain stays intact
