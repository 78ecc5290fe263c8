"""Sign-in state: web sessions, TOTP second factors, recovery codes, one-time SMS codes,
the development SMS outbox and sign-in attempts (migration 0005_signin)."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
