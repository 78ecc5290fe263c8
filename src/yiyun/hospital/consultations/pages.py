"""Minimal consultation pages built on chat.js and video.js (the full patient and doctor
pages live in yiyun.hospital.pages). The pages carry no data: the scripts fetch it with
the caller's session cookie, or with a bearer token passed in the URL fragment
(`#access_token=…`, never sent to the server in the page request)."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def _templates() -> Environment:
    return Environment(loader=PackageLoader("yiyun.hospital", "templates"), autoescape=select_autoescape(["html"]))


def _page(name: str, **context) -> HTMLResponse:
    html = _templates().get_template(name).render(**context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.get("/consultations/{cid}/chat")
async def chat_page(request: Request, cid: str):
    return _page("hospital/consultation_chat.html", consultation_id=cid)


@router.get("/consultations/{cid}/video")
async def video_page(request: Request, cid: str, call: str = ""):
    return _page("hospital/video_call.html", consultation_id=cid, call_id=call)
