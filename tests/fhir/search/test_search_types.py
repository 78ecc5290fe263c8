"""Number, quantity, uri, composite and common parameters; :missing on every type; escaping."""

from __future__ import annotations

import pytest
from search_helpers import put, q, sids

from yiyun.fhir import search as fhir_search
from yiyun.fhir.search import SearchError


@pytest.fixture
async def conn(sengine):
    async with sengine.connect() as c:
        async with c.begin():
            yield c


def bp(oid, sys_, dia, subject="Patient/p1", when="2021-05-01T08:00:00+08:00"):
    """A blood-pressure panel (LOINC 85354-9) with systolic 8480-6 and diastolic 8462-4 components."""
    def comp(code, v):
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": subject}, "effectiveDateTime": when,
            "component": [comp("8480-6", sys_), comp("8462-4", dia)]}


def weight(oid, v, unit="kg", code="kg"):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": code}}


async def test_quantity(conn, ctx):
    await put(conn, ctx.tenant, [weight("w1", 70.2), weight("w2", 80), weight("w3", 70, unit="pound", code="[lb_av]"),
                                 {"resourceType": "Observation", "id": "none", "status": "final", "code": {"text": "x"}}])
    # the precision of the search value sets the range: 70 = [69.5, 70.5), 70.0 = [69.95, 70.05)
    assert await sids(conn, ctx, "Observation", "value-quantity=70") == {"w1", "w3"}
    assert await sids(conn, ctx, "Observation", "value-quantity=70.0") == {"w3"}
    assert await sids(conn, ctx, "Observation", "value-quantity=70.2") == {"w1"}
    assert await sids(conn, ctx, "Observation", "value-quantity=7e1") == {"w1", "w3"}  # 7e1 = [65, 75)
    assert await sids(conn, ctx, "Observation", "value-quantity=gt70|http://unitsofmeasure.org|kg") == {"w1", "w2"}
    assert await sids(conn, ctx, "Observation", "value-quantity=le70.2||kg") == {"w1"}
    assert await sids(conn, ctx, "Observation", "value-quantity=70||pound") == {"w3"}
    assert await sids(conn, ctx, "Observation", "value-quantity=lt100|http://unitsofmeasure.org|[lb_av]") == {"w3"}
    assert await sids(conn, ctx, "Observation", "value-quantity=ap79") == {"w2"}
    assert await sids(conn, ctx, "Observation", "value-quantity=ne80") == {"w1", "w3"}
    assert await sids(conn, ctx, "Observation", "value-quantity:missing=true") == {"none"}


async def test_composite_same_component(conn, ctx):
    await put(conn, ctx.tenant, [bp("high", 150, 95), bp("normal", 118, 76), bp("mixed", 95, 140)])
    assert await sids(conn, ctx, "Observation", "component-code-value-quantity=http://loinc.org|8480-6$gt140") == {"high"}
    # 140 belongs to the diastolic component of "mixed": the systolic test must not see it
    assert await sids(conn, ctx, "Observation", "component-code-value-quantity=8480-6$ge140") == {"high"}
    assert await sids(conn, ctx, "Observation", "component-code-value-quantity=8462-4$gt100") == {"mixed"}
    assert await sids(conn, ctx, "Observation",
                      "combo-code-value-quantity=8480-6$lt120,8462-4$gt130") == {"normal", "mixed"}
    with pytest.raises(SearchError):
        await fhir_search.search(conn, ctx, "Observation", q("component-code-value-quantity=8480-6"))


async def test_code_value_quantity_and_concept(conn, ctx):
    await put(conn, ctx.tenant, [
        weight("w1", 70), weight("w2", 90),
        {"resourceType": "Observation", "id": "c1", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "883-9"}]},
         "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "112144000"}]}},
    ])
    assert await sids(conn, ctx, "Observation", "code-value-quantity=http://loinc.org|29463-7$gt80") == {"w2"}
    assert await sids(conn, ctx, "Observation", "code-value-concept=883-9$http://snomed.info/sct|112144000") == {"c1"}
    assert await sids(conn, ctx, "Observation", "value-concept=112144000") == {"c1"}


async def test_number_and_uri(conn, ctx):
    await put(conn, ctx.tenant, [
        {"resourceType": "RiskAssessment", "id": "r1", "status": "final", "subject": {"reference": "Patient/p"},
         "prediction": [{"probabilityDecimal": 0.02}]},
        {"resourceType": "RiskAssessment", "id": "r2", "status": "final", "subject": {"reference": "Patient/p"},
         "prediction": [{"probabilityDecimal": 0.8}]},
        {"resourceType": "ValueSet", "id": "v1", "status": "active", "url": "http://acme.org/fhir/ValueSet/123"},
        {"resourceType": "ValueSet", "id": "v2", "status": "active", "url": "http://acme.org/fhir/ValueSet/123/_history/5"},
        {"resourceType": "ValueSet", "id": "v3", "status": "active", "url": "http://other.org/ValueSet/x"},
    ])
    assert await sids(conn, ctx, "RiskAssessment", "probability=0.8") == {"r2"}
    assert await sids(conn, ctx, "RiskAssessment", "probability=lt0.5") == {"r1"}
    assert await sids(conn, ctx, "RiskAssessment", "probability=0.02") == {"r1"}
    assert await sids(conn, ctx, "RiskAssessment", "probability=ge0.02") == {"r1", "r2"}
    with pytest.raises(SearchError):
        await fhir_search.search(conn, ctx, "RiskAssessment", q("probability=zz"))
    assert await sids(conn, ctx, "ValueSet", "url=http://acme.org/fhir/ValueSet/123") == {"v1"}
    assert await sids(conn, ctx, "ValueSet", "url:below=http://acme.org/fhir/") == {"v1", "v2"}
    assert await sids(conn, ctx, "ValueSet", "url:above=http://acme.org/fhir/ValueSet/123/_history/5/x") == {"v1", "v2"}


