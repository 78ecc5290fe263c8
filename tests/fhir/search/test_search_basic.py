"""Core search behaviour: token, string, reference, date, paging (https://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

import pytest
from search_helpers import put, q, sids

from yiyun.fhir import search as fhir_search
from yiyun.fhir.search import SearchError


def patient(pid, family, given, birth, gender="female", **extra):
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": given}],
        "birthDate": birth,
        "gender": gender,
        **extra,
    }


def obs(oid, subject, code, value=None, date="2020-01-01T10:00:00Z", system="http://loinc.org", **extra):
    r = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code, "display": f"code {code}"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": date,
        **extra,
    }
    if value is not None:
        r["valueQuantity"] = {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    return r


@pytest.fixture
async def conn(sengine):
    async with sengine.connect() as c:
        async with c.begin():
            yield c


async def test_token_forms(conn, ctx):
    await put(conn, ctx.tenant, [
        obs("o1", "Patient/p1", "8867-4"),
        obs("o2", "Patient/p1", "8867-4", system="http://other"),
        obs("o3", "Patient/p1", "1234-5"),
        {"resourceType": "Observation", "id": "o4", "status": "final", "code": {"coding": [{"code": "8867-4"}]}},
    ])
    assert await sids(conn, ctx, "Observation", "code=8867-4") == {"o1", "o2", "o4"}
    assert await sids(conn, ctx, "Observation", "code=http://loinc.org|8867-4") == {"o1"}
    assert await sids(conn, ctx, "Observation", "code=|8867-4") == {"o4"}
    assert await sids(conn, ctx, "Observation", "code=http://other|") == {"o2"}
    assert await sids(conn, ctx, "Observation", "code=1234-5,http://other|8867-4") == {"o2", "o3"}
    assert await sids(conn, ctx, "Observation", "code:not=8867-4") == {"o3"}
    assert await sids(conn, ctx, "Observation", "code:text=CODE 12") == {"o3"}
    assert await sids(conn, ctx, "Observation", "status=final&code=1234-5") == {"o3"}
    assert await sids(conn, ctx, "Observation", "_id=o1,o3") == {"o1", "o3"}


async def test_string_forms(conn, ctx):
    await put(conn, ctx.tenant, [
        patient("a", "Chalmers", ["Peter", "James"], "1974-12-25"),
        patient("b", "Müller", ["Jürgen"], "1950-01-01"),
        patient("c", "张", ["伟"], "1988-05-05"),
        patient("d", "Chalmersson", ["Anna"], "2001-03-04"),
    ])
    assert await sids(conn, ctx, "Patient", "family=chal") == {"a", "d"}
    assert await sids(conn, ctx, "Patient", "family:exact=Chalmers") == {"a"}
    assert await sids(conn, ctx, "Patient", "family:exact=chalmers") == set()
    assert await sids(conn, ctx, "Patient", "name=muller") == {"b"}
    assert await sids(conn, ctx, "Patient", "name=JURG") == {"b"}
    assert await sids(conn, ctx, "Patient", "name=张") == {"c"}
    assert await sids(conn, ctx, "Patient", "name:contains=mers") == {"a", "d"}
    assert await sids(conn, ctx, "Patient", "name=peter james chal") == {"a"}
    assert await sids(conn, ctx, "Patient", "given=james&family=chalmers") == {"a"}


async def test_reference_forms(conn, ctx):
    await put(conn, ctx.tenant, [
        patient("p1", "One", ["A"], "1970"),
        patient("p2", "Two", ["B"], "1980"),
        obs("o1", "Patient/p1", "x"),
        obs("o2", "Patient/p2", "x"),
        obs("o3", "Group/p1", "x"),
        obs("o4", "http://elsewhere.org/fhir/Patient/p1", "x"),
        obs("o5", "http://example.test/fhir/R4/Patient/p2", "x"),
        {"resourceType": "Observation", "id": "o6", "status": "final", "code": {"text": "t"},
         "subject": {"identifier": {"system": "urn:mrn", "value": "123"}}},
    ])
    assert await sids(conn, ctx, "Observation", "subject=Patient/p1") == {"o1"}
    assert await sids(conn, ctx, "Observation", "subject=p1") == {"o1", "o3"}
    assert await sids(conn, ctx, "Observation", "subject:Patient=p1") == {"o1"}
    assert await sids(conn, ctx, "Observation", "patient=p1") == {"o1"}
    assert await sids(conn, ctx, "Observation", "subject=http://elsewhere.org/fhir/Patient/p1") == {"o4"}
    assert await sids(conn, ctx, "Observation", "subject=http://example.test/fhir/R4/Patient/p2") == {"o2", "o5"}
    assert await sids(conn, ctx, "Observation", "subject:identifier=urn:mrn|123") == {"o6"}
    assert await sids(conn, ctx, "Observation", "subject:missing=true") == set()
    assert await sids(conn, ctx, "Observation", "subject:missing=false") == {"o1", "o2", "o3", "o4", "o5", "o6"}


async def test_date_prefixes(conn, ctx):
    await put(conn, ctx.tenant, [
        patient("y1950", "A", ["a"], "1950"),
        patient("d1960", "B", ["b"], "1960-06-15"),
        patient("d1960b", "B", ["b"], "1960-12-31"),
        patient("d1970", "C", ["c"], "1970-01-01"),
        patient("none", "D", ["d"], None),
    ])
    assert await sids(conn, ctx, "Patient", "birthdate=1960") == {"d1960", "d1960b"}
    assert await sids(conn, ctx, "Patient", "birthdate=1960-06") == {"d1960"}
    assert await sids(conn, ctx, "Patient", "birthdate=lt1960") == {"y1950"}
    assert await sids(conn, ctx, "Patient", "birthdate=le1960") == {"y1950", "d1960", "d1960b"}
    assert await sids(conn, ctx, "Patient", "birthdate=gt1960") == {"d1970"}
    assert await sids(conn, ctx, "Patient", "birthdate=ge1960-12-31") == {"d1960b", "d1970"}
    assert await sids(conn, ctx, "Patient", "birthdate=ne1960") == {"y1950", "d1970"}
    assert await sids(conn, ctx, "Patient", "birthdate=sa1960") == {"d1970"}
    assert await sids(conn, ctx, "Patient", "birthdate=eb1960") == {"y1950"}
    assert await sids(conn, ctx, "Patient", "birthdate=ge1955&birthdate=lt1965") == {"d1960", "d1960b"}
    assert await sids(conn, ctx, "Patient", "birthdate:missing=true") == {"none"}
    # "1950" is the whole year: it is not contained in the single day 1950-01-01
    assert await sids(conn, ctx, "Patient", "birthdate=1950-01-01") == set()
    # ap: within 10% of the distance to now (about 6.5 years here)
    assert await sids(conn, ctx, "Patient", "birthdate=ap1960-06-10") == {"d1960", "d1960b"}


async def test_paging_is_keyset_and_stable(conn, ctx):
    await put(conn, ctx.tenant, [patient(f"p{i:02d}", "Same", ["x"], "1990") for i in range(7)])
    first = await fhir_search.search(conn, ctx, "Patient", q("family=same&_count=3"))
    assert [m.res_id for m in first.matches] == ["p00", "p01", "p02"]
    assert first.total is None and first.next_params is not None
    assert ("_cursor", str(first.matches[-1].rid)) in first.next_params
    # a resource created between page fetches appears once, after the pages already read
    await put(conn, ctx.tenant, [patient("new", "Same", ["y"], "1990")])
    second = await fhir_search.search(conn, ctx, "Patient", first.next_params)
    assert [m.res_id for m in second.matches] == ["p03", "p04", "p05"]
    third = await fhir_search.search(conn, ctx, "Patient", second.next_params)
    assert [m.res_id for m in third.matches] == ["p06", "new"]
    assert third.next_params is None


async def test_unknown_params_strict_and_lenient(conn, ctx):
    await put(conn, ctx.tenant, [patient("a", "X", ["y"], "2000")])
    res = await fhir_search.search(conn, ctx, "Patient", q("foo=bar&family=x"))
    assert [m.res_id for m in res.matches] == ["a"]
    assert ("foo", "bar") not in res.self_params and ("family", "x") in res.self_params
    assert res.issues and "foo" in res.issues[0].diagnostics
    with pytest.raises(SearchError) as e:
        await fhir_search.search(conn, ctx, "Patient", q("foo=bar"), strict=True)
    assert "foo" in e.value.message and e.value.status == 400
    for bad in ("birthdate=2020-13", "birthdate=xx2020", "family.name=x", "_count=abc",
                "general-practitioner:in=x", "_sort=nope"):
        with pytest.raises(SearchError):
            await fhir_search.search(conn, ctx, "Patient", q(bad))
