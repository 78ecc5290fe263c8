"""Server-rendered pages: one Jinja2 environment for every module, with the request's locale.

Each module keeps its pages in `yiyun/<module>/templates/<module>/` and names a template by
that folder ("hospital/doctors.html"); all of them extend the page shell `web/base.html`.
The environment lives here, below every layer, so identity and the domain modules render
through the same code as the shell itself.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape

from yiyun.core.i18n import in_locale, negotiate, translations


# Context entries that carry a service's bilingual message to the page (see core.i18n.in_locale).
MESSAGE_KEYS = frozenset({"error", "notice", "message", "refusal"})


def template_packages() -> tuple[str, ...]:
    """The `yiyun` subpackages that hold a `templates/` folder, the page shell's first."""
    root = resources.files("yiyun")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.joinpath("templates").is_dir())
    return tuple(sorted(found, key=lambda name: name != "web"))


@lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(
        loader=ChoiceLoader([PackageLoader(f"yiyun.{pkg}", "templates") for pkg in template_packages()]),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )


def request_locale(request: Request) -> str:
    return negotiate(
        request.query_params.get("lang"), request.cookies.get("lang"), request.headers.get("accept-language")
    )


def render(request: Request, template: str, *, status_code: int = 200, headers: dict[str, str] | None = None,
           **context) -> HTMLResponse:
    """Render a page. Every template also gets `current_user` (the signed-in user:
    `.display_name`, `.username`, `.tenant_name`, `.context` the AuthContext; None when nobody
    is signed in, looked up by the session middleware) and `csrf_token` (put it in every
    POST form as `csrf_token`). `?lang=` is remembered in a cookie."""
    locale = request_locale(request)
    env = environment()
    env.install_gettext_translations(translations(locale), newstyle=True)
    for key in MESSAGE_KEYS.intersection(context):
        context[key] = in_locale(context[key], locale)
    user = getattr(request.state, "yiyun_signed_in", None)
    context.setdefault("current_user", user)
    context.setdefault("csrf_token", user.session.csrf_token if user else "")
    html = env.get_template(template).render(
        request=request, locale=locale, html_lang="zh-CN" if locale == "zh_CN" else "en", **context
    )
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    if request.query_params.get("lang"):
        response.set_cookie("lang", locale, max_age=365 * 24 * 3600, samesite="lax")
    return response
