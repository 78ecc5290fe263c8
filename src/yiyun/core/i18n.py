"""Translations through Babel: zh-CN by default, English available.

Message ids are English; `core/locale/zh_CN/LC_MESSAGES/messages.po` and each module's
`<module>/locale/zh_CN/LC_MESSAGES/*.po` hold the Chinese. The
catalogue is compiled in memory at first use, so no build step is needed.
"""

from __future__ import annotations

import io
import re
from functools import lru_cache
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

SUPPORTED = ("zh_CN", "en")
DEFAULT = "zh_CN"


def catalogue_files(locale: str) -> list:
    """Every `.po` file of `locale` in the package: core's first, then each module's own
    (`yiyun/<module>/locale/<locale>/LC_MESSAGES/*.po`), so modules keep their own
    messages and a message id defined twice takes the first definition."""
    root = resources.files("yiyun")
    found = []
    for pkg in ["core", *sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "core")]:
        folder = root.joinpath(pkg, "locale", locale, "LC_MESSAGES")
        if folder.is_dir():
            found.extend(sorted((f for f in folder.iterdir() if f.name.endswith(".po")), key=lambda f: f.name))
    return found


@lru_cache(maxsize=8)
def translations(locale: str) -> NullTranslations:
    if locale == "en":
        return NullTranslations()
    merged = None
    for po in catalogue_files(locale):
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=locale)
        if merged is None:
            merged = catalog
            continue
        for message in catalog:
            if message.id and message.id not in merged:
                merged[message.id] = message
    if merged is None:
        return NullTranslations()
    buf = io.BytesIO()
    write_mo(buf, merged)
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


# Service messages are written "中文说明 (English)" so that one text serves an API caller in
# either language; a page shows only the part in its own language.
_BILINGUAL = re.compile(r"^(?P<zh>.*[\u3400-\u9fff].*?)\s*[(（](?P<en>[\x20-\x7e]+)[)）]\s*$", re.S)


def in_locale(message: str, locale: str) -> str:
    """The part of a bilingual "中文 (English)" message for `locale`; other text unchanged."""
    m = _BILINGUAL.match(message) if isinstance(message, str) else None
    if m is None:
        return message
    return m.group("en").strip() if locale == "en" else m.group("zh").strip()
