"""In the platform's app the knowledge editor is for signed-in clinical staff only:
the development header that unit tests use opens nothing there."""

from __future__ import annotations

from urllib.parse import quote

from tests.conftest import auth_headers

EDIT = "/knowledge/edit/diseases/" + quote("原发性高血压")


async def test_editor_refuses_headers_and_non_staff_and_admits_a_doctor(client, tenant):
    anonymous = {"Authorization": ""}
    r = await client.get(EDIT, headers={**anonymous, "X-Yiyun-Role": "staff", "X-Yiyun-User": "mallory"})
    assert r.status_code == 401
    patient = auth_headers(tenant, scope="patient/*.rs", subject="user:zhang", roles=("patient",), patient="p1")
    assert (await client.get(EDIT, headers=patient)).status_code == 403
    doctor = auth_headers(tenant, scope="user/*.cruds", subject="user:li", roles=("doctor",))
    r = await client.get(EDIT, headers=doctor)
    assert r.status_code == 200, r.text[:300]
    assert "原发性高血压" in r.text
