"""Paper consent recorded at the desk: the scanned form is checked and stored, the Consent
names it and the staff member, the patient sees it and can withdraw it; bad files are a
clear 4xx and leave nothing behind. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from tests.conftest import auth_headers
from tests.identity.test_consent import FHIR, dr_li, patient_token, region, regional  # noqa: F401  (fixture)

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def registrar(tenant, roles=("admin",)):
    return auth_headers(tenant, "user/*.cruds", roles=roles, subject="staff:reg")


def upload(patient, kind="regional-sharing", action="grant", data=PDF, ctype="application/pdf", name="form.pdf"):
    return {"data": {"patient": patient, "kind": kind, "action": action},
            "files": {"form": (name, data, ctype)}}


async def stored_forms(engine) -> list[str]:
    from yiyun.core.storage import get_storage

    storage = get_storage()
    root = storage.root + "/consent-forms"
    return [p for p in storage.fs.find(root)] if storage.fs.exists(root) else []


async def audit_of(engine, tenant, action="consent"):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.audit import query

    async with unit_of_work(engine, write=False) as conn:
        return await query(conn, tenant=tenant, action=action, limit=20)


async def test_staff_record_a_signed_form_and_the_patient_sees_and_withdraws_it(c, region, engine):
    r = region
    recorded = await c.post("/api/consent/desk", headers=registrar(r["a"]), **upload(r["pa"]))
    assert recorded.status_code == 201, recorded.text
    body = recorded.json()
    assert sorted(g["tenant"] for g in body["recorded"]) == sorted([r["a"], r["b"]])
    assert body["form"]["contentType"] == "application/pdf" and body["form"]["size"] == len(PDF)
    assert (await regional(c, r)).json()["sources"][0]["tenant"] == r["b"]

    # the Consent: the scan as its source, the staff member named, the patient as performer
    state = body["consents"]["regional-sharing"]
    assert state["recorded_by"] and state["given_by"]["role"] == "patient"
    cid = state["consent"].split("/")[1]
    consent = (await c.get(f"{FHIR}/Consent/{cid}", headers=auth_headers(r["a"]))).json()
    assert consent["sourceAttachment"]["url"] == body["form"]["url"]
    assert consent["performer"] == [{"reference": f"Patient/{r['pa']}"}]
    assert [e["valueReference"]["identifier"]["value"] for e in consent["extension"]] == [f"{r['a']}/staff:reg"]
    # audited under the staff member's name, with the form
    entries = await audit_of(engine, r["a"])
    assert any(e.actor == "staff:reg" and e.detail_value.get("form") == body["form"]["url"] for e in entries)

    # the patient sees who recorded it and may open the scan; a stranger may not
    me = patient_token(r["a"], r["pa"])
    mine = (await c.get("/api/consent", headers=me)).json()["consents"]["regional-sharing"]
    assert mine["recorded_by"] == state["recorded_by"] and mine["form"]["url"] == body["form"]["url"]
    scan = await c.get(body["form"]["url"], headers=me)
    assert scan.status_code == 200 and scan.content == PDF and scan.headers["content-type"] == "application/pdf"
    assert scan.headers["x-content-type-options"] == "nosniff"
    assert (await c.get(body["form"]["url"], headers=dr_li(r["a"]))).status_code == 404
    assert (await c.get(body["form"]["url"], headers=registrar(r["b"]))).status_code == 404
    assert (await c.get(body["form"]["url"], headers=registrar(r["a"]))).status_code == 200
    # ... and withdraws it themselves
    assert (await c.delete(f"/api/consent/{cid}", headers=me)).status_code == 200
    assert (await regional(c, r)).json()["sources"] == []


async def test_a_withdrawal_signed_at_the_desk_is_recorded_with_its_form(c, region):
    r = region
    me = patient_token(r["a"], r["pa"])
    assert (await c.post("/api/consent", json={"kind": "research"}, headers=me)).status_code == 201
    officer = registrar(r["a"], roles=("privacy-officer",))
    done = await c.post("/api/consent/desk", headers=officer,
                        **upload(r["pa"], kind="research", action="revoke", data=PNG, ctype="image/png", name="w.png"))
    assert done.status_code == 201, done.text
    assert len(done.json()["recorded"]) == 2 and done.json()["consents"]["research"]["active"] is False
    cid = done.json()["recorded"][0]["consent"].split("/")[1]
    tenant = done.json()["recorded"][0]["tenant"]
    consent = (await c.get(f"{FHIR}/Consent/{cid}", headers=auth_headers(tenant))).json()
    assert consent["status"] == "inactive"
    urls = {e["url"].rsplit("/", 1)[1]: e for e in consent["extension"]}
    assert urls["consent-withdrawal-source"]["valueAttachment"]["contentType"] == "image/png"
    assert urls["consent-withdrawn-by"]["valueReference"]["reference"].startswith("Patient/")
    # nothing left to withdraw: a clear 409, and no form kept
    again = await c.post("/api/consent/desk", headers=officer, **upload(r["pa"], kind="research", action="revoke"))
    assert again.status_code == 409


async def test_bad_forms_and_callers_are_refused_and_leave_nothing(c, region, engine):
    r = region
    h = registrar(r["a"])
    before = await stored_forms(engine)
    cases = [
        (upload(r["pa"], data=b"MZ\x90\x00 not a pdf", name="x.pdf"), 415),  # a renamed executable
        (upload(r["pa"], data=b"<html><script>alert(1)</script>", ctype="text/html", name="x.html"), 415),
        (upload(r["pa"], data=PDF, ctype="image/png", name="x.png"), 415),  # declared type and content disagree
        (upload(r["pa"], data=b"%PDF-" + b"0" * (10 * 1024 * 1024), name="big.pdf"), 413),
        (upload(r["pa"], kind="marketing"), 400),
        (upload(r["pa"], action="sell"), 400),
        (upload("no-such-patient"), 404),
    ]
    for kwargs, status in cases:
        got = await c.post("/api/consent/desk", headers=h, **kwargs)
        assert got.status_code == status, (kwargs["data"], got.status_code, got.text[:200])
    no_file = await c.post("/api/consent/desk", headers=h, data={"patient": r["pa"], "kind": "research"})
    assert no_file.status_code == 400 and "扫描件" in no_file.text
    # doctors and patients do not record paper consent
    assert (await c.post("/api/consent/desk", headers=dr_li(r["a"]), **upload(r["pa"]))).status_code == 403
    assert (await c.post("/api/consent/desk", headers=patient_token(r["a"], r["pa"]),
                         **upload(r["pa"]))).status_code == 403
    assert await stored_forms(engine) == before
    assert (await regional(c, r)).json()["sources"] == []
    assert (await c.get(f"/api/consent/forms/{r['a']}/..%2Fsigning.key", headers=h)).status_code == 404
    assert (await c.get(f"/api/consent/forms/{r['a']}/{uuid.uuid4().hex}.pdf", headers=h)).status_code == 404


async def test_the_desk_page_records_a_form_and_the_patient_page_shows_it(c, region, engine):
    from yiyun.core.db import unit_of_work
    from yiyun.identity.accounts import create_patient_account, create_staff
    from yiyun.identity.sessions import open_session

    r = region
    async with unit_of_work(engine) as conn:
        staff = await create_staff(conn, username=f"reg-{r['a']}", display_name="钱登记", password="",
                                   password_hash="x", tenant_slug=r["a"], roles=["admin"])
        staff_cookie, staff_csrf = await open_session(conn, staff.id, r["a"])
        pat = await create_patient_account(conn, f"139{uuid.uuid4().int % 10**8:08d}", "赵六", tenant=r["a"],
                                           fhir_ref=f"Patient/{r['pa']}")
        pat_cookie, _ = await open_session(conn, pat.id, r["a"])
    c.cookies.set("yiyun_session", staff_cookie)
    page = await c.get("/consent/desk", params={"patient": r["pa"]})
    assert page.status_code == 200 and "赵六" in page.text and 'enctype="multipart/form-data"' in page.text
    bad = await c.post("/consent/desk", data={"patient": r["pa"], "kind": "research", "action": "grant",
                                              "csrf_token": staff_csrf},
                       files={"form": ("a.gif", b"GIF89a....", "image/gif")})
    assert bad.status_code == 415 and "PDF、JPEG 或 PNG" in bad.text
    no_csrf = await c.post("/consent/desk", data={"patient": r["pa"], "kind": "research", "action": "grant"},
                           files={"form": ("a.pdf", PDF, "application/pdf")})
    assert no_csrf.status_code == 403
    done = await c.post("/consent/desk", data={"patient": r["pa"], "kind": "research", "action": "grant",
                                               "csrf_token": staff_csrf},
                        files={"form": ("a.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 32, "image/jpeg")})
    assert done.status_code == 303, done.text
    c.cookies.set("yiyun_session", pat_cookie)
    mine = await c.get("/me/consent")
    assert 'data-by="desk"' in mine.text and "由 钱登记 在窗口登记" in mine.text and "/api/consent/forms/" in mine.text
    c.cookies.clear()
