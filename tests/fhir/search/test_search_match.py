"""A search query used as a rule (`yiyun.fhir.search.match`): matching one resource in
Python agrees with the search engine's SQL, for every supported parameter type."""

from __future__ import annotations

import pytest
from search_helpers import put, sids
from sqlalchemy import select

from yiyun.fhir.search.match import QueryNotSupported, parse_query
from yiyun.fhir.tables import resource as resource_table

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture
async def conn(sengine):
    async with sengine.connect() as c:
        async with c.begin():
            yield c


def obs(oid, category, code, subject, when):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": subject}, "effectiveDateTime": when}


def corpus(base_url: str) -> list[dict]:
    return [
        obs("hr", "vital-signs", "8867-4", "Patient/p1", "2024-05-01T08:00:00Z"),
        obs("bp", "vital-signs", "85354-9", "Patient/p2", "2019-03-01"),
        obs("glu", "laboratory", "2339-0", "Patient/p1", "2024-06-15T10:30:00+08:00"),
        obs("abs", "laboratory", "2345-7", f"{base_url}/Patient/p2", "2024-06"),
        {"resourceType": "Observation", "id": "bare", "status": "preliminary", "code": {"text": "note"}},
        {"resourceType": "Observation", "id": "nocat", "status": "final",
         "category": [{"coding": [{"code": "vital-signs"}]}], "code": {"text": "x"},
         "subject": {"reference": "Group/g1"}},
    ]


QUERIES = [
    f"category={CATEGORY}|vital-signs", "category=vital-signs", "category=|vital-signs", f"category={CATEGORY}|",
    "category=laboratory,vital-signs", "code=http://loinc.org|2339-0", "status=final&category=vital-signs",
    "subject=Patient/p1", "subject=p2", "subject:Patient=p2", "subject:Group=g1", "patient=p1",
    "subject={base}/Patient/p2", "date=ge2024-01-01", "date=lt2020", "date=2024-06", "date=sa2024-06-01",
    "date=eb2024-06-01&category=laboratory", "date=ne2024-05-01T08:00:00Z", "date=ap2024-05-02",
]


async def test_matching_one_resource_agrees_with_the_search(conn, ctx):
    resources = corpus(ctx.base_url)
    await put(conn, ctx.tenant, [dict(r) for r in resources])
    for text in QUERIES:
        text = text.format(base=ctx.base_url)
        query = parse_query("Observation", text)
        matched = {r["id"] for r in resources if query.matches(r, ctx.base_url)}
        assert matched == await sids(conn, ctx, "Observation", text), text
        rows = await conn.execute(select(resource_table.c.res_id).where(
            resource_table.c.tenant == ctx.tenant, resource_table.c.res_type == "Observation",
            query.condition(resource_table, ctx.tenant, ctx.base_url)))
        assert {r.res_id for r in rows} == matched, text


async def test_string_and_uri_parameters_agree_with_the_search(conn, ctx):
    people = [
        {"resourceType": "Patient", "id": "zs", "name": [{"family": "张", "given": ["三"]}]},
        {"resourceType": "Patient", "id": "ja", "name": [{"family": "Jöhnson", "given": ["Ann"]}]},
        {"resourceType": "Patient", "id": "jo", "name": [{"family": "Jones"}]},
    ]
    forms = [
        {"resourceType": "Questionnaire", "id": "phq", "status": "active", "url": "http://yiyun.example/q/phq-9"},
        {"resourceType": "Questionnaire", "id": "gad", "status": "active", "url": "http://other.example/q/gad-7"},
        {"resourceType": "Questionnaire", "id": "top", "status": "active", "url": "http://yiyun.example/q"},
    ]
    await put(conn, ctx.tenant, [dict(r) for r in people + forms])
    cases = [("Patient", people, t) for t in ("family=张", "name=jo", "family=johnson", "family:exact=Jones",
                                               "family:exact=jones", "name:contains=hns", "given=ann&family=j")]
    cases += [("Questionnaire", forms, t) for t in ("url=http://yiyun.example/q", "url:below=http://yiyun.example/q",
                                                     "url:above=http://yiyun.example/q/phq-9/v2")]
    for res_type, resources, text in cases:
        matched = {r["id"] for r in resources if parse_query(res_type, text).matches(r, ctx.base_url)}
        assert matched == await sids(conn, ctx, res_type, text), text


@pytest.mark.parametrize("text", [
    "", "no-such-param=1", "code:not=2339-0", "code:text=glucose", "subject:identifier=x|1", "subject.name=张",
    "_has:Observation:subject:code=1", "_id=hr", "_lastUpdated=gt2020", "value-quantity=70", "date=yesterday",
    "category=a|b|c", "category=", "date:missing=true", "combo-code-value-quantity=8480-6$gt140", "subject:Nothing=1",
])
def test_queries_a_scope_cannot_apply_are_refused(text):
    with pytest.raises(QueryNotSupported):
        parse_query("Observation", text)


def test_a_resource_of_another_type_never_matches():
    query = parse_query("Observation", "status=final")
    assert not query.matches({"resourceType": "Condition", "id": "c"}, "http://x/fhir")
    assert not query.matches(None, "http://x/fhir")
