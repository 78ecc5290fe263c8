"""OAuth 2.0 / OpenID Connect provider for SMART App Launch v2 apps and backend services."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
