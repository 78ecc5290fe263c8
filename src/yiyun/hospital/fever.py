"""Fever-clinic finder: which hospitals have a fever clinic (发热门诊), its opening hours and
how far it is.

A fever clinic is a HealthcareService with the characteristic
`https://yiyun.example.cn/fhir/CodeSystem/service-characteristic|fever-clinic`; its place
is the position of its Location (else the hospital's). Patients with fever are sent to a
fever clinic first (《医疗机构传染病预检分诊管理办法》), so the finder is public.

    clinics = await find_fever_clinics(conn, latitude=28.19, longitude=112.98)
"""

from __future__ import annotations

import math

from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest
from yiyun.hospital import catalogue
from yiyun.hospital.codes import ref_id

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance by the haversine formula (WGS-84 degrees in, km out)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _check_point(latitude, longitude) -> tuple[float, float] | None:
    if latitude is None and longitude is None:
        return None
    if latitude is None or longitude is None:
        raise BadRequest("经纬度须同时提供 (give both latitude and longitude)")
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise BadRequest("经纬度超出范围 (latitude/longitude out of range)")
    return latitude, longitude


async def find_fever_clinics(conn: AsyncConnection, *, latitude: float | None = None,
                             longitude: float | None = None) -> list[dict]:
    """Fever clinics of the region, nearest first when a position is given."""
    point = _check_point(latitude, longitude)
    out = []
    for t in await catalogue._tenants(conn):  # noqa: SLF001 (the module's own tenant list)
        d = await catalogue.load_directory(conn, t.slug)
        hospital = catalogue.hospital_summary(d)
        for sid, service in d.services.items():
            if not catalogue.is_fever_clinic(service):
                continue
            position = hospital["position"]
            item = {
                "hospital": d.slug,
                "hospital_name": hospital["name"],
                "service": sid,
                "name": service.get("name"),
                "address": hospital["address"],
                "phone": catalogue._phone(service) or hospital["phone"],  # noqa: SLF001
                "opening_hours": catalogue.opening_hours(service),
                "all_day": any(x.get("allDay") for x in service.get("availableTime") or []),
                "position": position,
                "location": ref_id((service.get("location") or [None])[0], "Location"),
                "distance_km": None,
            }
            if point and position and position.get("latitude") is not None:
                item["distance_km"] = round(distance_km(point[0], point[1], position["latitude"],
                                                        position["longitude"]), 2)
            out.append(item)
    out.sort(key=lambda x: (x["distance_km"] is None, x["distance_km"] or 0, x["hospital_name"]))
    return out
