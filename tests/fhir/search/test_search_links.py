"""Chaining, reverse chaining, _include/_revinclude, sorting, totals, access filter, tenants."""

from __future__ import annotations

import pytest
from search_helpers import ids, put, q, remove, sids

from yiyun.fhir import search as fhir_search
from yiyun.fhir.model import RequestContext
from yiyun.fhir.search import SearchError


@pytest.fixture
async def conn(sengine):
    async with sengine.connect() as c:
        async with c.begin():
            yield c


def data():
    return [
        {"resourceType": "Organization", "id": "org1", "name": "Acme Clinic"},
        {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Li", "given": ["Wei"]}]},
        {"resourceType": "Practitioner", "id": "dr2", "name": [{"family": "Wang"}]},
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Zhang", "given": ["San"]}], "birthDate": "1950-02-01",
         "gender": "male", "generalPractitioner": [{"reference": "Practitioner/dr1"}],
         "managingOrganization": {"reference": "Organization/org1"}},
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "Zhao"}], "birthDate": "1990-07-01",
         "gender": "female", "generalPractitioner": [{"reference": "Practitioner/dr2"}]},
        {"resourceType": "Patient", "id": "p3", "name": [{"family": "Zhou"}], "birthDate": "1970-01-01", "gender": "other"},
        {"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/p1"},
         "period": {"start": "2021-01-01T09:00:00Z", "end": "2021-01-01T10:00:00Z"}},
        {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
         "encounter": {"reference": "Encounter/e1"},
         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}},
        {"resourceType": "Observation", "id": "o2", "status": "final", "subject": {"reference": "Patient/p2"},
         "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}},
        {"resourceType": "AuditEvent", "id": "a1", "recorded": "2021-01-01T00:00:00Z",
         "type": {"code": "rest"}, "agent": [{"requestor": True, "who": {"reference": "Practitioner/dr1"}}],
         "source": {"observer": {"reference": "Organization/org1"}},
         "entity": [{"what": {"reference": "Observation/o1"}}]},
    ]


async def test_chains(conn, ctx):
    await put(conn, ctx.tenant, data())
    assert await sids(conn, ctx, "Observation", "subject:Patient.name=zhang") == {"o1"}
    assert await sids(conn, ctx, "Observation", "subject.name=zha") == {"o1", "o2"}
    assert await sids(conn, ctx, "Observation", "patient.birthdate=lt1960") == {"o1"}
    assert await sids(conn, ctx, "Observation", "patient.general-practitioner.name=wang") == {"o2"}
    assert await sids(conn, ctx, "Observation", "patient.general-practitioner:Practitioner.family=li") == {"o1"}
    assert await sids(conn, ctx, "Observation", "encounter.subject.organization.name=acme") == {"o1"}
    with pytest.raises(SearchError) as e:
        await fhir_search.search(conn, ctx, "Observation", q("code.name=x"))
    assert "code" in e.value.message


async def test_has(conn, ctx):
    await put(conn, ctx.tenant, data())
    assert await sids(conn, ctx, "Patient", "_has:Observation:patient:code=8867-4") == {"p1"}
    assert await sids(conn, ctx, "Patient", "_has:Observation:subject:code=2339-0,8867-4") == {"p1", "p2"}
    # nested: patients with an observation that an audit event recorded
    assert await sids(conn, ctx, "Patient", "_has:Observation:patient:_has:AuditEvent:entity:type=rest") == {"p1"}
    assert await sids(conn, ctx, "Practitioner", "_has:Patient:general-practitioner:gender=female") == {"dr2"}
    with pytest.raises(SearchError):
        await fhir_search.search(conn, ctx, "Patient", q("_has:Observation:code:status=final"))


async def test_include_revinclude_iterate(conn, ctx):
    await put(conn, ctx.tenant, data())
    res = await fhir_search.search(conn, ctx, "Observation", q("code=8867-4&_include=Observation:patient"))
    assert [m.res_id for m in res.matches] == ["o1"]
    assert {(i.res_type, i.res_id) for i in res.included} == {("Patient", "p1")}
    res = await fhir_search.search(
        conn, ctx, "Observation",
        q("code=8867-4&_include=Observation:patient&_include:iterate=Patient:general-practitioner"))
    assert {i.res_id for i in res.included} == {"p1", "dr1"}
    res = await fhir_search.search(conn, ctx, "Observation", q("_id=o1&_include=*"))
    assert {i.res_id for i in res.included} == {"p1", "e1"}
    res = await fhir_search.search(conn, ctx, "Observation", q("_id=o1&_include=Observation:subject:Group"))
    assert res.included == []
    res = await fhir_search.search(conn, ctx, "Patient", q("_id=p1&_revinclude=Observation:subject"))
    assert {i.res_id for i in res.included} == {"o1"}
    res = await fhir_search.search(
        conn, ctx, "Patient", q("_id=p1&_revinclude=Observation:subject&_revinclude:iterate=AuditEvent:entity"))
    assert {i.res_id for i in res.included} == {"o1", "a1"}
    # included resources are de-duplicated and never repeat a match
    res = await fhir_search.search(
        conn, ctx, "Patient", q("_id=p1,p2&_revinclude=Observation:subject&_revinclude=Observation:patient"))
    assert sorted(i.res_id for i in res.included) == ["o1", "o2"]
    for bad in ("_include=Observation", "_include=Nope:x", "_include=Observation:code", "_include:deep=Observation:patient"):
        with pytest.raises(SearchError):
            await fhir_search.search(conn, ctx, "Observation", q(bad))


