"""Hospital tables for what is not clinical: booking rules, booking blocks, queue numbers
(migration 0010_hospital). Clinical facts are FHIR resources."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
