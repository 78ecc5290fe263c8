"""The visit record of an online consultation, and the follow-up-visit rule.

《互联网诊疗管理办法（试行）》(国卫医发〔2018〕25号) 第十六条: a medical institution may
offer online follow-up visits (复诊) for some common and chronic diseases only; the doctor
must hold the patient's record of a diagnosis of that disease made at a medical
institution, and may then diagnose and prescribe online. A patient without one (首诊) may
get advice and a referral online, no diagnosis and no prescription.

How the platform decides "diagnosed before at a medical institution" (deliberately
conservative; the doctor still decides whether the visit qualifies clinically):

- a Condition of the patient in this institution's store, verificationStatus
  `confirmed`, not entered in error;
- coded in ICD-10 (the national clinical edition 2.0 system) with the same 3-character
  category as the new diagnosis (`E11.900` matches an earlier `E11.x`; `E10` does not):
  the category is the disease; finer codes (sub-type, complication) may change between
  visits;
- recorded with an Encounter that took place at the institution: class other than VR
  (virtual). A diagnosis made online never qualifies a later online diagnosis;
- records held by other institutions count only once they are in this store (a record
  shared into it, or entered by the institution from the patient's documents).
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib.resources import files
from typing import Any

from sqlalchemy import update

from yiyun.core.errors import BadRequest, Conflict, Unprocessable
from yiyun.fhir.model import instant_from_us, now_us
from yiyun.fhir.repository import FhirRepository
from yiyun.hospital.consultation_models import consult_session
from yiyun.hospital.consultations import service
from yiyun.hospital.consultations.service import Work, coding, ref

ICD10_SYSTEM = "http://www.nhc.gov.cn/icd10/clinical-v2"  # the demo's and the knowledge base's system
THO = "http://terminology.hl7.org/CodeSystem"
RULE = "《互联网诊疗管理办法（试行）》第十六条"
FIRST_VISIT = "首诊患者不能在线诊断和开具处方："


@lru_cache(maxsize=1)
def icd10_names() -> dict[str, str]:
    """code → name of the 国家临床版 2.0 ICD-10 list shipped in yiyun/core/data."""
    text = files("yiyun.core").joinpath("data", "codes", "icd10-clinical-v2", "icd10_clinical_v2.csv").read_text(
        encoding="utf-8")
    return {r["code"].strip(): r["name"].strip().replace("\\[", "[").replace("\\]", "]")
            for r in csv.DictReader(io.StringIO(text, newline=""))}


def icd10_category(code: str) -> str:
    return code.strip().upper()[:3]


def check_icd10(code: str) -> str:
    """The code's name; 422 when the code is not in the national clinical edition."""
    code = (code or "").strip()
    name = icd10_names().get(code)
    if name is None:
        raise Unprocessable(f"ICD-10 编码不存在于国家临床版2.0: {code!r} (unknown ICD-10 code)",
                            expression=["diagnoses.code"])
    return name


def _icd10_codes(condition: dict) -> list[str]:
    return [c.get("code", "") for c in (condition.get("code") or {}).get("coding") or []
            if c.get("system") == ICD10_SYSTEM and c.get("code")]


def _status(concept: dict | None) -> str | None:
    for c in (concept or {}).get("coding") or []:
        return c.get("code")
    return None


