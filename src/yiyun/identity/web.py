"""Sign-in and account pages: staff password + TOTP, patient SMS codes, sessions, CSRF,
the development SMS outbox."""

from __future__ import annotations

from functools import lru_cache

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from yiyun.identity.sessions import SessionAuthMiddleware, SignInRequired, signin_url


@lru_cache(maxsize=1)
def _environment():
    # The page shell (`web/base.html`) is loaded by package name: identity sits below
    # `yiyun.web` in the layers, so it renders with its own environment over the same folders.
    from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape

    return Environment(loader=ChoiceLoader([PackageLoader(f"yiyun.{p}", "templates") for p in ("identity", "web")]),
                       autoescape=select_autoescape(["html"]), extensions=["jinja2.ext.i18n"])


def render(request: Request, template: str, **context) -> HTMLResponse:
    """As `yiyun.web.templating.render`, for identity's pages: the request's locale,
    `current_user` and `csrf_token` in every template."""
    from yiyun.core.i18n import negotiate, translations

    locale = negotiate(request.query_params.get("lang"), request.cookies.get("lang"),
                       request.headers.get("accept-language"))
    env = _environment()
    env.install_gettext_translations(translations(locale), newstyle=True)
    user = getattr(request.state, "yiyun_signed_in", None)
    context.setdefault("current_user", user)
    context.setdefault("csrf_token", user.session.csrf_token if user else "")
    html = env.get_template(template).render(request=request, locale=locale,
                                             html_lang="zh-CN" if locale == "zh_CN" else "en", **context)
    response = HTMLResponse(html)
    if request.query_params.get("lang"):
        response.set_cookie("lang", locale, max_age=365 * 24 * 3600, samesite="lax")
    return response


def install(app: FastAPI) -> None:
    """Mount this module's routes on `app` (called once by the composition root)."""
    app.add_middleware(SessionAuthMiddleware)

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, exc: SignInRequired):
        return RedirectResponse(signin_url(exc.next_path, exc.patient), status_code=303)


    from yiyun.identity.signin import router

    app.include_router(router)
