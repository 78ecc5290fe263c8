"""Conformance vectors for FHIRPath and FHIRPath Patch (FHIR/fhir-test-cases, r4/).

- `r4/patch/fhir-patch-tests.xml`: FHIRPath Patch, https://hl7.org/fhir/R4/fhirpatch.html
- `r4/fhirpath/tests-fhir-r4.xml`: FHIRPath, http://hl7.org/fhirpath/N1/, run through the
  evaluation the store uses for custom SearchParameters.
"""

from __future__ import annotations

FHIR = "/fhir/R4"


async def test_custom_parameter_evaluated_by_fhirpath_reaches_choice_elements(client):
    """A custom SearchParameter outside the compiled subset is evaluated by fhirpathpy, which
    needs the R4 model to read `component.value` (valueQuantity)."""
    sp = {
        "resourceType": "SearchParameter", "url": "http://yiyun.test/SearchParameter/systolic", "name": "systolic",
        "status": "active", "description": "systolic blood pressure", "code": "systolic", "base": ["Observation"],
        "type": "quantity", "expression": "Observation.component.where(code.coding.code = '8480-6').value",
    }
    assert (await client.post(f"{FHIR}/SearchParameter", json=sp)).status_code == 201
    bp = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 132, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 85, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        ],
    }
    r = await client.post(f"{FHIR}/Observation", json=bp)
    assert r.status_code == 201, r.text
    oid = r.json()["id"]

    async def ids(query: str) -> set[str]:
        got = await client.get(f"{FHIR}/Observation?{query}")
        assert got.status_code == 200, got.text
        return {e["resource"]["id"] for e in got.json().get("entry", [])}

    assert await ids("systolic=132") == {oid}
    assert await ids("systolic=gt130") == {oid}
    assert await ids("systolic=85") == set()