async def online_diagnosis_allowed(repo: FhirRepository, patient_ref: str, icd10_code: str) -> tuple[bool, str]:
    """Whether `icd10_code` may be diagnosed (and so prescribed for) online for the patient,
    and why (see the module docstring for the matching rule). For the prescribing module too."""
    category = icd10_category(icd10_code)
    name = icd10_names().get(icd10_code.strip(), icd10_code)
    result = await repo.search("Condition", [("subject", patient_ref), ("_count", "1000")])
    candidates: list[tuple[dict, str]] = []
    for stored in result.matches:
        cond = stored.resource
        if _status(cond.get("verificationStatus")) != "confirmed":
            continue
        if not any(icd10_category(c) == category for c in _icd10_codes(cond)):
            continue
        enc = (cond.get("encounter") or {}).get("reference", "")
        if enc.startswith("Encounter/"):
            candidates.append((cond, enc.split("/", 1)[1]))
    encounters = await service.fetch_many(repo, [("Encounter", e) for _, e in candidates])
    online_only = False
    for cond, enc_id in candidates:
        stored = encounters.get(("Encounter", enc_id))
        if stored is None or stored.deleted:
            continue
        enc = stored.resource
        if enc.get("status") in ("entered-in-error", "cancelled", "planned"):
            continue
        if (enc.get("class") or {}).get("code") == "VR":
            online_only = True
            continue
        when = cond.get("recordedDate") or (enc.get("period") or {}).get("start") or ""
        return True, (f"复诊：患者已于 {when[:10]} 在医疗机构就诊时确诊 {category} 类疾病"
                      f"（Condition/{cond.get('id')}，Encounter/{enc_id}）")
    if online_only:
        return False, (f"患者的 {category}（{name}）诊断只来自互联网诊疗，没有在医疗机构线下就诊确诊的记录（{RULE}）。"
                       "可给予健康咨询建议，或转诊至线下就诊。")
    return False, (f"患者没有在医疗机构确诊 {category}（{name}）类疾病的就诊记录（{RULE}）。"
                   "可给予健康咨询建议，或转诊至线下就诊。")


def _note(label: str, text: str | None) -> dict | None:
    text = (text or "").strip()
    return {"text": f"{label}：{text[:4000]}"} if text else None


async def save_visit_record(work: Work, cid: str, record: dict[str, Any]) -> dict:
    """The structured record of the consultation, in one unit of work: the Encounter
    finished, a Condition per diagnosis, a ClinicalImpression (chief complaint, present
    illness, past history, examination, assessment, advice), and a referral if asked.
    The conversation stays with the Encounter (its Communications are never removed)."""
    row, relation = await service.load(work, cid, lock=True)
    service._require_doctor(relation, "书写病历")
    if row.record_id:
        raise Conflict("该问诊已有病历，不能重复保存 (the visit record was already saved)")
    if row.state not in ("active", "ended"):
        raise Conflict("问诊未开始或已取消，不能书写病历 (no visit record for this consultation)")
    complaint = (record.get("chief_complaint") or "").strip()
    if not complaint:
        raise BadRequest("请填写主诉 (chief complaint is required)", expression=["chief_complaint"])
    patient_ref = f"Patient/{row.patient_id}"
    diagnoses = []
    for d in record.get("diagnoses") or []:
        code = (d.get("code") or "").strip()
        diagnoses.append((code, check_icd10(code)))
    if len({c for c, _ in diagnoses}) != len(diagnoses):
        raise BadRequest("诊断重复 (the same diagnosis twice)", expression=["diagnoses"])
    for code, _ in diagnoses:
        allowed, reason = await online_diagnosis_allowed(work.repo, patient_ref, code)
        if not allowed:
            raise Unprocessable(FIRST_VISIT + reason, expression=["diagnoses"])
    ts = now_us()
    when = instant_from_us(ts)
    doctor = ref(work.party.ref)
    condition_refs = []
    for code, name in diagnoses:
        stored = (await work.repo.create({
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [coding(f"{THO}/condition-clinical", "active", "Active")]},
            "verificationStatus": {"coding": [coding(f"{THO}/condition-ver-status", "confirmed", "Confirmed")]},
            "category": [{"coding": [coding(f"{THO}/condition-category", "encounter-diagnosis", "Encounter Diagnosis")],
                          "text": "就诊诊断"}],
            "code": {"coding": [coding(ICD10_SYSTEM, code, name)], "text": name},
            "subject": ref(patient_ref),
            "encounter": ref(f"Encounter/{cid}"),
            "recordedDate": when,
            "recorder": doctor,
            "asserter": doctor,
        })).stored
        condition_refs.append(stored.reference)
    referral = None
    if record.get("referral"):
        r = record["referral"]
        referral = await service.refer(work, cid, to=r.get("to", ""), reason=r.get("reason", ""), note=r.get("note"))
    notes = [n for n in (
        _note("现病史", record.get("present_illness")), _note("既往史", record.get("past_history")),
        _note("体格检查", record.get("examination")), _note("处理意见", record.get("advice")),
    ) if n]
    impression: dict[str, Any] = {
        "resourceType": "ClinicalImpression",
        "status": "completed",
        "description": complaint[:1000],
        "subject": ref(patient_ref),
        "encounter": ref(f"Encounter/{cid}"),
        "effectiveDateTime": when,
        "date": when,
        "assessor": doctor,
        "summary": (record.get("assessment") or "").strip()[:4000] or ("初步建议，未作诊断" if not diagnoses else None),
    }
    if condition_refs:
        impression["problem"] = [ref(c) for c in condition_refs]
        impression["finding"] = [{"itemReference": ref(c)} for c in condition_refs]
    if notes:
        impression["note"] = notes
    if referral:
        impression["supportingInfo"] = [ref(referral["reference"])]
    impression = {k: v for k, v in impression.items() if v is not None}
    ci = (await work.repo.create(impression)).stored
    await _finish_encounter(work, row, cid, ts, complaint, condition_refs)
    c = consult_session.c
    await work.conn.execute(update(consult_session).where(c.tenant == row.tenant, c.id == cid).values(
        record_id=ci.res_id, state="ended", ended_us=row.ended_us or ts))
    service._publish_state(work, await service._row(work, cid), record=ci.reference)
    return {"consultation": cid, "encounter": f"Encounter/{cid}", "clinical_impression": ci.reference,
            "conditions": condition_refs, "referral": referral["reference"] if referral else None,
            "follow_up_visit": bool(diagnoses)}


