"""The audit trail for auditors and patients (AuditEvent, audit page, who saw my record)
and security events from abuse signals.

`install(app)` mounts the routes (`yiyun.identity.audit_api`: FHIR AuditEvent and the JSON
API; `yiyun.identity.audit_pages`: `/audit`, `/audit/security-events`, `/me/access-log`),
refuses AuditEvent writes on every door of the FHIR store, records refused requests, and
runs the security scan in the background when `YIYUN_SECURITY_SCAN_SECONDS` > 0.

Refused requests (GB/T 22239-2019 8.1.4.3 安全审计: record security-relevant events,
including failed access): the FHIR access policy already records 403 and 404 of token
holders and the AuditEvent routes record their own refusals. What nobody else sees is
recorded here, from the response status of `/fhir/R4` and `/api` requests:

- 401 with a bearer token: `token-rejected`, outcome `denied`, in the token's tenant when
  its signature holds (expired), else in the default tenant's chain with the claimed tenant
  and subject in `detail`; 401 with an unknown or timed-out session cookie: `session-rejected`;
- 400, 405, 406, 413, 415, 422 and 431: `request-refused` (bad input, oversized bodies,
  malformed JSON, writes to read-only resources);
- 403 outside the FHIR API (role checks of the JSON API, CSRF refusals).

Bodies over YIYUN_MAX_BODY_BYTES are refused here with 413 for every route outside the FHIR
API (which limits its own bodies): the JSON API and the pages' forms.
"""

from __future__ import annotations

import asyncio
import base64
import os

import orjson
from fastapi import FastAPI

from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings
from yiyun.fhir.hooks import register_write_hook
from yiyun.fhir.model import RequestContext

log = get_logger("yiyun.audit")

REFUSED = frozenset({400, 405, 406, 413, 415, 422, 431})


def scan_interval() -> float:
    """Seconds between background security scans (0: none; run `yiyun security scan`)."""
    try:
        return max(float(os.environ.get("YIYUN_SECURITY_SCAN_SECONDS", "0") or 0), 0.0)
    except ValueError:
        return 0.0


def _unverified_claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return data if isinstance(data, dict) else {}
    except Exception:  # noqa: BLE001 - garbage is expected here
        return {}


def _signed_claims(token: str) -> dict | None:
    """The claims of a token whose signature holds (however expired), else None."""
    from joserfc import jwt
    from joserfc.jwk import OctKey

    from yiyun.identity.keys import signing_key

    try:
        return dict(jwt.decode(token, OctKey.import_key(signing_key()), algorithms=["HS256"]).claims)
    except Exception:  # noqa: BLE001 - forged, malformed, wrong algorithm
        return None


def _context_for(scope, headers: dict[str, str]) -> tuple[RequestContext, dict]:
    """Who sent a refused request, as far as can be told without trusting it."""
    client = scope.get("client")
    address = client[0] if client else None
    state = scope.get("state") or {}
    known = state.get("auth_context")
    if known is None and isinstance(state.get("yiyun_session_auth"), RequestContext):
        known = state["yiyun_session_auth"]
    if known is None and getattr(state.get("yiyun_signed_in"), "context", None) is not None:
        known = state["yiyun_signed_in"].context  # a signed-in session refused for its CSRF token
    if known is not None:
        return known, {}
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    default = get_settings().default_tenant
    if scheme.lower() == "bearer" and token.strip():
        from yiyun.core.errors import Unauthorized
        from yiyun.identity.auth import claims_for, context_from_claims

        token = token.strip()
        try:
            return context_from_claims(claims_for(token), base_url="", client_address=address), {}
        except Unauthorized:
            pass
        signed = _signed_claims(token)
        if signed and signed.get("tenant") and signed.get("sub"):
            ctx = RequestContext(tenant=str(signed["tenant"])[:64], subject=str(signed["sub"])[:256],
                                 client_address=address)
            return ctx, {"credential": "bearer", "token": "expired"}
        claimed = _unverified_claims(token)
        detail = {"credential": "bearer", "token": "invalid"}
        for k in ("tenant", "sub", "alg"):
            if isinstance(claimed.get(k), str):
                detail[f"claimed_{k}"] = claimed[k][:64]
        return RequestContext(tenant=default, subject="anonymous", client_address=address), detail
    if "yiyun_session" in headers.get("cookie", ""):
        return RequestContext(tenant=default, subject="anonymous", client_address=address), {"credential": "session"}
    return RequestContext(tenant=default, subject="anonymous", client_address=address), {}


