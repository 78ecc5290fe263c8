"""Custom SearchParameter resources take effect per tenant; reindex applies them to old data;
the parser never fails with anything but a 400 (https://hl7.org/fhir/R4/searchparameter.html)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_helpers import put, q, sids

from yiyun.fhir import search as fhir_search
from yiyun.fhir.model import RequestContext
from yiyun.fhir.search import SearchError


@pytest.fixture
async def conn(sengine):
    async with sengine.connect() as c:
        async with c.begin():
            yield c


BIRTHPLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"


def sp(code, expr, typ="string", base=("Patient",), status="active"):
    return {"resourceType": "SearchParameter", "id": f"sp-{code}", "url": f"http://yiyun.test/SearchParameter/{code}",
            "name": code, "status": status, "code": code, "base": list(base), "type": typ, "expression": expr,
            "description": code}


async def test_custom_parameter_after_reindex(conn, ctx):
    pats = [
        {"resourceType": "Patient", "id": "a", "extension": [{"url": BIRTHPLACE, "valueAddress": {"city": "Hangzhou"}}],
         "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]}},
        {"resourceType": "Patient", "id": "b", "extension": [{"url": BIRTHPLACE, "valueAddress": {"city": "Beijing"}}]},
    ]
    await put(conn, ctx.tenant, pats)
    res = await fhir_search.search(conn, ctx, "Patient", q("birthplace=hang"))
    assert res.issues and len(res.matches) == 2  # unknown before the SearchParameter exists
    await put(conn, ctx.tenant, [
        sp("birthplace", f"Patient.extension('{BIRTHPLACE}').value.as(Address).city"),
        sp("marital", "Patient.maritalStatus", typ="token"),
        # not compilable: evaluated by fhirpathpy
        sp("given-count", "Patient.name.given.count()", typ="number"),
        sp("draft", "Patient.gender", typ="token", status="draft"),
    ])
    assert await sids(conn, ctx, "Patient", "birthplace=hang") == set()  # old rows: not yet reindexed
    assert await fhir_search.reindex(conn, ctx.tenant) >= 2
    assert await sids(conn, ctx, "Patient", "birthplace=hang") == {"a"}
    assert await sids(conn, ctx, "Patient", "marital=M") == {"a"}
    # new writes are indexed with the custom parameters at once
    await put(conn, ctx.tenant, [{"resourceType": "Patient", "id": "c", "name": [{"given": ["x", "y"]}],
                                  "extension": [{"url": BIRTHPLACE, "valueAddress": {"city": "Hangzhou"}}]}])
    assert await sids(conn, ctx, "Patient", "birthplace=hangzhou") == {"a", "c"}
    assert await sids(conn, ctx, "Patient", "given-count=2") == {"c"}
    with pytest.raises(SearchError):
        await fhir_search.search(conn, ctx, "Patient", q("draft=male"), strict=True)
    # another tenant does not see this tenant's parameters
    other = RequestContext(tenant=ctx.tenant + "-b", base_url=ctx.base_url)
    with pytest.raises(SearchError):
        await fhir_search.search(conn, other, "Patient", q("birthplace=hang"), strict=True)


async def test_reindex_counts_live_resources(conn, ctx):
    await put(conn, ctx.tenant, [{"resourceType": "Patient", "id": f"p{i}", "gender": "male"} for i in range(5)])
    assert await fhir_search.reindex(conn, ctx.tenant) == 5
    assert await sids(conn, ctx, "Patient", "gender=male") == {f"p{i}" for i in range(5)}


def test_known_params_for_capability_statement():
    ps = fhir_search.known_params("Observation")
    assert ps["code"].type == "token" and ps["code"].definition.startswith("http://hl7.org/fhir/SearchParameter/")
    assert ps["component-code-value-quantity"].type == "composite"
    assert "_id" in ps and "_lastUpdated" in ps and "_text" not in ps
    assert ps["patient"].documentation


_names = st.one_of(
    st.sampled_from(["name", "family", "birthdate", "gender", "_id", "_count", "_sort", "_include", "_revinclude",
                     "_has", "general-practitioner", "organization", "_summary", "_total", "_cursor", "_offset",
                     "_lastUpdated", "identifier", "_tag", "link", "telecom", "address-postalcode", "_type"]),
    st.text(min_size=0, max_size=20),
)
_mods = st.sampled_from(["", ":missing", ":exact", ":contains", ":not", ":text", ":Patient", ":identifier", ":below",
                         ":above", ":of-type", ":iterate", ".name", ".family", ":Organization.name", ":in", ":x.y.z"])
_values = st.one_of(
    st.sampled_from(["true", "false", "ge2020", "2020-02-30", "gt", "eq1e999", "1e-400", "x|y|z", "a$b", "\\", ",,",
                     "Patient/1", "http://x/y", "Patient:name", "*", "-", "ap2020-01-01T10:00:00+14:00", "9" * 30]),
    st.text(max_size=30),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=st.lists(st.tuples(st.tuples(_names, _mods), _values), max_size=4), strict=st.booleans(),
       system=st.booleans())
async def test_any_input_is_a_result_or_a_400(sengine, params, strict, system):
    ctx = RequestContext(tenant="fuzz", base_url="http://example.test/fhir")
    pairs = [(n + m, v) for (n, m), v in params]
    async with sengine.connect() as conn:
        try:
            await fhir_search.search(conn, ctx, None if system else "Patient", pairs, strict=strict)
        except SearchError as e:
            assert e.status == 400 and e.message
