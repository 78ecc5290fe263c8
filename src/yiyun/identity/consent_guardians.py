"""A guardian's consent for a ward (docs/sharing.md "Guardians").

A guardian grants and withdraws regional sharing and research use for a ward exactly as a
patient does for themselves (`yiyun.identity.consent`), with the guardian recorded as the one
who consented. Who is whose guardian is decided by `yiyun.identity.care.wards` alone: a
minor's guardianship ends at 18, an adult's (court-declared lack of capacity) does not.

Legal basis: 《个人信息保护法》第三十一条 (a minor under 14: the guardian's consent),
第二十八条 (health information is sensitive) and 第二十九条 (a separate consent for it);
《民法典》第二十七条、第二十八条
(who is a guardian), 第三十四条 (the guardian acts for the ward) and 第三十五条 (the guardian of
an adult respects the ward's true will and lets them decide what they are able to). Hence:
once the ward is an adult, a choice they made themselves (granting or withdrawing) stands
against the guardian: the guardian may no longer change that kind of consent (409).
"""

from __future__ import annotations

import calendar
from datetime import date

from sqlalchemy.ext.asyncio import AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.core.errors import Conflict, Forbidden
from yiyun.fhir.model import RequestContext
from yiyun.fhir.repository import FhirRepository
from yiyun.identity import care
from yiyun.identity.consent import KIND_SYSTEM, WITHDRAWN_BY_URL, Guardian, check_kind, giver

NOT_GUARDIAN = ("您不是该患者的监护人，或被监护人已年满十八周岁，应由其本人管理授权 "
                "(you are not this patient's guardian, or they are now an adult and decide themselves)")


def display_name(patient: dict) -> str:
    for name in patient.get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        text = (name.get("family") or "") + "".join(name.get("given") or [])
        if text:
            return text
    return "患者"


async def wards_of(engine: AsyncEngine, tenant: str, guardian: str) -> list[dict]:
    """[{"id", "name", "birthDate"}] of Patient/`guardian`'s wards in `tenant`, now."""
    async with unit_of_work(engine, write=False) as conn:
        ids = sorted({r.patient for r in await conn.execute(care.wards(tenant, guardian).select())})
        repo = FhirRepository(conn, RequestContext(tenant=tenant))
        found = await repo.current_many([("Patient", i) for i in ids]) if ids else {}
    return [{"id": i, "name": display_name(s.resource), "birthDate": s.resource.get("birthDate")}
            for (_, i), s in sorted(found.items()) if not s.deleted]


async def guardian_for(engine: AsyncEngine, tenant: str, guardian: str, ward: str) -> Guardian:
    """The guardianship of Patient/`guardian` over Patient/`ward` in `tenant`, or 403."""
    async with unit_of_work(engine, write=False) as conn:
        ids = {r.patient for r in await conn.execute(care.wards(tenant, guardian).select())}
        if ward not in ids:
            raise Forbidden(NOT_GUARDIAN)
        repo = FhirRepository(conn, RequestContext(tenant=tenant))
        me = (await repo.read("Patient", guardian)).resource
        linked = {str((link.get("other") or {}).get("reference", "")).split("/")[-1]
                  for link in me.get("link") or [] if isinstance(link, dict)}
        found = await repo.search("RelatedPerson", [("patient", f"Patient/{ward}"), ("_count", "50")])
    for rp in found.matches:
        if rp.res_id in linked and rp.resource.get("active") is not False:
            return Guardian(tenant, rp.res_id, guardian, display_name(me))
    raise Forbidden(NOT_GUARDIAN)


def coming_of_age(birth_date: str | None) -> date | None:
    """The ward's 18th birthday (《民法典》第十七条), from a full birthDate; None if unknown.
    Born on 29 February, one comes of age on 1 March in a common year (as `care` reckons)."""
    if not isinstance(birth_date, str) or len(birth_date) != 10:
        return None
    try:
        born = date.fromisoformat(birth_date)
    except ValueError:
        return None
    year = born.year + care.ADULT_AGE
    if born.month == 2 and born.day == 29 and not calendar.isleap(year):
        return date(year, 3, 1)
    return born.replace(year=year)


def _ward_chose_after(consent: dict, ward: str, since: str) -> bool:
    """Did Patient/`ward` grant or withdraw this consent themselves on or after `since` (a date)?
    Dates of the UTC instants are compared: at worst a choice made within eight hours of
    midnight on the birthday counts a day early or late."""
    own_ref = f"Patient/{ward}"
    if giver(consent)["role"] == "patient" and str(consent.get("dateTime", ""))[:10] >= since:
        return True
    for ext in consent.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == WITHDRAWN_BY_URL \
                and (ext.get("valueReference") or {}).get("reference") == own_ref:
            ended = str(((consent.get("provision") or {}).get("period") or {}).get("end", ""))
            if ended[:10] >= since:
                return True
    return False


async def check_ward_has_not_chosen(engine: AsyncEngine, tenant: str, ward: str, kind: str) -> None:
    """409 when the ward, as an adult, made their own choice about `kind` (《民法典》第三十五条)."""
    check_kind(kind)
    async with unit_of_work(engine, write=False) as conn:
        repo = FhirRepository(conn, RequestContext(tenant=tenant))
        adult_on = coming_of_age((await repo.read("Patient", ward)).resource.get("birthDate"))
        if adult_on is None or adult_on > care.today_local():
            return
        found = await repo.search("Consent", [("patient", f"Patient/{ward}"), ("category", f"{KIND_SYSTEM}|{kind}"),
                                              ("_count", "100")])
    if any(_ward_chose_after(s.resource, ward, adult_on.isoformat()) for s in found.matches):
        raise Conflict("被监护人成年后已自行作出选择，监护人不能更改 "
                       "(the ward made this choice themselves as an adult; it stands)")
