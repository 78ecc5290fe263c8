"""The page shell's rendering: the shared environment in `yiyun.core.templating`."""

from __future__ import annotations

from yiyun.core.templating import environment, render, request_locale, template_packages

__all__ = ["environment", "render", "request_locale", "template_packages"]
