"""The catalogue's JSON API for administrators: departments, doctors, their services and fees."""

from __future__ import annotations

API = "/api/hospital"
PUBLIC = "/api/hospital/directory/hospitals"


async def test_an_administrator_opens_a_department_with_a_doctor_and_an_online_service(client, hospital):
    admin = hospital.staff_headers("admin")
    r = await client.post(f"{API}/departments", headers=admin, json={
        "id": "hs-cardio", "name": "心血管内科", "phone": "0731-8888 1234", "comment": "高血压、冠心病",
        "opening_hours": [{"days": ["mon", "tue"], "start": "08:00", "end": "12:00"}]})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "心血管内科" and r.json()["opening_hours"] == ["周一、周二 08:00–12:00"]
    r = await client.post(f"{API}/doctors", headers=admin, json={
        "id": "role-sun", "name": "孙医生", "department": "hs-cardio", "title": "副主任医师", "gender": "female",
        "specialty": ["高血压"], "introduction": "从事心内科临床工作二十年。"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["practitioner"] == "prac-sun" and doc["department"] == "hs-cardio" and doc["title"] == "副主任医师"
    r = await client.put(f"{API}/doctors/role-sun/services/online-text", headers=admin,
                         json={"fee_fen": 2000, "active": True})
    assert r.status_code == 200 or r.status_code == 201, r.text
    assert r.json()["fee_fen"] == 2000 and r.json()["type"] == "online-text"

    # patients see them in the public directory at once
    public = (await client.get(f"{PUBLIC}/{hospital.tenant}")).json()
    cardio = next(d for d in public["departments"] if d["id"] == "hs-cardio")
    assert cardio["doctors"] == 1 and cardio["consultation_types"][0]["code"] == "online-text"
    found = (await client.get(f"{PUBLIC}/{hospital.tenant}/doctors", params={"department": "hs-cardio"})).json()
    assert found["doctors"][0]["name"] == "孙医生" and found["doctors"][0]["services"][0]["fee_fen"] == 2000

    # changes: only what is given
    r = await client.put(f"{API}/doctors/role-sun", headers=admin, json={"title": "主任医师"})
    assert r.status_code == 200 and r.json()["title"] == "主任医师" and r.json()["name"] == "孙医生"
    r = await client.put(f"{API}/departments/hs-cardio", headers=admin, json={"active": False})
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["name"] == "心血管内科"
    public = (await client.get(f"{PUBLIC}/{hospital.tenant}")).json()
    assert "hs-cardio" not in {d["id"] for d in public["departments"]}
    listed = (await client.get(f"{API}/departments", headers=admin)).json()["departments"]
    assert {d["id"]: d["active"] for d in listed} == {"hs-resp": True, "hs-cardio": False}
    doctors = (await client.get(f"{API}/doctors", headers=admin)).json()["doctors"]
    sun = next(d for d in doctors if d["id"] == "role-sun")
    assert [s["type"] for s in sun["services"]] == ["online-text"]


async def test_bad_catalogue_input_is_a_clear_4xx_and_writes_nothing(client, hospital):
    admin = hospital.staff_headers("admin")
    cases = [
        ("post", "/departments", {}, 400, "科室名称不能为空"),
        ("post", "/departments", {"name": "x" * 41}, 400, "最多 40 个字"),
        ("post", "/departments", {"name": "眼科", "phone": "call me"}, 400, "电话号码"),
        ("post", "/departments", {"name": "眼科", "colour": "red"}, 400, "不认识的字段"),
        ("post", "/departments", {"name": "眼科", "id": "含中文"}, 400, "id 只能含"),
        ("post", "/departments", {"name": "眼科", "id": "hs-resp"}, 400, "已存在"),
        ("post", "/departments", {"name": "眼科", "opening_hours": [{"days": ["someday"], "start": "08:00",
                                                                    "end": "09:00"}]}, 400, "出诊日"),
        ("post", "/departments", {"name": "眼科", "opening_hours": [{"days": ["mon"], "start": "10:00",
                                                                    "end": "09:00"}]}, 400, "早于"),
        ("post", "/departments", {"name": "眼科", "active": "yes"}, 400, "是或否"),
        ("put", "/departments/hs-none", {"name": "眼科"}, 404, "未找到科室"),
        ("post", "/doctors", {"name": "周医生"}, 400, "请选择科室"),
        ("post", "/doctors", {"name": "周医生", "department": "hs-none"}, 404, "未找到科室"),
        ("post", "/doctors", {"department": "hs-resp"}, 400, "医生姓名不能为空"),
        ("post", "/doctors", {"name": "周医生", "department": "hs-resp", "gender": "m"}, 400, "性别"),
        ("post", "/doctors", {"name": "周医生", "department": "hs-resp", "specialty": "咳嗽"}, 400, "擅长"),
        ("put", "/doctors/role-none", {"title": "医师"}, 404, "未找到医生"),
        ("put", f"/doctors/{hospital.role}/services/house-call", {"fee_fen": 100}, 400, "未知的问诊类型"),
        ("put", f"/doctors/{hospital.role}/services/clinic", {"fee_fen": -1}, 422, None),
        ("put", f"/doctors/{hospital.role}/services/clinic", {"fee_fen": "free"}, 422, None),
    ]
    for method, path, body, status, words in cases:
        r = await getattr(client, method)(f"{API}{path}", json=body, headers=admin)
        assert r.status_code == status, (path, body, r.text)
        if words:
            assert words in r.json()["detail"] and "(" in r.json()["detail"], r.text  # Chinese, then English
        else:  # FastAPI's own checks of the body, in Chinese too
            msg = r.json()["detail"][0]["msg"]
            assert msg.startswith("fee_fen 数值太小 (") or msg.startswith("fee_fen 须为整数 ("), msg
    listed = (await client.get(f"{API}/departments", headers=admin)).json()["departments"]
    assert [d["id"] for d in listed] == ["hs-resp"]
    doctors = (await client.get(f"{API}/doctors", headers=admin)).json()["doctors"]
    assert {d["id"] for d in doctors} == {hospital.role, hospital.other_role}


async def test_only_administrators_change_the_catalogue(client, hospital):
    for headers in (hospital.staff_headers("doctor"), hospital.patient_headers()):
        assert (await client.post(f"{API}/departments", json={"name": "眼科"}, headers=headers)).status_code == 403
        assert (await client.put(f"{API}/doctors/{hospital.role}", json={"title": "医师"},
                                 headers=headers)).status_code == 403
        assert (await client.get(f"{API}/doctors", headers=headers)).status_code == 403
