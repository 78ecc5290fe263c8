"""Jinja2 environment shared by every module's pages, with the request's locale."""

from __future__ import annotations

from functools import lru_cache

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape

from yiyun.core.i18n import negotiate, translations


# Packages whose `templates/<package>/` folders hold pages rendered with the shared shell
# (`web/base.html`); a template is named by its folder, e.g. "hospital/doctors.html".
TEMPLATE_PACKAGES = ("web", "identity", "hospital")


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=ChoiceLoader([PackageLoader(f"yiyun.{pkg}", "templates") for pkg in TEMPLATE_PACKAGES]),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )
    return env


def request_locale(request: Request) -> str:
    return negotiate(
        request.query_params.get("lang"), request.cookies.get("lang"), request.headers.get("accept-language")
    )


def render(request: Request, template: str, **context) -> HTMLResponse:
    """Render a page. Every template also gets `current_user` (the signed-in user:
    `.display_name`, `.username`, `.tenant_name`, `.context` the AuthContext; None when nobody
    is signed in) and `csrf_token` (put it in every POST form as `csrf_token`)."""
    locale = request_locale(request)
    env = environment()
    tr = translations(locale)
    template_obj = env.get_template(template)
    env.install_gettext_translations(tr, newstyle=True)
    user = getattr(request.state, "yiyun_signed_in", None)  # looked up by the session middleware
    context.setdefault("current_user", user)
    context.setdefault("csrf_token", user.session.csrf_token if user else "")
    html = template_obj.render(request=request, locale=locale, html_lang="zh-CN" if locale == "zh_CN" else "en", **context)
    response = HTMLResponse(html)
    if request.query_params.get("lang"):
        response.set_cookie("lang", locale, max_age=365 * 24 * 3600, samesite="lax")
    return response
