"""Care relationships, patient Consent for regional sharing and research, break-glass."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