async def _finish_encounter(work: Work, row, cid: str, ts: int, complaint: str, conditions: list[str]) -> None:
    enc = (await work.repo.read("Encounter", cid)).resource
    if row.state == "active":
        await service._system_message(work, cid, "医生已完成病历，问诊结束", kind="note")
        enc = service._with_status(enc, "finished", ts)
        enc.setdefault("period", {})["end"] = instant_from_us(ts)
    enc = {k: v for k, v in enc.items() if k != "meta"}
    enc["reasonCode"] = [{"text": complaint[:500]}]
    visit_type = ("online-follow-up", "互联网复诊") if conditions else ("online-advice", "互联网咨询")
    types = [t for t in enc.get("type") or []
             if not any(cd.get("system") == service.ENCOUNTER_TYPE_SYSTEM for cd in t.get("coding") or [])]
    types.append({"coding": [coding(service.ENCOUNTER_TYPE_SYSTEM, *visit_type)], "text": visit_type[1]})
    enc["type"] = types
    if conditions:
        enc["diagnosis"] = [{"condition": ref(c), "rank": i + 1} for i, c in enumerate(conditions)]
    await work.repo.update("Encounter", cid, enc)


async def visit_record(work: Work, cid: str) -> dict:
    """The record with everything kept with it: Encounter, Conditions, ClinicalImpression,
    referrals and the whole conversation."""
    row, _ = await service.load(work, cid)
    repo = work.repo
    out: dict[str, Any] = {"consultation": service.summary(row),
                           "encounter": (await repo.read("Encounter", cid)).resource}
    out["clinical_impression"] = (await repo.read("ClinicalImpression", row.record_id)).resource if row.record_id \
        else None
    conditions = await repo.search("Condition", [("encounter", f"Encounter/{cid}"), ("_count", "100")])
    out["conditions"] = [s.resource for s in conditions.matches]
    referrals = await repo.search("ServiceRequest", [("encounter", f"Encounter/{cid}"), ("_count", "100")])
    out["referrals"] = [s.resource for s in referrals.matches]
    conversation: list[dict] = []
    while True:
        page = await service._messages_after(work, row.tenant, cid, conversation[-1]["seq"] if conversation else 0,
                                             service.REPLAY_LIMIT)
        conversation.extend(page)
        if len(page) < service.REPLAY_LIMIT:
            break
    out["conversation"] = conversation
    return out