async def test_sort_and_offset_paging(conn, ctx):
    await put(conn, ctx.tenant, data())
    assert await ids(conn, ctx, "Patient", "_sort=birthdate") == ["p1", "p3", "p2"]
    assert await ids(conn, ctx, "Patient", "_sort=-birthdate") == ["p2", "p3", "p1"]
    assert await ids(conn, ctx, "Patient", "_sort=family") == ["p1", "p2", "p3"]
    assert await ids(conn, ctx, "Patient", "_sort=-_id") == ["p3", "p2", "p1"]
    assert await ids(conn, ctx, "Patient", "_sort=gender,-birthdate") == ["p2", "p1", "p3"]
    assert (await ids(conn, ctx, "Patient", "_sort=-general-practitioner"))[:2] == ["p2", "p1"]
    page1 = await fhir_search.search(conn, ctx, "Patient", q("_sort=birthdate&_count=2"))
    assert [m.res_id for m in page1.matches] == ["p1", "p3"] and ("_offset", "2") in page1.next_params
    page2 = await fhir_search.search(conn, ctx, "Patient", page1.next_params)
    assert [m.res_id for m in page2.matches] == ["p2"] and page2.next_params is None
    assert page2.prev_params is not None
    assert (await ids(conn, ctx, "Patient", "_sort=_lastUpdated"))[0] == "p1"
    with pytest.raises(SearchError):
        await fhir_search.search(conn, ctx, "Patient", q("_sort=birthdate&_cursor=3"))


async def test_totals_and_summary(conn, ctx):
    await put(conn, ctx.tenant, data())
    res = await fhir_search.search(conn, ctx, "Patient", q("_summary=count"))
    assert res.total == 3 and res.matches == [] and res.summary == "count"
    res = await fhir_search.search(conn, ctx, "Patient", q("_count=0"))
    assert res.total == 3 and res.matches == []
    res = await fhir_search.search(conn, ctx, "Patient", q("_count=1&_total=accurate"))
    assert res.total == 3 and len(res.matches) == 1
    res = await fhir_search.search(conn, ctx, "Patient", q("_count=1"))
    assert res.total is None
    res = await fhir_search.search(conn, ctx, "Patient", q("_count=10&_total=none"))
    assert res.total is None
    res = await fhir_search.search(conn, ctx, "Patient", q("_count=10&_elements=name,gender&_summary=true"))
    assert res.total == 3 and res.elements == ["name", "gender"] and res.summary == "true"
    for bad in ("_summary=maybe", "_total=all", "_count=-1"):
        with pytest.raises(SearchError):
            await fhir_search.search(conn, ctx, "Patient", q(bad))


async def test_deleted_hook_and_tenant_isolation(conn, ctx):
    await put(conn, ctx.tenant, data())
    other = RequestContext(tenant=ctx.tenant + "-other", base_url=ctx.base_url)
    await put(conn, other.tenant, [{"resourceType": "Patient", "id": "p1", "name": [{"family": "Zhang"}]}])
    assert await sids(conn, ctx, "Patient", "family=zhang") == {"p1"}
    assert await sids(conn, other, "Patient", "") == {"p1"}
    await remove(conn, ctx.tenant, "Observation", "o2")
    assert await sids(conn, ctx, "Observation", "") == {"o1"}
    assert await sids(conn, ctx, "Patient", "_has:Observation:patient:status=final") == {"p1"}

    def only_p1(table, res_type):
        # an access filter: Patients other than p1 are invisible, everything else is allowed
        return (table.c.res_id == "p1") | (table.c.res_type != "Patient")

    assert await sids(conn, ctx, "Patient", "", where_hook=only_p1) == {"p1"}
    assert await sids(conn, ctx, "Observation", "subject.gender=female", where_hook=only_p1) == set()
    res = await fhir_search.search(conn, ctx, "Practitioner", q("_revinclude=Patient:general-practitioner"),
                                   where_hook=only_p1)
    assert {i.res_id for i in res.included} == {"p1"}


async def test_update_replaces_index_rows(conn, ctx):
    await put(conn, ctx.tenant, [{"resourceType": "Patient", "id": "x", "name": [{"family": "Before"}]}])
    await put(conn, ctx.tenant, [{"resourceType": "Patient", "id": "x", "name": [{"family": "After"}]}])
    assert await sids(conn, ctx, "Patient", "family=before") == set()
    assert await sids(conn, ctx, "Patient", "family=after") == {"x"}
