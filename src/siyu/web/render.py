"""Jinja2 rendering shared by every domain's pages: layout, i18n, filters, CSRF token."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, FileSystemLoader

from siyu.core import i18n
from siyu.core.security import new_csrf_token
from siyu.core.settings import local_zone

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DOMAIN_TEMPLATE_DIRS = sorted(p for p in PACKAGE_DIR.glob("*/templates") if p.parent.name != "web")
DOMAIN_TEMPLATE_DIRS += sorted(PACKAGE_DIR.glob("*/*/templates"))  # sub-domains (groups/moderation)
TEMPLATE_DIRS = [PACKAGE_DIR / "web" / "templates", *DOMAIN_TEMPLATE_DIRS]


def localtime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "—"
    return value.astimezone(local_zone()).strftime(fmt)


def relative_time(value: datetime | None) -> str:
    if value is None:
        return i18n._("never")
    from siyu.core.db import utcnow

    seconds = (utcnow() - value).total_seconds()
    if seconds < 60:
        return i18n._("just now")
    if seconds < 3600:
        return i18n._("{n} min ago", n=int(seconds // 60))
    if seconds < 86400:
        return i18n._("{n} h ago", n=int(seconds // 3600))
    return i18n._("{n} days ago", n=int(seconds // 86400))


def approximate(value: int) -> str:
    """A large count for people: two significant digits, in 万/亿 for Chinese ("约 12 万")."""
    if value < 100:
        return str(value)
    digits = len(str(value)) - 2
    rounded = round(value, -digits)
    if i18n.get_locale() == "zh-CN":
        for unit, size in (("亿", 100_000_000), ("万", 10_000)):
            if rounded >= size:
                amount = rounded / size
                return f"{amount:g} {unit}"
    return f"{rounded:,}"


def pretty_json(value: Any) -> str:
    """JSON for people (audit before/after): indented, Chinese readable; autoescaping still applies."""
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def safe_href(url: str | None) -> str | None:
    """A user-supplied link only when it is http(s) or on this site — never javascript:, data: etc."""
    url = (url or "").strip()
    if url.lower().startswith(("http://", "https://")) or (url.startswith("/") and not url.startswith("//")):
        return url
    return None


def _build_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATE_DIRS[0]))
    templates.env.loader = ChoiceLoader([FileSystemLoader(str(d)) for d in TEMPLATE_DIRS])
    templates.env.globals["_"] = i18n.gettext
    templates.env.globals["get_locale"] = i18n.get_locale
    templates.env.filters["localtime"] = localtime
    templates.env.filters["ago"] = relative_time
    templates.env.filters["prettyjson"] = pretty_json
    templates.env.filters["approximate"] = approximate
    templates.env.filters["safe_href"] = safe_href
    from siyu.customers.sources import source_label  # customer sources in words (issue 21)

    templates.env.filters["source_label"] = source_label
    return templates


templates = _build_templates()


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = new_csrf_token()
        request.session["csrf"] = token
    return str(token)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("user", getattr(request.state, "user", None))
    context["request"] = request
    context["csrf_token"] = csrf_token(request)
    context["nav_active"] = context.get("nav_active", "")
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def render_error(request: Request, status_code: int, message: str) -> HTMLResponse:
    if request.headers.get("hx-request") == "true":
        return templates.TemplateResponse(
            request, "partials/error_alert.html", {"message": message, "status_code": status_code},
            status_code=status_code)
    return render(request, "error.html", status_code=status_code, message=message, title=str(status_code))
