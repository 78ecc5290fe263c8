"""Request bodies of the knowledge API (responses are the engines' JSON objects)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Sex = Literal["male", "female"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TriageRequest(_Body):
    text: str = Field(min_length=1, max_length=2000, description="患者对不适的描述")
    age: float | None = Field(default=None, ge=0, le=130, description="年龄（岁），婴儿可用小数")
    sex: Sex | None = None


class DiagnoseRequest(_Body):
    present: list[str] = Field(default_factory=list, max_length=60)
    absent: list[str] = Field(default_factory=list, max_length=60)
    text: str | None = Field(default=None, max_length=5000)
    age: float | None = Field(default=None, ge=0, le=130)
    sex: Sex | None = None


class AskRequest(_Body):
    question: str = Field(min_length=1, max_length=500)


class ExtractRequest(_Body):
    text: str = Field(min_length=1, max_length=20000)


class InteractionsRequest(_Body):
    drugs: list[str] = Field(min_length=1, max_length=30)


class DoseItem(_Body):
    value: float = Field(gt=0)
    unit: str = Field(min_length=1, max_length=8)


class PrescriptionItem(_Body):
    name: str = Field(min_length=1, max_length=100)
    daily_dose: DoseItem | None = None


class DrugReviewRequest(_Body):
    drugs: list[PrescriptionItem | str] = Field(min_length=1, max_length=30)
    allergies: list[str] = Field(default_factory=list, max_length=30)
    conditions: list[str] = Field(default_factory=list, max_length=30)
    age: float | None = Field(default=None, ge=0, le=130)
    pregnant: bool = False
    lactating: bool = False


class FeedbackRequest(_Body):
    question: str = Field(min_length=1, max_length=500)
    answer: str | None = Field(default=None, max_length=5000)
    intent: str | None = Field(default=None, max_length=32)
    entity_kind: str | None = Field(default=None, max_length=32)
    entity_name: str | None = Field(default=None, max_length=200)
    verdict: Literal["helpful", "wrong"]
    comment: str | None = Field(default=None, max_length=2000)


class SelfcheckRequest(_Body):
    answers: dict[str, Any] = Field(default_factory=dict)
    version: str | None = Field(default=None, max_length=50)
