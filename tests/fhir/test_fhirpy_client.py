"""A FHIR client written by others (fhirpy) against a running yiyun server."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import auth_headers, running_server

SECRET = "fhirpy-test-signing-key-" + uuid.uuid4().hex


@pytest.fixture
def server(db_url, tmp_path, monkeypatch):
    from yiyun.core.settings import get_settings

    # the server and this test sign and verify tokens with the same key
    monkeypatch.setenv("YIYUN_SECRET_KEY", SECRET)
    get_settings.cache_clear()
    env = {**os.environ, "YIYUN_DATABASE_URL": db_url, "YIYUN_DATA_DIR": str(tmp_path), "YIYUN_LOG_LEVEL": "WARNING"}
    with running_server(env) as base:
        yield base


def test_fhirpy_drives_create_search_include_transaction_history(server):
    from fhirpy import SyncFHIRClient

    tenant = f"t-{uuid.uuid4().hex[:8]}"
    client = SyncFHIRClient(f"{server}/fhir/R4", extra_headers=auth_headers(tenant))
    org = client.resource("Organization", name="市第一人民医院")
    org.save()
    for n in range(7):
        client.resource(
            "Patient",
            name=[{"family": "王", "given": [f"病人{n}"]}],
            gender="female" if n % 2 else "male",
            managingOrganization={"reference": f"Organization/{org.id}"},
        ).save()

    patients = client.resources("Patient").search(family="王").limit(3)
    assert patients.count() == 7
    all_patients = patients.fetch_all()  # follows next links page by page
    assert len(all_patients) == 7 and len({p.id for p in all_patients}) == 7

    with_org = client.resources("Patient").search(gender="female").include("Patient", "organization").fetch_raw()
    modes = [e["search"]["mode"] for e in with_org.entry]
    assert modes.count("match") == 3 and modes.count("include") == 1

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:2f6b4f9e-8f0e-4e0c-9f7a-0c1d2e3f4a5b",
                "resource": {"resourceType": "Patient", "name": [{"family": "赵"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
                    "subject": {"reference": "urn:uuid:2f6b4f9e-8f0e-4e0c-9f7a-0c1d2e3f4a5b"},
                    "valueQuantity": {"value": 38.6, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    result = client.execute("", method="post", data=bundle)
    assert result["type"] == "transaction-response"
    fever = client.resources("Observation").search(code="http://loinc.org|8310-5", **{"value-quantity": "gt38"}).fetch()
    assert len(fever) == 1

    p = all_patients[0]
    p["active"] = True
    p.save()
    history = client.execute(f"Patient/{p.id}/_history", method="get")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
