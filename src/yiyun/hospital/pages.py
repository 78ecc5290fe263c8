"""Hospital pages: the patient's mobile site, the doctor's workstation, the administrator's pages."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
