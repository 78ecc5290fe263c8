"""The home page: the portals of the platform and links for integrators."""

from __future__ import annotations

from fastapi import APIRouter, Request

from yiyun.web.templating import render

router = APIRouter()

# Each portal: (title, blurb, link, badge character). Links whose module has not shipped show "coming soon".
PORTALS = [
    ("Patients", "Book a doctor, consult online, view reports and records, manage my health.", "/patient", "患"),
    ("Doctors", "Consultation queue, visit records, prescriptions, remote consultations.", "/doctor", "医"),
    ("Pharmacists", "Prescription review queue, rational drug use checks, dispensing and delivery.", None, "药"),
    ("Hospital administration", "Departments, doctors, schedules, booking rules and daily volumes.", "/hospital-admin", "院"),
    ("Public health", "Case reports, syndromic surveillance, epidemic cockpit and contact tracing.", None, "卫"),
    ("Medical knowledge", "Encyclopedia, smart triage, health Q&A and epidemic self-check.", "/knowledge", "知"),
]


def _available(link: str | None, request: Request) -> bool:
    return link is not None and link in getattr(request.app.state, "portal_links", set())


@router.get("/", include_in_schema=False)
async def home(request: Request):
    portals = [
        {"title": t, "blurb": b, "link": link if _available(link, request) else None, "icon": i}
        for t, b, link, i in PORTALS
    ]
    return render(request, "web/home.html", portals=portals)
