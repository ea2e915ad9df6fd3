"""The one translation layer: ``_("English source text")`` → text in the current locale.

Catalogues are keyed by the English source text: ``siyu/locales/<locale>.json`` for
shared text plus ``siyu/<domain>/locales/<locale>.json`` for each domain's own text,
merged at load (one message id must not appear in two files). English needs no catalogue.
The locale of a request is set by middleware from the user's choice (cookie) or the
``SIYU_LOCALE`` default. A test checks that every ``_()`` literal in the code and
templates has a Chinese translation.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

SUPPORTED_LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
LOCALES_DIR = PACKAGE_DIR / "locales"

_current_locale: ContextVar[str] = ContextVar("siyu_locale", default=DEFAULT_LOCALE)


def catalogue_files(locale: str) -> list[Path]:
    shared = LOCALES_DIR / f"{locale}.json"
    domains = sorted(PACKAGE_DIR.glob(f"*/locales/{locale}.json"))
    domains += sorted(PACKAGE_DIR.glob(f"*/*/locales/{locale}.json"))  # sub-domains (groups/moderation)
    return ([shared] if shared.exists() else []) + domains


@lru_cache
def catalogue(locale: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in catalogue_files(locale):
        merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


def normalise_locale(value: str | None) -> str:
    if value in SUPPORTED_LOCALES:
        return value
    return DEFAULT_LOCALE


def set_locale(locale: str) -> None:
    _current_locale.set(normalise_locale(locale))


def get_locale() -> str:
    return _current_locale.get()


def gettext(message: str, /, **params: Any) -> str:
    text = catalogue(get_locale()).get(message, message)
    return text.format(**params) if params else text


def mark(message: str, /) -> str:
    """Marks a message id for translation where it is defined; translated later with ``_()``."""
    return message


_ = gettext
N_ = mark
