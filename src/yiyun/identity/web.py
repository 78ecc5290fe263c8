"""Sign-in and account pages: staff password + TOTP, patient SMS codes, sessions, CSRF,
the development SMS outbox."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
