"""CORS for SMART apps running in a browser (https://fetch.spec.whatwg.org/#http-cors-protocol).

A browser app on its own origin calls the token endpoint and the FHIR API with `fetch`;
the browser lets it read the answers only when they name its origin. This middleware:

- answers preflights (OPTIONS with `Access-Control-Request-Method`) and adds
  `Access-Control-Allow-Origin: <origin>` (with `Vary: Origin`) to the answers of
  `/fhir/R4/...`, `/oauth2/token`, `/oauth2/revoke` and `/oauth2/introspect` for **allowed
  origins**: the origins (scheme://host[:port], http and https only) of the redirect URIs of
  active registered OAuth clients, and those listed in `YIYUN_CORS_ORIGINS`;
- answers the public documents (`/.well-known/...` discovery, `/oauth2/jwks`) to any
  origin with `*`: they hold nothing an app must be registered to read, and an app reads
  them before anything else;
- never sends `Access-Control-Allow-Credentials`, and **removes the cookies of every
  cross-origin request** to those paths before anything reads them: cross-origin callers
  are authenticated by their bearer token only, so a signed-in user's session can never
  be used, or its answers read, by another site (OWASP HTML5 Security Cheat Sheet, CORS:
  "don't allow credentials with wildcard or reflected origins"); the own pages' requests
  (same origin) keep their cookie.

A request is same-origin when the browser says so (`Sec-Fetch-Site: same-origin`), when its
`Origin` names the `Host` it was sent to, or when it is the public base URL's origin
(`YIYUN_BASE_URL`, for servers behind a proxy that rewrites `Host`).

The clients' origins are read from `oauth_client` at most every `TTL_S` seconds per process
and at once after a client is registered or disabled in this process.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from sqlalchemy import select

from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings

log = get_logger("yiyun.oauth")

TTL_S = 30.0
FHIR_PREFIX = "/fhir/R4"
# Endpoints a browser app calls with its token or its client_id; none reads cookies.
TOKEN_PATHS = frozenset({"/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"})
# Public metadata: any origin may read it.
PUBLIC_PATHS = frozenset({"/oauth2/jwks"})
WELL_KNOWN = "/.well-known/"
FHIR_METHODS = b"GET, POST, PUT, PATCH, DELETE"
TOKEN_METHODS = b"POST"
PUBLIC_METHODS = b"GET"
# Request headers a FHIR client sends (https://hl7.org/fhir/R4/http.html: conditional
# requests, Prefer) besides the CORS-safelisted ones.
ALLOW_HEADERS = (b"Authorization, Content-Type, Accept, Accept-Language, Prefer, If-Match, If-None-Match, "
                 b"If-None-Exist, If-Modified-Since, X-Request-Id")
# Response headers a FHIR client reads (version, new resource's address, async polling).
EXPOSE_HEADERS = b"Location, Content-Location, ETag, Last-Modified, WWW-Authenticate, X-Request-Id, X-Progress, Retry-After"
MAX_AGE = b"600"

_cache: dict[str, tuple[float, frozenset[str]]] = {}  # database URL → (valid until, client origins)


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, lower-case, default port dropped; else None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def configured_origins() -> frozenset[str]:
    """`YIYUN_CORS_ORIGINS`: comma- or space-separated origins (`*` is refused: see the docstring)."""
    raw = get_settings().cors_origins or ""
    out = set()
    for item in raw.replace(",", " ").split():
        origin = origin_of(item)
        if origin is None:
            log.warning("cors_origin_ignored", value=item[:200])
        else:
            out.add(origin)
    return frozenset(out)


def origins_changed() -> None:
    """A client was registered or disabled: read the clients' origins again."""
    _cache.clear()


async def client_origins() -> frozenset[str]:
    """Origins of the redirect URIs of the active registered clients (cached `TTL_S`)."""
    from yiyun.core.db import get_engine, unit_of_work
    from yiyun.identity.oauth_tables import oauth_client

    engine = get_engine()
    key = str(engine.url)
    hit = _cache.get(key)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    out = set()
    try:
        async with unit_of_work(engine, write=False) as conn:
            rows = await conn.execute(select(oauth_client.c.redirect_uris).where(oauth_client.c.status == "active"))
            for (uris,) in rows:
                for uri in json.loads(uris or "[]"):
                    origin = origin_of(uri) if isinstance(uri, str) else None
                    if origin:
                        out.add(origin)
    except Exception as exc:  # noqa: BLE001 - no database: allow only the configured origins for now
        log.warning("cors_origins_unreadable", error=str(exc)[:200])
        return frozenset()
    value = frozenset(out)
    _cache[key] = (now + TTL_S, value)
    return value


async def is_allowed(origin: str) -> bool:
    normal = origin_of(origin)
    if normal is None:
        return False
    return normal in configured_origins() or normal in await client_origins()


def _kind(path: str) -> str | None:
    if path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/"):
        return "public" if path.startswith(FHIR_PREFIX + WELL_KNOWN) else "fhir"
    if path in TOKEN_PATHS:
        return "token"
    if path in PUBLIC_PATHS or path.startswith(WELL_KNOWN):
        return "public"
    return None


def same_origin(headers: dict[bytes, bytes], origin: str) -> bool:
    if headers.get(b"sec-fetch-site", b"").lower() == b"same-origin":
        return True
    host = headers.get(b"host", b"").decode("latin-1").lower()
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    if host and netloc == host:
        return True
    return origin_of(origin) == origin_of(get_settings().base_url)


def _without_cookies(scope) -> dict:
    return {**scope, "headers": [(k, v) for k, v in scope.get("headers") or () if k != b"cookie"]}


class BrowserAppCors:
    """ASGI middleware implementing the rules of the module docstring. Installed outside the
    session middleware, so a cross-origin request's cookies are gone before it looks."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        kind = _kind(scope.get("path", "")) if scope["type"] == "http" else None
        if kind is None:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        raw_origin = headers.get(b"origin")
        if raw_origin is None:
            return await self.app(scope, receive, send)
        origin = raw_origin.decode("latin-1")
        if same_origin(headers, origin):
            return await self.app(scope, receive, send)
        scope = _without_cookies(scope)
        allow = b"*" if kind == "public" else (raw_origin if await is_allowed(origin) else None)
        if scope.get("method") == "OPTIONS" and b"access-control-request-method" in headers:
            return await self._preflight(send, kind, allow)
        extra = [(b"vary", b"Origin")]
        if allow is not None:
            extra += [(b"access-control-allow-origin", allow), (b"access-control-expose-headers", EXPOSE_HEADERS)]

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-")]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    async def _preflight(send, kind: str, allow: bytes | None) -> None:
        """204 naming the origin, methods and headers; an origin not allowed gets 403 without
        them, so the browser stops there."""
        methods = {"fhir": FHIR_METHODS, "token": TOKEN_METHODS}.get(kind, PUBLIC_METHODS)
        headers = [(b"vary", b"Origin"), (b"content-length", b"0")]
        if allow is not None:
            headers += [(b"access-control-allow-origin", allow), (b"access-control-allow-methods", methods),
                        (b"access-control-allow-headers", ALLOW_HEADERS), (b"access-control-max-age", MAX_AGE)]
        await send({"type": "http.response.start", "status": 204 if allow is not None else 403, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
