"""Video consultation in two headless Chromium pages with fake camera and microphone:
yiyun signals the WebRTC call, both peer connections reach "connected", chat works beside
the video, hanging up ends the call on both sides and the call is kept in the record."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, REPO, auth_headers, running_server
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, screenshot
from tests.hospital.people import verify_patients
from tests.hospital.test_consultation import ENDO, FORM, clinic_resources

MEDIA_ARGS = [
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    # host candidates as plain addresses: there is no mDNS responder in a test container
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
TENANT = "e2e-video"


@pytest.fixture
def video_server(tmp_path, monkeypatch):
    from yiyun.core.settings import get_settings

    secret = "e2e-video-secret-0123456789abcdef"
    env = {**os.environ, "YIYUN_DATABASE_URL": f"sqlite:///{tmp_path / 'video.db'}", "YIYUN_DATA_DIR": str(tmp_path),
           "YIYUN_SECRET_KEY": secret, "YIYUN_LOG_LEVEL": "WARNING"}
    env.pop("YIYUN_REDIS_URL", None)
    subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], env=env, cwd=REPO, check=True,
                   capture_output=True)
    monkeypatch.setenv("YIYUN_SECRET_KEY", secret)
    monkeypatch.setenv("YIYUN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("YIYUN_DATABASE_URL", env["YIYUN_DATABASE_URL"])
    get_settings.cache_clear()
    asyncio.run(_verified_patient(env["YIYUN_DATABASE_URL"]))  # online consultations need the real name
    with running_server(env) as base:
        yield base
    get_settings.cache_clear()


async def _verified_patient(url: str) -> None:
    from yiyun.core.db import create_engine_for

    engine = create_engine_for(url)
    try:
        await verify_patients(engine, TENANT, {"pat-zhang": "张三"})
    finally:
        await engine.dispose()


def headers(kind: str, pid: str) -> dict[str, str]:
    if kind == "patient":
        return auth_headers(TENANT, scope="patient/*.cruds", subject=f"user:{pid}", roles=("patient",), patient=pid,
                            fhir_user=f"Patient/{pid}")
    return auth_headers(TENANT, scope="user/*.cruds", subject=f"user:{pid}", roles=("doctor",),
                        fhir_user=f"Practitioner/{pid}")


def open_call(base: str) -> tuple[str, str, dict, dict]:
    system = auth_headers(TENANT)
    patient, doctor = headers("patient", "pat-zhang"), headers("doctor", "prac-li")
    with httpx.Client(base_url=base, timeout=20) as http:
        for r in clinic_resources():
            res = http.put(f"/fhir/R4/{r['resourceType']}/{r['id']}", json=r, headers=system)
            assert res.status_code in (200, 201), res.text
        cid = http.post("/api/consultations", json={"mode": "video", "department": ENDO, "form": FORM},
                        headers=patient).json()["id"]
        assert http.post(f"/api/consultations/{cid}/accept", headers=doctor).status_code == 200
        call = http.post(f"/api/consultations/{cid}/calls", headers=doctor).json()
    return cid, call["id"], patient, doctor


@pytest.mark.browser
def test_video_call_connects_both_browsers_and_is_kept_in_the_record(video_server):
    if not Path(CHROMIUM).exists():
        message = "Debian chromium is not installed (make system-deps)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    base = video_server
    cid, call_id, patient, doctor = open_call(base)

    def url(h: dict) -> str:
        return f"{base}/consultations/{cid}/video?call={call_id}#access_token={h['Authorization'].split(' ', 1)[1]}"

    connected = "() => window.yiyunCall && window.yiyunCall.pc && window.yiyunCall.pc.connectionState === 'connected'"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS + MEDIA_ARGS)
        try:
            doc_ctx = browser.new_context(viewport=DESKTOP, locale="zh-CN")
            pat_ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="zh-CN")
            doc, pat = doc_ctx.new_page(), pat_ctx.new_page()
            errors: list[str] = []
            for page in (doc, pat):
                page.on("pageerror", lambda exc: errors.append(str(exc)))
            doc.goto(url(doctor))
            pat.goto(url(patient))
            doc.wait_for_function(connected, timeout=30_000)
            pat.wait_for_function(connected, timeout=30_000)
            # media flows: each side receives the other's fake camera track
            for page in (doc, pat):
                page.wait_for_function("() => { const v = document.getElementById('remote');"
                                       " return v.srcObject && v.srcObject.getVideoTracks().length > 0"
                                       " && v.readyState >= 2; }", timeout=15_000)
                assert page.locator("#state").get_attribute("data-state") == "connected"
            screenshot(pat, "video-call-patient")
            screenshot(doc, "video-call-doctor")

            # the chat stays available beside the video (the fallback when video fails)
            pat.locator(".yc-bar input[type=text]").fill("画面有点卡，我打字说")
            pat.locator(".yc-bar button[type=submit]").click()
            doc.locator(".yc-msg", has_text="画面有点卡，我打字说").wait_for(timeout=10_000)

            doc.locator("#hangup").click()
            for page in (doc, pat):
                page.wait_for_function("() => window.yiyunCall.state === 'ended'", timeout=10_000)
            pat.locator(".yc-msg", has_text="视频通话已结束").wait_for(timeout=10_000)
            assert errors == []
        finally:
            browser.close()

    with httpx.Client(base_url=base, timeout=20) as http:
        detail = http.get(f"/api/consultations/{cid}", headers=patient).json()
        call = next(c for c in detail["calls"] if c["id"] == call_id)
        assert call["state"] == "ended" and call["connected"] and call["ended_by"] == "doctor"
        assert call["duration_seconds"] is not None
        record = http.get(f"/api/consultations/{cid}/record", headers=doctor).json()
        kinds = [(m["kind"], m.get("text", "")) for m in record["conversation"]]
        assert any(k == "call" and t.startswith("视频通话已结束") for k, t in kinds), kinds
        assert ("text", "画面有点卡，我打字说") in kinds
