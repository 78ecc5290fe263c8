"""An update rewrites only the index rows of the parameters that changed, and every search
still sees the current version: values changed, added, removed; and a tenant with custom
SearchParameters (whose rows are always rewritten whole)."""

from __future__ import annotations

from sqlalchemy import func, select

from yiyun.core.db import unit_of_work
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.fhir.search.tables import INDEX_TABLES


async def _ids(repo, res_type, params) -> set[str]:
    return {m.res_id for m in (await repo.search(res_type, params)).matches}


async def _index_rows(conn, rid: int) -> int:
    total = 0
    for table in INDEX_TABLES:
        total += (await conn.execute(select(func.count()).select_from(table).where(table.c.rid == rid))).scalar()
    return total


async def test_update_rewrites_changed_parameters(engine, tenant):
    ctx = RequestContext(tenant=tenant)
    slot = {"resourceType": "Slot", "id": "s1", "status": "free", "schedule": {"reference": "Schedule/a"},
            "start": "2030-01-02T08:00:00+08:00", "end": "2030-01-02T08:05:00+08:00",
            "serviceType": [{"coding": [{"system": "http://example.org/st", "code": "clinic"}]}]}
    async with unit_of_work(engine) as conn:
        repo = FhirRepository(conn, ctx)
        stored = (await repo.update("Slot", "s1", slot)).stored
        rows_before = await _index_rows(conn, stored.rid)
    async with unit_of_work(engine) as conn:
        repo = FhirRepository(conn, ctx)
        await repo.update("Slot", "s1", {**slot, "status": "busy"})
        assert await _index_rows(conn, stored.rid) == rows_before
        assert await _ids(repo, "Slot", [("status", "busy")]) == {"s1"}
        assert await _ids(repo, "Slot", [("status", "free")]) == set()
        assert await _ids(repo, "Slot", [("schedule", "Schedule/a"), ("service-type", "clinic")]) == {"s1"}
    # a reference changed, a token removed, a date moved
    moved = {**slot, "status": "busy", "schedule": {"reference": "Schedule/b"},
             "start": "2030-01-03T09:00:00+08:00", "end": "2030-01-03T09:05:00+08:00"}
    moved.pop("serviceType")
    async with unit_of_work(engine) as conn:
        repo = FhirRepository(conn, ctx)
        await repo.update("Slot", "s1", moved)
        assert await _ids(repo, "Slot", [("schedule", "Schedule/a")]) == set()
        assert await _ids(repo, "Slot", [("schedule", "Schedule/b")]) == {"s1"}
        assert await _ids(repo, "Slot", [("service-type", "clinic")]) == set()
        assert await _ids(repo, "Slot", [("start", "2030-01-02")]) == set()
        assert await _ids(repo, "Slot", [("start", "2030-01-03")]) == {"s1"}
    # a value added back, after a delete and re-create (the delete dropped every row)
    async with unit_of_work(engine) as conn:
        repo = FhirRepository(conn, ctx)
        await repo.delete("Slot", "s1")
        assert await _index_rows(conn, stored.rid) == 0
        await repo.update("Slot", "s1", slot)
        assert await _index_rows(conn, stored.rid) == rows_before
        assert await _ids(repo, "Slot", [("status", "free"), ("schedule", "Schedule/a")]) == {"s1"}


async def test_custom_parameter_indexed_on_update(engine, tenant):
    """A resource stored before a custom SearchParameter existed is indexed for it by its
    next update, even though the update leaves that element as it was."""
    ctx = RequestContext(tenant=tenant)
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female",
               "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                             "code": "M"}]}}
    async with unit_of_work(engine) as conn:
        repo = FhirRepository(conn, ctx)
        await repo.update("Patient", "p1", patient)
        await repo.update("SearchParameter", "sp-marital", {
            "resourceType": "SearchParameter", "id": "sp-marital", "url": "http://example.org/sp/marital",
            "name": "marital", "status": "active", "code": "marital", "base": ["Patient"], "type": "token",
            "expression": "Patient.maritalStatus", "description": "marital status"})
        # the same transaction already sees the new parameter
        await repo.update("Patient", "p1", {**patient, "gender": "other"})
        assert await _ids(repo, "Patient", [("marital", "M")]) == {"p1"}
    async with unit_of_work(engine) as conn:
        repo = FhirRepository(conn, ctx)
        assert await _ids(repo, "Patient", [("marital", "M"), ("gender", "other")]) == {"p1"}
        assert await _ids(repo, "Patient", [("gender", "female")]) == set()
