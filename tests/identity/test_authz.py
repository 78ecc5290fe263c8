"""Authentication and authorisation of `/fhir/R4`: tokens, SMART scopes, the patient
compartment, tenant isolation and the audit trail, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import pytest_asyncio

from tests.conftest import auth_headers

FHIR = "/fhir/R4"


@pytest_asyncio.fixture
async def anon(app):
    """A client that sends no token unless a test gives one."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


def as_(tenant, scope="system/*.cruds", **kw):
    return auth_headers(tenant, scope, **kw)


async def _create(c, tenant, body):
    r = await c.post(f"{FHIR}/{body['resourceType']}", json=body, headers=as_(tenant))
    assert r.status_code == 201, r.text
    return r.json()


def _patient(family="张"):
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["三"]}], "gender": "male"}


def _obs(pid, code="8867-4"):
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 70, "unit": "/min"}}


# ------------------------------------------------------------------ authentication
async def test_public_routes_need_no_token(anon):
    assert (await anon.get(f"{FHIR}/metadata")).status_code == 200
    for path in ("/.well-known/smart-configuration", f"{FHIR}/.well-known/smart-configuration"):
        doc = (await anon.get(path)).json()
        assert "permission-v2" in doc["capabilities"] and doc["code_challenge_methods_supported"] == ["S256"]
        assert "plain" not in doc["code_challenge_methods_supported"]
    assert (await anon.get("/healthz")).status_code == 200


