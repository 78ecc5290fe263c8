"""Bodies of the hospital JSON API (Pydantic v2). Wrong types are answered 422 by FastAPI."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]{1,64}$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BookRequest(_Body):
    slot: str = ID
    hospital: str | None = Field(None, max_length=64)
    patient: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    comment: str | None = Field(None, max_length=500)
    based_on: str | None = Field(None, max_length=130, description="ServiceRequest/<id> of a referral")


class CancelRequest(_Body):
    reason: str | None = Field(None, max_length=300)


class RescheduleRequest(_Body):
    slot: str = ID


class ScheduleRequest(_Body):
    role: str = ID
    type: str = Field(pattern=r"^(clinic|online-text|online-video)$")
    fee_fen: int = Field(ge=0, le=1_000_000)
    active: bool = True


class TemplateRequest(_Body):
    weekdays: list[int] = Field(min_length=1, max_length=7)
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")
    slot_minutes: int = Field(ge=5, le=120)
    valid_from: date | None = None
    valid_to: date | None = None


class ExceptionRequest(_Body):
    kind: str = Field(pattern=r"^(leave|closed|extra)$")
    target: str = Field(min_length=1, max_length=130)
    start: datetime
    end: datetime
    reason: str = Field("", max_length=200)
    slot_minutes: int | None = Field(None, ge=5, le=120)
    confirm: bool = Field(False, description="cancel the bookings it covers (after seeing how many)")
    expected_bookings: int | None = Field(None, ge=0, le=100_000,
                                          description="the count seen before confirming; refused when it changed")


class LeaveRequest(_Body):
    role: str = ID
    start: datetime
    end: datetime
    reason: str = Field("", max_length=200)
    confirm: bool = Field(False, description="cancel the bookings it covers (after seeing how many)")
    expected_bookings: int | None = Field(None, ge=0, le=100_000,
                                          description="the count seen before confirming; refused when it changed")


class GenerateRequest(_Body):
    days: int = Field(14, ge=1, le=92)
    start_day: date | None = None
    schedules: list[str] | None = Field(None, max_length=500)


class RulesRequest(_Body):
    cancel_cutoff_minutes: int | None = None
    booking_window_days: int | None = None
    max_active_per_day: int | None = None
    max_active_per_department_day: int | None = None
    noshow_threshold: int | None = None
    noshow_window_days: int | None = None
    block_days: int | None = None
    noshow_grace_minutes: int | None = None


class ServiceRequest(_Body):
    fee_fen: int = Field(ge=0, le=1_000_000)
    active: bool = True


class WaitlistRequest(_Body):
    schedule: str = ID
    day: date
    hospital: str | None = Field(None, max_length=64)
    patient: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
