"""Sharing: break-glass grants and other non-FHIR sharing state (migration 0007_sharing)."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
