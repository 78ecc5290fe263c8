"""Real-name verification of patients and registration of practitioners
(migration 0008_verification)."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
