"""Demo sign-in accounts for the demo region's staff and patients (see docs/demo.md)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine


async def create_demo_accounts(engine: AsyncEngine, data) -> dict:
    """Accounts for the demo's practitioners and some patients; returns counts by kind."""
    return {}
