"""Security events raised by abuse signals (migration 0009_security_events)."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
