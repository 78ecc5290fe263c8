"""Booking through FHIR: `$book`, `$cancel`, plain writes of Appointment, the CapabilityStatement."""

from __future__ import annotations

from tests.hospital.conftest import FHIR, book_parameters


async def _slot(client, slot_id: str) -> dict:
    return (await client.get(f"{FHIR}/Slot/{slot_id}")).json()


async def test_book_marks_slot_busy_and_returns_queue_number(client, hospital):
    slot = hospital.slots[0]
    found = (await client.get(f"{FHIR}/Slot", params={"schedule": f"Schedule/{hospital.schedule}",
                                                      "status": "free", "start": f"ge{slot['start']}"})).json()
    assert slot["id"] in [e["resource"]["id"] for e in found["entry"]]
    r = await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(slot["id"]))
    assert r.status_code == 201, r.text
    appt = r.json()
    assert appt["status"] == "booked"
    assert appt["start"] == slot["start"] and appt["end"] == slot["end"]
    queue = [i for i in appt["identifier"] if i["system"].endswith("/queue-number")]
    assert queue and queue[0]["value"] == "1"
    actors = {p["actor"]["reference"] for p in appt["participant"]}
    assert {"Patient/pat-zhang", f"PractitionerRole/{hospital.role}", "HealthcareService/hs-resp"} <= actors
    assert (await _slot(client, slot["id"]))["status"] == "busy"
    again = await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(slot["id"], "pat-wang"))
    assert again.status_code == 409
    assert again.json()["resourceType"] == "OperationOutcome"
    assert "号源已被预约" in again.json()["issue"][0]["diagnostics"]


async def test_cancel_operation_frees_the_slot(client, hospital):
    slot = hospital.slots[1]
    appt = (await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(slot["id"]))).json()
    r = await client.post(f"{FHIR}/Appointment/{appt['id']}/$cancel",
                          json={"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "有事"}]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["cancelationReason"]["text"] == "有事"
    assert (await _slot(client, slot["id"]))["status"] == "free"
    twice = await client.post(f"{FHIR}/Appointment/{appt['id']}/$cancel")
    assert twice.status_code == 409
    rebook = await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(slot["id"], "pat-wang"))
    assert rebook.status_code == 201
    queue = [i["value"] for i in rebook.json()["identifier"] if i["system"].endswith("/queue-number")]
    assert queue == ["2"]  # numbers of cancelled bookings are not handed out again


async def test_plain_post_on_a_busy_slot_is_refused(client, hospital):
    slot = hospital.slots[2]
    body = book_parameters(slot["id"], status="booked")["parameter"][0]["resource"]
    first = await client.post(f"{FHIR}/Appointment", json=body)
    assert first.status_code == 201, first.text
    assert (await _slot(client, slot["id"]))["status"] == "busy"
    second = await client.post(f"{FHIR}/Appointment", json={**body, "participant": [
        {"actor": {"reference": "Patient/pat-wang"}, "status": "accepted"}]})
    assert second.status_code == 409
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**body, "participant": [{"actor": {"reference": "Patient/pat-wang"}, "status": "accepted"}]},
         "request": {"method": "POST", "url": "Appointment"}}]}
    tx = await client.post(f"{FHIR}", json=bundle)
    assert tx.status_code == 409, tx.text
    found = (await client.get(f"{FHIR}/Appointment", params={"slot": f"Slot/{slot['id']}"})).json()
    assert len(found.get("entry", [])) == 1


async def test_plain_update_to_cancelled_frees_the_slot(client, hospital):
    slot = hospital.slots[3]
    appt = (await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(slot["id"]))).json()
    appt["status"] = "cancelled"
    r = await client.put(f"{FHIR}/Appointment/{appt['id']}", json=appt)
    assert r.status_code == 200, r.text
    assert (await _slot(client, slot["id"]))["status"] == "free"
    appt = r.json()
    appt["status"] = "booked"  # re-activating takes the slot again
    r = await client.put(f"{FHIR}/Appointment/{appt['id']}", json=appt)
    assert r.status_code == 200, r.text
    assert (await _slot(client, slot["id"]))["status"] == "busy"
    deleted = await client.delete(f"{FHIR}/Appointment/{appt['id']}")
    assert deleted.status_code == 200
    assert (await _slot(client, slot["id"]))["status"] == "free"


async def test_bad_input_gives_4xx_outcomes(client, hospital):
    cases = [
        ({"resourceType": "Parameters", "parameter": []}, 400),
        ({"resourceType": "Patient"}, 400),
        ({"resourceType": "Parameters", "parameter": [{"name": "appointment", "valueString": "x"}]}, 400),
        (book_parameters("no-such-slot"), 422),
        (book_parameters(hospital.slots[0]["id"], status="fulfilled"), 422),
    ]
    no_patient = book_parameters(hospital.slots[0]["id"])
    no_patient["parameter"][0]["resource"]["participant"] = [
        {"actor": {"reference": f"PractitionerRole/{hospital.role}"}, "status": "accepted"}]
    cases.append((no_patient, 422))
    wrong_type = book_parameters(hospital.slots[0]["id"])
    wrong_type["parameter"][0]["resource"]["slot"] = "Slot/x"
    cases.append((wrong_type, 422))
    for body, status in cases:
        r = await client.post(f"{FHIR}/Appointment/$book", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    assert (await _slot(client, hospital.slots[0]["id"]))["status"] == "free"


async def test_slot_in_the_past_cannot_be_booked(client, hospital):
    past = {"resourceType": "Slot", "id": "slot-past", "schedule": {"reference": f"Schedule/{hospital.schedule}"},
            "status": "free", "start": "2020-01-01T00:00:00Z", "end": "2020-01-01T00:30:00Z"}
    assert (await client.put(f"{FHIR}/Slot/slot-past", json=past)).status_code == 201
    r = await client.post(f"{FHIR}/Appointment/$book", json=book_parameters("slot-past"))
    assert r.status_code == 422
    assert "已过" in r.json()["issue"][0]["diagnostics"]


async def test_capability_statement_lists_book_and_cancel(client, hospital):
    cap = (await client.get(f"{FHIR}/metadata")).json()
    names = {op["name"] for op in cap["rest"][0]["operation"]}
    assert {"book", "cancel"} <= names


async def test_patient_cannot_cancel_anothers_appointment(client, hospital):
    slot = hospital.slots[4]
    appt = (await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(slot["id"], "pat-wang"))).json()
    r = await client.post(f"{FHIR}/Appointment/{appt['id']}/$cancel", headers=hospital.patient_headers("pat-zhang"))
    assert r.status_code == 404
    assert (await _slot(client, slot["id"]))["status"] == "busy"
    own = await client.post(f"{FHIR}/Appointment/$book", json=book_parameters(hospital.slots[5]["id"], "pat-zhang"),
                            headers=hospital.patient_headers("pat-zhang"))
    assert own.status_code == 201, own.text
    for_other = await client.post(f"{FHIR}/Appointment/$book",
                                  json=book_parameters(hospital.slots[6]["id"], "pat-wang"),
                                  headers=hospital.patient_headers("pat-zhang"))
    assert for_other.status_code in (403, 404)
    cancelled = await client.post(f"{FHIR}/Appointment/{own.json()['id']}/$cancel",
                                  headers=hospital.patient_headers("pat-zhang"))
    assert cancelled.status_code == 200, cancelled.text
