"""SMART granular scopes (`patient/Observation.rs?category=…|vital-signs`): a scope with a
query reaches only the resources that query finds, in reads, searches, includes, history
and writes, within the compartment its context allows; on SQLite and PostgreSQL.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#finer-grained-resource-constraints-using-search-parameters
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import auth_headers
from tests.identity.conftest import make

FHIR = "/fhir/R4"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
VITALS = f"category={CATEGORY}|vital-signs"
LABS = f"category={CATEGORY}|laboratory"


def _patient(family: str) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["三"]}], "gender": "male"}


def _obs(pid: str, category: str, code: str = "8867-4", when: str = "2024-05-01T08:00:00Z") -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": 70, "unit": "/min"}}


@pytest.fixture
async def ward(c, tenant):
    """Zhang and Wang, each with a vital sign (heart rate) and a laboratory result (glucose)."""
    zhang = await make(c, tenant, _patient("张"))
    wang = await make(c, tenant, _patient("王"))
    return {
        "zhang": zhang["id"], "wang": wang["id"],
        "zhang_vital": (await make(c, tenant, _obs(zhang["id"], "vital-signs")))["id"],
        "zhang_lab": (await make(c, tenant, _obs(zhang["id"], "laboratory", "2345-7")))["id"],
        "wang_vital": (await make(c, tenant, _obs(wang["id"], "vital-signs")))["id"],
        "wang_lab": (await make(c, tenant, _obs(wang["id"], "laboratory", "2345-7")))["id"],
    }


def ids(bundle: dict) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []))


async def readable(c, headers, res_type: str, candidates: list[str]) -> list[str]:
    out = []
    for rid in candidates:
        r = await c.get(f"{FHIR}/{res_type}/{rid}", headers=headers)
        assert r.status_code in (200, 404), r.text
        if r.status_code == 200:
            out.append(rid)
    return sorted(out)


async def found(c, headers, res_type: str, **params) -> list[str]:
    r = await c.get(f"{FHIR}/{res_type}", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return ids(r.json())


def observations(w: dict) -> list[str]:
    return [w["zhang_vital"], w["zhang_lab"], w["wang_vital"], w["wang_lab"]]


# ------------------------------------------------------------------ visibility
async def test_a_granular_patient_scope_sees_its_own_vital_signs_only(c, tenant, ward):
    w = ward
    h = auth_headers(tenant, f"patient/Observation.rs?{VITALS} patient/Patient.rs", patient=w["zhang"])
    assert await readable(c, h, "Observation", observations(w)) == [w["zhang_vital"]]
    assert await found(c, h, "Observation") == [w["zhang_vital"]]
    assert await found(c, h, "Observation", category="laboratory") == []
    assert await found(c, h, "Observation", subject=f"Patient/{w['wang']}") == []
    assert (await c.get(f"{FHIR}/Observation/{w['zhang_lab']}/_history/1", headers=h)).status_code == 404

    # includes and reverse includes apply the same rule
    inc = await found(c, h, "Observation", _include="Observation:subject")
    assert inc == sorted([w["zhang_vital"], w["zhang"]])
    rev = await found(c, h, "Patient", _revinclude="Observation:subject")
    assert rev == sorted([w["zhang_vital"], w["zhang"]])
    has = await found(c, h, "Patient", **{"_has:Observation:subject:code": "2345-7"})
    assert has == []  # the laboratory result is not there to be found through _has either

    # history: of the instance, of the type, of the whole system
    assert (await c.get(f"{FHIR}/Observation/{w['zhang_lab']}/_history", headers=h)).status_code == 404
    own = await c.get(f"{FHIR}/Observation/{w['zhang_vital']}/_history", headers=h)
    assert own.status_code == 200 and ids(own.json()) == [w["zhang_vital"]]
    assert ids((await c.get(f"{FHIR}/Observation/_history", headers=h)).json()) == [w["zhang_vital"]]
    everything = (await c.get(f"{FHIR}/_history", headers=h)).json()
    assert ids(everything) == sorted([w["zhang_vital"], w["zhang"]])
    across = (await c.get(FHIR, params={"_type": "Observation,Patient"}, headers=h)).json()
    assert ids(across) == sorted([w["zhang_vital"], w["zhang"]])


async def test_a_granular_user_scope_keeps_to_the_doctors_patients(c, tenant, ward):
    w = ward
    li = await make(c, tenant, {"resourceType": "Practitioner", "name": [{"family": "李"}]})
    await make(c, tenant, {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
                           "subject": {"reference": f"Patient/{w['zhang']}"},
                           "participant": [{"individual": {"reference": f"Practitioner/{li['id']}"}}]})
    h = auth_headers(tenant, f"user/Observation.rs?{VITALS} user/Patient.rs", roles=("doctor",),
                     subject="staff:li", fhir_user=f"Practitioner/{li['id']}")
    assert await readable(c, h, "Observation", observations(w)) == [w["zhang_vital"]]
    assert await found(c, h, "Observation") == [w["zhang_vital"]]
    rev = await found(c, h, "Patient", _revinclude="Observation:subject")
    assert rev == sorted([w["zhang"], w["zhang_vital"]])


async def test_two_granular_scopes_combine_as_a_union(c, tenant, ward):
    w = ward
    glucose = await make(c, tenant, _obs(w["zhang"], "laboratory", "2339-0"))
    scopes = f"patient/Observation.rs?{VITALS} patient/Observation.rs?code=http://loinc.org|2339-0"
    h = auth_headers(tenant, scopes, patient=w["zhang"])
    candidates = [*observations(w), glucose["id"]]
    assert await readable(c, h, "Observation", candidates) == sorted([w["zhang_vital"], glucose["id"]])
    assert await found(c, h, "Observation") == sorted([w["zhang_vital"], glucose["id"]])


async def test_an_unqualified_scope_makes_the_granular_one_irrelevant(c, tenant, ward):
    w = ward
    h = auth_headers(tenant, f"patient/Observation.rs patient/Observation.rs?{VITALS}", patient=w["zhang"])
    mine = sorted([w["zhang_vital"], w["zhang_lab"]])
    assert await readable(c, h, "Observation", observations(w)) == mine
    assert await found(c, h, "Observation") == mine


async def test_granular_and_unqualified_scopes_of_different_contexts_add_up(c, tenant, ward):
    """All of the patient's own results, and every patient's vital signs of the hospital."""
    w = ward
    h = auth_headers(tenant, f"patient/Observation.rs system/Observation.rs?{VITALS}", patient=w["zhang"])
    expected = sorted([w["zhang_vital"], w["zhang_lab"], w["wang_vital"]])
    assert await readable(c, h, "Observation", observations(w)) == expected
    assert await found(c, h, "Observation") == expected


async def test_several_parameters_must_all_match(c, tenant, ward):
    w = ward
    old = await make(c, tenant, _obs(w["zhang"], "vital-signs", when="2019-03-01"))
    h = auth_headers(tenant, f"patient/Observation.rs?{VITALS}&date=ge2024-01-01", patient=w["zhang"])
    assert await readable(c, h, "Observation", [*observations(w), old["id"]]) == [w["zhang_vital"]]
    assert await found(c, h, "Observation") == [w["zhang_vital"]]


@pytest.mark.parametrize("query, who", [
    ("subject=Patient/{zhang}", ["zhang_vital", "zhang_lab"]),          # reference
    ("patient={wang}&code=2345-7", ["wang_lab"]),                       # reference and token
    ("date=lt2024-06-01,ge2030-01-01", ["zhang_vital", "zhang_lab", "wang_vital", "wang_lab"]),  # date, OR values
    ("code=http://loinc.org|8867-4", ["zhang_vital", "wang_vital"]),   # token with a system
])
async def test_parameter_types_in_system_scopes(c, tenant, ward, query, who):
    w = ward
    h = auth_headers(tenant, "system/Observation.rs?" + query.format(**w))
    expected = sorted(w[k] for k in who)
    assert await readable(c, h, "Observation", observations(w)) == expected
    assert await found(c, h, "Observation") == expected


async def test_string_and_uri_parameters(c, tenant, ward):
    w = ward
    h = auth_headers(tenant, "system/Patient.rs?family=张")
    assert await readable(c, h, "Patient", [w["zhang"], w["wang"]]) == [w["zhang"]]
    assert await found(c, h, "Patient") == [w["zhang"]]
    ours = await make(c, tenant, {"resourceType": "Questionnaire", "status": "active",
                                  "url": "http://yiyun.example/q/phq-9"})
    theirs = await make(c, tenant, {"resourceType": "Questionnaire", "status": "active",
                                    "url": "http://elsewhere.example/q/gad-7"})
    h = auth_headers(tenant, "system/Questionnaire.rs?url:below=http://yiyun.example/q")
    assert await readable(c, h, "Questionnaire", [ours["id"], theirs["id"]]) == [ours["id"]]
    assert await found(c, h, "Questionnaire") == [ours["id"]]


# ------------------------------------------------------------------ writes
async def test_writes_through_a_granular_scope_must_match_its_query(c, tenant, ward):
    w = ward
    h = auth_headers(tenant, f"patient/Observation.cruds?{VITALS}", patient=w["zhang"])
    created = await c.post(f"{FHIR}/Observation", json=_obs(w["zhang"], "vital-signs"), headers=h)
    assert created.status_code == 201, created.text
    refused = await c.post(f"{FHIR}/Observation", json=_obs(w["zhang"], "laboratory"), headers=h)
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    # a vital sign, but of another patient: the compartment rule still applies
    assert (await c.post(f"{FHIR}/Observation", json=_obs(w["wang"], "vital-signs"), headers=h)).status_code == 403

    vital = created.json()
    changed = {**vital, "valueQuantity": {"value": 72, "unit": "/min"}}
    assert (await c.put(f"{FHIR}/Observation/{vital['id']}", json=changed, headers=h)).status_code == 200
    relabelled = {**vital, "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]}
    assert (await c.put(f"{FHIR}/Observation/{vital['id']}", json=relabelled, headers=h)).status_code == 403
    patch = [{"op": "replace", "path": "/category/0/coding/0/code", "value": "laboratory"}]
    patched = await c.patch(f"{FHIR}/Observation/{vital['id']}", json=patch,
                            headers={**h, "Content-Type": "application/json-patch+json"})
    assert patched.status_code == 403
    # a laboratory result is hidden from this token: deleting it answers as a missing one, and it stays
    assert (await c.delete(f"{FHIR}/Observation/{w['zhang_lab']}", headers=h)).status_code in (200, 204)
    assert (await c.get(f"{FHIR}/Observation/{w['zhang_lab']}", headers=auth_headers(tenant))).status_code == 200
    assert (await c.delete(f"{FHIR}/Observation/{vital['id']}", headers=h)).status_code in (200, 204)
    assert (await c.get(f"{FHIR}/Observation/{vital['id']}", headers=auth_headers(tenant))).status_code == 410


async def test_a_visible_resource_outside_the_write_query_is_not_changed(c, tenant, ward):
    w = ward
    h = auth_headers(tenant, f"patient/Observation.rs patient/Observation.cud?{VITALS}", patient=w["zhang"])
    lab = (await c.get(f"{FHIR}/Observation/{w['zhang_lab']}", headers=h)).json()
    changed = {**lab, "valueQuantity": {"value": 6.1, "unit": "mmol/L"}}
    assert (await c.put(f"{FHIR}/Observation/{lab['id']}", json=changed, headers=h)).status_code == 403
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    assert (await c.patch(f"{FHIR}/Observation/{lab['id']}", json=patch,
                          headers={**h, "Content-Type": "application/json-patch+json"})).status_code == 403
    # …even if the update would turn it into a vital sign
    relabelled = {**lab, "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}]}
    assert (await c.put(f"{FHIR}/Observation/{lab['id']}", json=relabelled, headers=h)).status_code == 403
    assert (await c.delete(f"{FHIR}/Observation/{lab['id']}", headers=h)).status_code == 403
    assert (await c.get(f"{FHIR}/Observation/{lab['id']}", headers=h)).json()["meta"]["versionId"] == "1"
    assert (await c.delete(f"{FHIR}/Observation/{w['zhang_vital']}", headers=h)).status_code in (200, 204)


# ------------------------------------------------------------------ fail closed
async def test_an_unknown_parameter_makes_that_scope_grant_nothing(c, tenant, ward, monkeypatch):
    from structlog.testing import CapturingLogger

    from yiyun.identity import policy

    logged = CapturingLogger()
    monkeypatch.setattr(policy, "log", logged)
    w = ward
    unknown = f"no-such-{uuid.uuid4().hex[:8]}"  # a fresh query, so that its refusal is logged in this test
    h = auth_headers(tenant, f"patient/Observation.rs?{unknown}=1", patient=w["zhang"])
    assert (await c.get(f"{FHIR}/Observation", headers=h)).status_code == 403
    assert (await c.get(f"{FHIR}/Observation/{w['zhang_vital']}", headers=h)).status_code == 403
    assert [(call.args, call.kwargs["query"]) for call in logged.calls] == [
        (("granular_scope_not_supported",), f"{unknown}=1")]
    # an unsupported modifier, a chain or a bad value fail closed the same way
    for query in ("code:not=2345-7", "subject.name=张", "date=yesterday", "value-quantity=70"):
        bad = auth_headers(tenant, f"patient/Observation.rs?{query}", patient=w["zhang"])
        assert (await c.get(f"{FHIR}/Observation", headers=bad)).status_code == 403, query
    # beside it, a supported granular scope still grants what it says
    both = auth_headers(tenant, f"patient/Observation.rs?{unknown}=1 patient/Observation.rs?{VITALS}",
                        patient=w["zhang"])
    assert await found(c, both, "Observation") == [w["zhang_vital"]]
    assert await readable(c, both, "Observation", observations(w)) == [w["zhang_vital"]]


async def test_granular_scopes_are_left_out_of_bulk_export(c, tenant, ward):
    """An export applies unqualified scopes only: a type granted through a query is not exported."""
    w = ward
    h = auth_headers(tenant, f"patient/Observation.rs?{VITALS}", patient=w["zhang"])
    r = await c.get(f"{FHIR}/Patient/$export", headers={**h, "Prefer": "respond-async"})
    assert r.status_code == 403
