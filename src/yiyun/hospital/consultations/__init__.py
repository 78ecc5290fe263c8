"""Online consultations: text/image chat over WebSocket, video signalling, visit records."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    from yiyun.hospital.consultations import api, bookings, pages

    bookings.register()
    app.include_router(api.router)
    app.include_router(api.socket_router)
    app.include_router(pages.router)
