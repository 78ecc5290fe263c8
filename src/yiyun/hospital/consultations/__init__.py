"""Online consultations: text/image chat over WebSocket, video signalling, visit records."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