async def test_missing_forged_expired_tokens_get_401(anon, tenant, monkeypatch):
    from yiyun.identity.tokens import issue_access_token

    r = await anon.get(f"{FHIR}/Patient")
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await anon.get(f"{FHIR}/Patient", headers={"X-Yiyun-Tenant": tenant})).status_code == 401
    token, _ = issue_access_token(subject="service:x", tenant=tenant, scope="system/*.cruds")
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    for bad in (forged, "not-a-jwt", token + "x"):
        r = await anon.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, bad
    expired, _ = issue_access_token(subject="service:x", tenant=tenant, scope="system/*.cruds", minutes=-1)
    r = await anon.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
    reserved, _ = issue_access_token(subject="system", tenant=tenant, scope="system/*.cruds")
    assert (await anon.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {reserved}"})).status_code == 401


async def test_the_token_chooses_the_tenant_not_the_header(anon, tenant):
    p = await _create(anon, tenant, _patient())
    other = {**as_(tenant + "-x"), "X-Yiyun-Tenant": tenant}
    assert (await anon.get(f"{FHIR}/Patient/{p['id']}", headers=other)).status_code == 404  # IDOR → 404
    assert (await anon.delete(f"{FHIR}/Patient/{p['id']}", headers=other)).status_code in (200, 204)
    assert (await anon.get(f"{FHIR}/Patient/{p['id']}", headers=as_(tenant))).status_code == 200
    found = (await anon.get(f"{FHIR}/Patient", params={"_id": p["id"]}, headers=other)).json()
    assert found.get("total", 0) == 0 and not found.get("entry")


# ------------------------------------------------------------------ scope matrix
INTERACTIONS = {
    "read": "r", "vread": "r", "history": "r", "search": "s", "create": "c", "update": "u", "patch": "u", "delete": "d",
}


async def _do(c, interaction, pid, headers):
    url = f"{FHIR}/Patient/{pid}"
    if interaction == "read":
        return await c.get(url, headers=headers)
    if interaction == "vread":
        return await c.get(f"{url}/_history/1", headers=headers)
    if interaction == "history":
        return await c.get(f"{url}/_history", headers=headers)
    if interaction == "search":
        return await c.get(f"{FHIR}/Patient", params={"_id": pid}, headers=headers)
    if interaction == "create":
        return await c.post(f"{FHIR}/Patient", json=_patient(), headers=headers)
    if interaction == "update":
        return await c.put(url, json={**_patient("李"), "id": pid}, headers=headers)
    if interaction == "patch":
        return await c.patch(url, json=[{"op": "replace", "path": "/gender", "value": "female"}],
                             headers={**headers, "Content-Type": "application/json-patch+json"})
    return await c.delete(url, headers=headers)


@pytest.mark.parametrize("interaction", sorted(INTERACTIONS))
async def test_scope_matrix(anon, tenant, interaction):
    letter = INTERACTIONS[interaction]
    p = await _create(anon, tenant, _patient())
    without = "".join(x for x in "cruds" if x != letter)
    denied = await _do(anon, interaction, p["id"], as_(tenant, f"system/Patient.{without}"))
    assert denied.status_code == 403, (interaction, denied.text)
    assert denied.json()["resourceType"] == "OperationOutcome"
    other_type = await _do(anon, interaction, p["id"], as_(tenant, "system/Observation.cruds"))
    assert other_type.status_code == 403
    allowed = await _do(anon, interaction, p["id"], as_(tenant, f"system/Patient.{letter}"))
    assert allowed.status_code < 300, (interaction, allowed.status_code, allowed.text)
    v1 = {"r": "read", "s": "read"}.get(letter, "write")
    # user/ scopes reach what the roles allow: registration staff (admin) keep Patient tenant-wide
    registration = as_(tenant, f"user/Patient.{v1}", roles=("admin",))
    assert (await _do(anon, interaction, p["id"], registration)).status_code < 300
    # a user token without a role reaches nothing (fails closed)
    assert (await _do(anon, interaction, p["id"], as_(tenant, f"user/Patient.{v1}"))).status_code == 403


async def test_reindex_needs_system_update_or_admin(anon, tenant):
    assert (await anon.post(f"{FHIR}/$reindex", headers=as_(tenant, "system/*.rs"))).status_code == 403
    assert (await anon.post(f"{FHIR}/$reindex", headers=as_(tenant, "system/*.u"))).status_code == 200
    assert (await anon.post(f"{FHIR}/$reindex", headers=as_(tenant, "user/*.rs", roles=("admin",)))).status_code == 200


async def test_granular_scopes_with_an_unknown_parameter_fail_closed(anon, tenant):
    p = await _create(anon, tenant, _patient())
    h = as_(tenant, "patient/Observation.rs?no-such-parameter=vital-signs", patient=p["id"])
    assert (await anon.get(f"{FHIR}/Observation", headers=h)).status_code == 403


# ------------------------------------------------------------------ patient compartment
async def test_patient_token_sees_its_own_compartment_only(anon, tenant):
    zhang = await _create(anon, tenant, _patient("张"))
    wang = await _create(anon, tenant, _patient("王"))
    own = await _create(anon, tenant, _obs(zhang["id"]))
    other = await _create(anon, tenant, _obs(wang["id"]))
    org = await _create(anon, tenant, {"resourceType": "Organization", "name": "市医院"})
    h = as_(tenant, "patient/*.rs", patient=zhang["id"])

    assert (await anon.get(f"{FHIR}/Patient/{zhang['id']}", headers=h)).status_code == 200
    assert (await anon.get(f"{FHIR}/Observation/{own['id']}", headers=h)).status_code == 200
    missing = await anon.get(f"{FHIR}/Observation/does-not-exist", headers=h)
    hidden = await anon.get(f"{FHIR}/Observation/{other['id']}", headers=h)
    assert hidden.status_code == missing.status_code == 404
    assert (await anon.get(f"{FHIR}/Patient/{wang['id']}", headers=h)).status_code == 404
    assert (await anon.get(f"{FHIR}/Patient/{wang['id']}/_history", headers=h)).status_code == 404
    assert (await anon.get(f"{FHIR}/Organization/{org['id']}", headers=h)).status_code == 404

    ids = lambda b: sorted(e["resource"]["id"] for e in b.get("entry", []))  # noqa: E731
    assert ids((await anon.get(f"{FHIR}/Observation", headers=h)).json()) == [own["id"]]
    assert ids((await anon.get(f"{FHIR}/Patient", headers=h)).json()) == [zhang["id"]]
    probe = await anon.get(f"{FHIR}/Observation", params={"subject": f"Patient/{wang['id']}"}, headers=h)
    assert ids(probe.json()) == []
    chained = await anon.get(f"{FHIR}/Observation", params={"subject:Patient.family": "王"}, headers=h)
    assert ids(chained.json()) == []
    rev = await anon.get(f"{FHIR}/Patient", params={"_revinclude": "Observation:subject", "_id": wang["id"]}, headers=h)
    assert ids(rev.json()) == []
    inc = (await anon.get(f"{FHIR}/Observation", params={"_include": "Observation:subject"}, headers=h)).json()
    assert ids(inc) == sorted([own["id"], zhang["id"]])
    everything = (await anon.get(FHIR, params={"_type": "Patient,Observation,Organization"}, headers=h)).json()
    assert ids(everything) == sorted([own["id"], zhang["id"]])
    has = await anon.get(f"{FHIR}/Patient", params={"_has:Observation:subject:code": "8867-4"}, headers=h)
    assert ids(has.json()) == [zhang["id"]]

    hist = (await anon.get(f"{FHIR}/_history", headers=h)).json()
    assert sorted(e["resource"]["id"] for e in hist.get("entry", [])) == sorted([own["id"], zhang["id"]])
    hist_obs = (await anon.get(f"{FHIR}/Observation/_history", headers=h)).json()
    assert [e["resource"]["id"] for e in hist_obs.get("entry", [])] == [own["id"]]


async def test_patient_token_writes_only_into_its_compartment(anon, tenant):
    zhang = await _create(anon, tenant, _patient("张"))
    wang = await _create(anon, tenant, _patient("王"))
    h = as_(tenant, "patient/*.cruds", patient=zhang["id"])
    assert (await anon.post(f"{FHIR}/Observation", json=_obs(zhang["id"]), headers=h)).status_code == 201
    assert (await anon.post(f"{FHIR}/Observation", json=_obs(wang["id"]), headers=h)).status_code == 403
    theirs = await _create(anon, tenant, _obs(wang["id"]))
    moved = {**theirs, "subject": {"reference": f"Patient/{zhang['id']}"}}
    assert (await anon.put(f"{FHIR}/Observation/{theirs['id']}", json=moved, headers=h)).status_code == 404
    assert (await anon.delete(f"{FHIR}/Observation/{theirs['id']}", headers=h)).status_code in (200, 204)
    assert (await anon.get(f"{FHIR}/Observation/{theirs['id']}", headers=as_(tenant))).status_code == 200


async def _export(c, url, headers):
    r = await c.get(url, headers={**headers, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    status = r.headers["content-location"].split(FHIR, 1)[1]
    for _ in range(200):
        p = await c.get(FHIR + status, headers=headers)
        if p.status_code == 200:
            return p.json(), status
        await asyncio.sleep(0.05)
    raise AssertionError("export did not finish")


async def test_patient_export_is_limited_to_the_compartment(anon, tenant):
    zhang = await _create(anon, tenant, _patient("张"))
    wang = await _create(anon, tenant, _patient("王"))
    await _create(anon, tenant, _obs(zhang["id"]))
    await _create(anon, tenant, _obs(wang["id"]))
    h = as_(tenant, "patient/*.rs", patient=zhang["id"], subject=f"patient:{zhang['id']}")
    for url in (f"{FHIR}/Patient/$export", f"{FHIR}/$export"):
        manifest, status = await _export(anon, url, h)
        counts = {o["type"]: o["count"] for o in manifest["output"]}
        assert counts == {"Patient": 1, "Observation": 1}, counts
        file_url = manifest["output"][0]["url"].split(FHIR, 1)[1]
        assert (await anon.get(FHIR + file_url, headers=h)).status_code == 200
        assert (await anon.get(FHIR + file_url)).status_code == 401
        # another caller cannot poll or download this export
        assert (await anon.get(FHIR + status, headers=as_(tenant))).status_code == 404
    assert (await anon.get(f"{FHIR}/$export", headers={**as_(tenant, "system/Patient.r"),
                                                        "Prefer": "respond-async"})).status_code == 403


# ------------------------------------------------------------------ hostile input
INJECTIONS = [
    "' OR '1'='1", "1; DROP TABLE fhir_resource; --", "<script>alert(1)</script>", "%' OR 1=1 --",
    "\" OR \"\"=\"", "Patient/1' UNION SELECT content FROM fhir_resource --", "\\x00", "☃" * 300,
]


@pytest.mark.parametrize("value", INJECTIONS)
async def test_injection_strings_never_cause_500_or_leak(anon, tenant, value):
    await _create(anon, tenant, _patient())
    h = as_(tenant)
    for params in ({"name": value}, {"_id": value}, {"subject": value}, {"_sort": value}, {"family:exact": value},
                   {"identifier": value}, {"birthdate": value}):
        path = f"{FHIR}/Observation" if "subject" in params else f"{FHIR}/Patient"
        r = await anon.get(path, params=params, headers=h)
        assert r.status_code in (200, 400), (params, r.status_code, r.text)
        if r.status_code == 200:
            assert not r.json().get("entry"), params
    r = await anon.get(f"{FHIR}/Patient/{value}", headers=h)
    assert r.status_code in (400, 404)


# ------------------------------------------------------------------ audit
async def test_every_access_is_audited_and_the_chain_verifies(app, anon, tenant, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query, verify

    p = await _create(anon, tenant, _patient())
    h = as_(tenant, "patient/*.rs", patient=p["id"])
    assert (await anon.get(f"{FHIR}/Patient/{p['id']}", headers=h)).status_code == 200
    assert (await anon.get(f"{FHIR}/Patient", params={"gender": "male"}, headers=h)).status_code == 200
    assert (await anon.get(f"{FHIR}/Observation/nope", headers=h)).status_code == 404
    assert (await anon.post(f"{FHIR}/Patient", json=_patient(), headers=h)).status_code == 403
    await app.state.policy.recorder.flush()
    async with unit_of_work(engine, write=False) as conn:
        records = await query(conn, tenant=tenant, limit=100)
    seen = {(r.action, r.outcome) for r in records}
    assert {("create", "ok"), ("read", "ok"), ("search", "ok"), ("read", "not-found"), ("create", "denied")} <= seen, seen
    read = next(r for r in records if r.action == "read" and r.outcome == "ok")
    assert read.actor == "service:tests" and read.patient == p["id"] and read.resource_id == p["id"]
    async with unit_of_work(engine, write=True) as conn:
        report = await verify(conn, tenant=tenant)
    assert report.ok and report.checked == len(records), report.as_dict()


async def test_a_write_and_its_audit_entry_commit_together(app, anon, tenant, engine):
    from sqlalchemy import func, select

    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit_tables import audit_log

    bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "not-a-status"}, "request": {"method": "POST", "url": "Observation"}},
    ]}
    r = await anon.post(FHIR, json=bad, headers=as_(tenant))
    assert r.status_code >= 400
    await app.state.policy.recorder.flush()
    async with unit_of_work(engine, write=False) as conn:
        writes = (await conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.tenant == tenant, audit_log.c.action == "create"))).scalar()
    assert writes == 0
