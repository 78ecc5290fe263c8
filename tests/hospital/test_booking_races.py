"""Races: many patients for the last slot, and queue numbers under concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from tests.hospital.conftest import FHIR, book_parameters, build_hospital

RACERS = 30


async def _active_appointments(client, slot_id: str) -> list[dict]:
    found = (await client.get(f"{FHIR}/Appointment", params={"slot": f"Slot/{slot_id}", "_count": 100})).json()
    return [e["resource"] for e in found.get("entry", []) if e["resource"]["status"] == "booked"]


async def test_thirty_book_operations_for_one_slot_give_exactly_one_booking(client, hospital):
    slot = hospital.slots[0]
    results = await asyncio.gather(*[
        client.post(f"{FHIR}/Appointment/$book", json=book_parameters(slot["id"], "pat-wang" if i % 2 else "pat-zhang"))
        for i in range(RACERS)])
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 1, codes
    assert codes.count(409) == RACERS - 1, codes
    assert len(await _active_appointments(client, slot["id"])) == 1


async def test_plain_creates_racing_for_one_slot_give_exactly_one_booking(client, hospital):
    slot = hospital.slots[1]
    body = book_parameters(slot["id"], status="booked")["parameter"][0]["resource"]
    results = await asyncio.gather(*[client.post(f"{FHIR}/Appointment", json=body) for _ in range(RACERS)])
    codes = [r.status_code for r in results]
    assert codes.count(201) == 1 and codes.count(409) == RACERS - 1, codes
    assert len(await _active_appointments(client, slot["id"])) == 1


async def test_json_api_race_for_one_slot(client, hospital):
    slot = hospital.slots[2]
    results = await asyncio.gather(*[
        client.post("/api/hospital/appointments", json={"hospital": hospital.tenant, "slot": slot["id"],
                                                        "patient": "pat-wang"}) for _ in range(RACERS)])
    codes = [r.status_code for r in results]
    assert codes.count(201) == 1 and codes.count(409) == RACERS - 1, codes
    assert len(await _active_appointments(client, slot["id"])) == 1


async def test_queue_numbers_are_unique_and_sequential_under_concurrency(client, repo_factory, tenant, engine):
    from yiyun.fhir.hooks import register_write_hook
    from yiyun.hospital.booking import appointment_write_hook

    register_write_hook("Appointment", appointment_write_hook)
    h = await build_hospital(repo_factory, tenant, days=1, slot_minutes=5)
    slots = h.slots[:RACERS]
    assert len(slots) == RACERS
    results = await asyncio.gather(*[
        client.post(f"{FHIR}/Appointment/$book", json=book_parameters(s["id"], "pat-wang")) for s in slots])
    assert all(r.status_code == 201 for r in results), [r.text for r in results if r.status_code != 201][:2]
    numbers = sorted(int(i["value"]) for r in results for i in r.json()["identifier"]
                     if i["system"].endswith("/queue-number"))
    assert numbers == list(range(1, RACERS + 1))
