"""Liveness and readiness probes for load balancers and monitoring."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from yiyun.core.db import get_engine
from yiyun.core.migrations import current_revision, head_revision

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz() -> JSONResponse:
    """The database answers and its schema is at the newest migration."""
    try:
        async with get_engine().connect() as conn:
            await conn.execute(text("SELECT 1"))
            current = await conn.run_sync(current_revision)
    except Exception as exc:  # any failure to reach the database means not ready
        return JSONResponse({"status": "unavailable", "database": str(exc)[:200]}, status_code=503)
    head = head_revision()
    ok = current == head
    return JSONResponse(
        {"status": "ok" if ok else "migrations-pending", "revision": current, "head": head},
        status_code=200 if ok else 503,
    )
