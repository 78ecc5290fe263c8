"""Online-consultation tables for what is not clinical: read receipts, upload metadata
(migration 0011_consultation). Messages themselves are FHIR Communication resources."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
