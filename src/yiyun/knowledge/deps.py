"""FastAPI dependencies of the knowledge routes: who may call, rate limits, the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import Forbidden, YiyunError
from yiyun.knowledge.ratelimit import get_limiter

STAFF_ROLE_HEADER = "X-Yiyun-Role"
STAFF_USER_HEADER = "X-Yiyun-User"


class TooManyRequests(YiyunError):
    status, code = 429, "throttled"


@dataclass(frozen=True)
class Staff:
    name: str


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def rate_limited(request: Request) -> None:
    """Public routes: a token bucket per client IP."""
    limiter = get_limiter()
    if limiter is None:
        return
    allowed, wait = limiter.take(client_key(request))
    if not allowed:
        raise TooManyRequests("请求过于频繁，请稍后再试", headers={"Retry-After": str(max(1, round(wait)))})


async def require_staff(request: Request) -> Staff:
    """Editor and review routes are for clinical staff only.

    Until the identity module provides signed-in subjects, a development header
    `X-Yiyun-Role: staff` marks a staff caller and `X-Yiyun-User` names them (attribution).
    """
    if request.headers.get(STAFF_ROLE_HEADER, "").strip().lower() != "staff":
        raise Forbidden("仅限医务人员使用")
    # header values are Latin-1 on the wire, so a Chinese name arrives percent-encoded
    name = unquote(request.headers.get(STAFF_USER_HEADER, "")).strip()[:100] or "staff"
    return Staff(name=name)


async def get_connection() -> AsyncIterator[AsyncConnection]:
    """One unit of work per request on the platform database."""
    from yiyun.core.db import get_engine, unit_of_work

    async with unit_of_work(get_engine()) as conn:
        yield conn
