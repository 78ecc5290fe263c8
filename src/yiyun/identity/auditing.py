"""The audit trail for auditors and patients (AuditEvent, audit page, who saw my record)
and security events from abuse signals."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
