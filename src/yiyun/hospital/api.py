"""Hospital JSON API and FHIR operations: departments, doctors, schedules, slots, booking."""

from __future__ import annotations

from fastapi import FastAPI

from yiyun.fhir.hooks import register_write_hook
from yiyun.hospital import booking, fhir_operations


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    register_write_hook("Appointment", booking.appointment_write_hook)
    fhir_operations.register()
