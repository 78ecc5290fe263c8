"""Translations through Babel: zh-CN by default, English available.

Message ids are English; `locale/zh_CN/LC_MESSAGES/messages.po` holds the Chinese. The
catalogue is compiled in memory at first use, so no build step is needed.
"""

from __future__ import annotations

import io
from functools import lru_cache
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

SUPPORTED = ("zh_CN", "en")
DEFAULT = "zh_CN"


@lru_cache(maxsize=8)
def translations(locale: str) -> NullTranslations:
    if locale == "en":
        return NullTranslations()
    po = resources.files("yiyun.core").joinpath(f"locale/{locale}/LC_MESSAGES/messages.po")
    if not po.is_file():
        return NullTranslations()
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


def negotiate(query_lang: str | None, cookie_lang: str | None, accept_language: str | None) -> str:
    """?lang= beats the cookie, which beats the browser; Chinese when nothing says otherwise."""
    for choice in (query_lang, cookie_lang):
        if choice:
            norm = choice.replace("-", "_")
            if norm in SUPPORTED:
                return norm
            if norm.lower().startswith("en"):
                return "en"
            if norm.lower().startswith("zh"):
                return "zh_CN"
    if accept_language:
        first = accept_language.split(",")[0].strip().lower()
        if first.startswith("en"):
            return "en"
    return DEFAULT


def gettext(locale: str, message: str) -> str:
    return translations(locale).gettext(message)
