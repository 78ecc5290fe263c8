"""OAuth 2.0 / SMART App Launch: registered clients, authorisation codes, refresh tokens
and revoked token ids (migration 0006_oauth)."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
