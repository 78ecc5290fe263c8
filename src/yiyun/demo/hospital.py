"""Demo hospital services: online services, schedules and slots relative to today."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine


async def create_demo_services(engine: AsyncEngine, data) -> dict:
    """Schedules, slots and booking rules for the demo hospitals; returns counts."""
    return {}
