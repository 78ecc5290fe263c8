"""Keeping the bearer check's set of revoked token ids current.

The bearer check (`yiyun.identity.auth.claims_for`) stays free of database queries: it
looks up a token's `jti` and `grant` in an in-process map of revoked ids. A revocation in
this process updates the map at once; revocations by other processes are read from
`oauth_revoked` at most once a second (`REFRESH_S`), only by requests that carry a bearer
token, and only the rows revoked since the last read. So a revoked token stops working
in this process immediately and in every other process within about a second.
"""

from __future__ import annotations

import time

from yiyun.core.db import get_engine, unit_of_work
from yiyun.core.logging import get_logger
from yiyun.fhir.model import now_us
from yiyun.identity import auth
from yiyun.identity.oauth import grants

log = get_logger("yiyun.oauth")

REFRESH_S = 1.0
# Rows are read from a little before the last read: a revocation whose transaction began
# earlier but committed later still carries the earlier time, and the servers' clocks
# (kept by NTP) may differ by a few seconds.
OVERLAP_US = 30 * 1_000_000

_state: dict[str, tuple[float, int]] = {}  # database URL → (monotonic time of last read, revoked_ts read from)


def remember(token_id: str, expires_us: int) -> None:
    auth.REVOKED_TOKEN_IDS[token_id] = expires_us


def _prune() -> None:
    now = now_us()
    for key in [k for k, exp in auth.REVOKED_TOKEN_IDS.items() if exp <= now]:
        auth.REVOKED_TOKEN_IDS.pop(key, None)


async def refresh(force: bool = False) -> None:
    engine = get_engine()
    key = str(engine.url)
    last_read, since = _state.get(key, (0.0, 0))
    now_mono = time.monotonic()
    if not force and now_mono - last_read < REFRESH_S:
        return
    _state[key] = (now_mono, since)
    started = now_us()
    try:
        async with unit_of_work(engine, write=False) as conn:
            rows = await grants.revoked_since(conn, since)
    except Exception as exc:  # noqa: BLE001 - a database hiccup must not fail the request here
        _state[key] = (last_read, since)
        log.warning("revocation_refresh_failed", error=str(exc)[:200])
        return
    for token_id, expires in rows:
        remember(token_id, expires)
    _state[key] = (now_mono, max(0, started - OVERLAP_US))
    _prune()


class RevocationRefresh:
    """ASGI middleware: before a request with a bearer token, refresh the revoked ids."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for name, value in scope.get("headers") or ():
                if name == b"authorization" and value[:7].lower() == b"bearer ":
                    await refresh()
                    break
        await self.app(scope, receive, send)
