"""Request bodies of the consultation API (responses are plain JSON documented in docs/consultation.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PreConsultationForm(_Body):
    """问诊单: what the doctor sees before the first message."""

    chief_complaint: str = Field(default="", max_length=500, description="主诉")
    duration: str = Field(default="", max_length=200, description="持续时间")
    history: str = Field(default="", max_length=2000, description="既往史")
    allergies: str = Field(default="", max_length=1000, description="过敏史")
    medications: str = Field(default="", max_length=2000, description="目前用药")
    guardian_accompanies: bool = Field(
        default=False, description="监护人确认全程陪同: required for a child under 6 (docs/consultation.md)")


class StartConsultation(_Body):
    mode: Literal["text", "video"] = "text"
    doctor: str | None = Field(default=None, max_length=130, description="Practitioner/<id> for a chosen doctor")
    department: str | None = Field(default=None, max_length=130,
                                   description="Organization/<id> or HealthcareService/<id>: first available doctor")
    appointment: str | None = Field(default=None, max_length=130, description="Appointment/<id> of a booking")
    patient: str | None = Field(default=None, max_length=130,
                                description="Patient/<id> the consultation is for: the caller (default) or their ward")
    form: PreConsultationForm = Field(default_factory=PreConsultationForm)


class MessageIn(_Body):
    text: str = Field(min_length=1, max_length=4000)
    client_id: str | None = Field(default=None, min_length=1, max_length=64,
                                  description="sender's idempotency key: a retry is stored once")


class ReadIn(_Body):
    seq: int = Field(ge=0)


class HandoverIn(_Body):
    doctor: str = Field(min_length=1, max_length=130, description="Practitioner/<id> of the colleague")
    note: str = Field(default="", max_length=2000)


class ReferralIn(_Body):
    to: str = Field(min_length=1, max_length=130, description="Organization/<id> or HealthcareService/<id>")
    reason: str = Field(min_length=1, max_length=1000)
    note: str | None = Field(default=None, max_length=2000)


class DiagnosisIn(_Body):
    code: str = Field(min_length=3, max_length=20, description="ICD-10 national clinical edition 2.0 code")


class VisitRecordIn(_Body):
    chief_complaint: str = Field(min_length=1, max_length=1000, description="主诉")
    present_illness: str = Field(default="", max_length=4000, description="现病史")
    past_history: str = Field(default="", max_length=4000, description="既往史")
    examination: str = Field(default="", max_length=4000, description="体格检查")
    assessment: str = Field(default="", max_length=4000, description="评估/诊断意见")
    diagnoses: list[DiagnosisIn] = Field(default_factory=list, max_length=10)
    advice: str = Field(default="", max_length=4000, description="处理意见")
    referral: ReferralIn | None = None


class RatingIn(_Body):
    stars: int = Field(ge=1, le=5, description="1-5 stars")
    comment: str = Field(default="", max_length=200, description="optional, up to 200 characters")


class EndIn(_Body):
    reason: str | None = Field(default=None, max_length=500)
