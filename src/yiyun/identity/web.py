"""Sign-in and account pages: staff password + TOTP, patient SMS codes, sessions, CSRF,
the development SMS outbox, and the administrators' reset of a lost second factor."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from yiyun.core.templating import render  # noqa: F401  (identity's pages import it from here)
from yiyun.identity.sessions import SessionAuthMiddleware, SignInRequired, signin_url


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    app.add_middleware(SessionAuthMiddleware)

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, exc: SignInRequired):
        return RedirectResponse(signin_url(exc.next_path, exc.patient), status_code=303)


    from yiyun.identity import second_factor_reset
    from yiyun.identity.signin import router

    app.include_router(router)
    second_factor_reset.install(app)