async def test_common_params_and_escaping(conn, ctx):
    await put(conn, ctx.tenant, [
        {"resourceType": "Patient", "id": "a", "meta": {
            "tag": [{"system": "urn:t", "code": "vip"}], "profile": ["http://x.org/StructureDefinition/p"],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]},
         "identifier": [{"system": "urn:ids", "value": "a,b$c|d"}], "name": [{"family": "Comma, Jr"}]},
        {"resourceType": "Patient", "id": "b", "identifier": [{"system": "urn:ids", "value": "a"}]},
        {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
         "meta": {"tag": [{"system": "urn:t", "code": "vip"}]}},
    ])
    assert await sids(conn, ctx, "Patient", "_tag=urn:t|vip") == {"a"}
    assert await sids(conn, ctx, "Patient", "_profile=http://x.org/StructureDefinition/p") == {"a"}
    assert await sids(conn, ctx, "Patient", "_security=R") == {"a"}
    assert await sids(conn, ctx, "Patient", "_tag:missing=true") == {"b"}
    assert await sids(conn, ctx, "Patient", r"identifier=urn:ids|a\,b\$c\|d") == {"a"}
    assert await sids(conn, ctx, "Patient", r"identifier=urn:ids|a,urn:ids|zz") == {"b"}
    assert await sids(conn, ctx, "Patient", r"family:exact=Comma\, Jr") == {"a"}
    assert await sids(conn, ctx, None, "_tag=vip") == {"a", "o"}
    assert await sids(conn, ctx, None, "_tag=vip&_type=Observation") == {"o"}
    assert await sids(conn, ctx, "Patient", "_lastUpdated=gt2000-01-01") == {"a", "b"}
    assert await sids(conn, ctx, "Patient", "_lastUpdated=lt2000-01-01") == set()


async def test_missing_each_type(conn, ctx):
    await put(conn, ctx.tenant, [
        {"resourceType": "Patient", "id": "full", "name": [{"family": "F"}], "gender": "male", "birthDate": "2000",
         "generalPractitioner": [{"reference": "Practitioner/x"}]},
        {"resourceType": "Patient", "id": "empty"},
        {"resourceType": "ValueSet", "id": "v", "status": "active", "url": "http://u"},
        {"resourceType": "ValueSet", "id": "nov", "status": "active"},
    ])
    for p in ("family", "gender", "birthdate", "general-practitioner", "_id"):
        want_true = set() if p == "_id" else {"empty"}
        assert await sids(conn, ctx, "Patient", f"{p}:missing=true") == want_true, p
        assert await sids(conn, ctx, "Patient", f"{p}:missing=false") == {"full", "empty"} - want_true, p
    assert await sids(conn, ctx, "ValueSet", "url:missing=true") == {"nov"}


async def test_identifier_of_type(conn, ctx):
    await put(conn, ctx.tenant, [
        {"resourceType": "Patient", "id": "a", "identifier": [{"type": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "system": "urn:h", "value": "42"}]},
        {"resourceType": "Patient", "id": "b", "identifier": [{"system": "urn:h", "value": "42"}]},
    ])
    assert await sids(conn, ctx, "Patient",
                      "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|42") == {"a"}
    assert await sids(conn, ctx, "Patient", "identifier=42") == {"a", "b"}


async def test_period_and_timing_dates(conn, ctx):
    await put(conn, ctx.tenant, [
        {"resourceType": "Encounter", "id": "open", "status": "in-progress", "class": {"code": "AMB"},
         "period": {"start": "2021-03-01T08:00:00+08:00"}},
        {"resourceType": "Encounter", "id": "closed", "status": "finished", "class": {"code": "AMB"},
         "period": {"start": "2021-01-10T09:00:00Z", "end": "2021-01-10T10:00:00Z"}},
        {"resourceType": "MedicationRequest", "id": "mr", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/p"},
         "dosageInstruction": [{"timing": {"event": ["2021-05-01T08:00:00Z", "2021-05-03T08:00:00Z"]}}]},
    ])
    assert await sids(conn, ctx, "Encounter", "date=2021-01-10") == {"closed"}
    # an open period runs on: it is after any later date and never contained in one day
    assert await sids(conn, ctx, "Encounter", "date=gt2030-01-01") == {"open"}
    assert await sids(conn, ctx, "Encounter", "date=2021-03-01") == set()
    # 2021-03-01T08:00:00+08:00 is 2021-03-01T00:00:00Z: it starts after 2021-02-28 ends
    assert await sids(conn, ctx, "Encounter", "date=sa2021-02-28") == {"open"}
    assert await sids(conn, ctx, "Encounter", "date=eb2021-02-01") == {"closed"}
    assert await sids(conn, ctx, "MedicationRequest", "date=2021-05-03") == {"mr"}
    assert await sids(conn, ctx, "MedicationRequest", "date=2021-05-02") == set()