class AuditGuardMiddleware:
    """Records refused requests and runs the periodic security scan (see the module's docstring)."""

    def __init__(self, app) -> None:
        self.app = app
        self.task: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, self._lifespan_receive(receive), send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        fhir = path.startswith("/fhir/R4")
        recorded = fhir or path.startswith("/api/")
        status: list[int] = []

        async def send_status(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            if fhir:  # the FHIR API limits bodies itself, answering with an OperationOutcome
                await self.app(scope, receive, send_status)
            else:
                await self._limited(scope, receive, send_status if recorded else send)
        finally:
            if status and recorded:
                try:
                    await self._record_refusal(scope, path, status[0])
                except Exception:  # never turn a refusal into a 500
                    log.exception("refusal_not_recorded", path=path[:200])

    async def _limited(self, scope, receive, send) -> None:
        """Run the route with the body limit of YIYUN_MAX_BODY_BYTES (see `_limit_body`)."""
        receive, send, state = self._limit_body(scope, receive, send)
        if state["hit"]:  # Content-Length already says too much: the route never runs
            await state["answer"]()
            return
        try:
            await self.app(scope, receive, send)
        except Exception:
            if not state["hit"]:
                raise
            log.info("body_too_large", path=scope.get("path", "")[:200])  # the route saw the cut-off body
        if state["hit"] and not state["sent"]:
            await state["answer"]()

    def _limit_body(self, scope, receive, send):
        """Answer 413 to a body over YIYUN_MAX_BODY_BYTES: at once when Content-Length says so,
        else as soon as the streamed body passes it (the route then sees a disconnect and its
        answer is replaced by the 413)."""
        limit = get_settings().max_body_bytes
        body = orjson.dumps({"detail": f"请求体超过上限 {limit} 字节 (body too large)", "code": "too-costly"})
        state = {"hit": False, "sent": False}

        async def answer():
            state["sent"] = True
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        state["answer"] = answer
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            state["hit"] = True
        received = 0

        async def limited_receive():
            nonlocal received
            if state["hit"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    state["hit"] = True
                    return {"type": "http.disconnect"}
            return message

        async def limited_send(message):
            if state["hit"]:
                if not state["sent"] and message["type"] == "http.response.start":
                    await answer()
                return  # the route's own answer to the cut-off body is dropped
            await send(message)

        return limited_receive, limited_send, state

    async def _record_refusal(self, scope, path: str, status: int) -> None:
        fhir = path.startswith("/fhir/R4")
        if status == 401:
            action = "token-rejected"
        elif status in REFUSED:
            action = "request-refused"
        elif status == 403 and (not fhir or (scope.get("state") or {}).get("yiyun_session_auth") == "csrf"):
            action = "request-refused"
        else:
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctx, detail = _context_for(scope, headers)
        if action == "token-rejected" and not detail.get("credential") and ctx.subject == "anonymous":
            return  # no credential at all: nothing was attempted
        if action == "token-rejected" and detail.get("credential") == "session":
            # An unknown or timed-out session cookie: mostly a browser left open past its
            # session (256-bit ids cannot be guessed), so it does not count as a failed sign-in.
            action = "session-rejected"
        query = scope.get("query_string", b"").decode("latin-1")
        detail = {**detail, "method": scope.get("method"), "path": path[:200], "status": status}
        if query:
            detail["query"] = query[:500]
        recorder = scope["app"].state.policy.recorder
        await recorder.record(None, ctx, action, None, None, "denied", detail)

    def _lifespan_receive(self, receive):
        async def wrapped():
            message = await receive()
            if message["type"] == "lifespan.startup":
                seconds = scan_interval()
                if seconds > 0:
                    from yiyun.core.db import get_engine
                    from yiyun.identity.security_events import run_periodically

                    self.task = asyncio.get_running_loop().create_task(run_periodically(get_engine, seconds))
            elif message["type"] == "lifespan.shutdown" and self.task is not None:
                self.task.cancel()
                try:
                    await self.task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
                self.task = None
            return message

        return wrapped


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    from yiyun.identity import audit_api, audit_pages

    app.include_router(audit_api.router)
    app.include_router(audit_pages.router)
    register_write_hook("AuditEvent", audit_api.refuse_audit_event_writes)
    app.add_middleware(AuditGuardMiddleware)
