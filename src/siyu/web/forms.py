"""Form plumbing every console page shares: reading a form, and answering bad input at the field.

A page route reads its form through ``FormDep`` (with room for over-long text, so that it reaches
validation and is answered with the field named instead of Starlette's bare 400) and turns a
pydantic ``ValidationError`` or a ``DomainError`` into ``{field: sentence}`` with ``field_errors``,
each sentence naming the field by the label the page shows (``labels``) in the viewer's language.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import ValidationError
from starlette.datastructures import FormData

from siyu.core.errors import DomainError, validation_message
from siyu.core.i18n import _

# Starlette refuses a form field over 1 MB with a bare 400. The console reads its forms with
# more room so that an over-long text reaches validation and is answered with the field named.
FORM_MAX_FIELD_BYTES = 16 * 1024 * 1024


async def read_form(request: Request) -> FormData:
    return await request.form(max_part_size=FORM_MAX_FIELD_BYTES)


FormRead = Depends(read_form)
FormDep = Annotated[FormData, FormRead]


def field_label(name: str, custom_labels: dict[str, str] | None = None,
                 labels: dict[str, str] | None = None) -> str:
    if name.startswith(("custom.", "custom_fields.")):
        key = name.split(".", 1)[1]
        return (custom_labels or {}).get(key, key)
    base = name.split(".", 1)[0]
    return _((labels or {}).get(base, base))


def _error_text(error: Any) -> str:
    """One pydantic error as a sentence in the console's language."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "string_too_long":
        length = len(value) if isinstance(value, str) else 0
        return _("Too long: at most {max} characters (this has {n})", max=ctx.get("max_length"), n=length)
    if kind in ("string_too_short", "missing") or (kind == "too_short" and isinstance(value, str)):
        return _("Required")  # a Name (core/text.py) reports its min_length as too_short
    if kind == "string_pattern_mismatch":
        return _("Invalid format")
    if kind == "too_long":
        return _("Too many entries (at most {max})", max=ctx.get("max_length"))
    if kind in ("int_parsing", "decimal_parsing", "float_parsing", "int_type", "decimal_type"):
        return _("Must be a number")
    if kind in ("greater_than_equal", "greater_than"):
        return _("Must be at least {min}", min=ctx.get("ge", ctx.get("gt")))
    if kind in ("less_than_equal", "less_than"):
        return _("Must be at most {max}", max=ctx.get("le", ctx.get("lt")))
    if kind == "enum":
        return _("Not one of the allowed values")
    return validation_message(error)


def field_errors(exc: ValidationError | DomainError, *, custom_labels: dict[str, str] | None = None,
                 default_field: str = "form", labels: dict[str, str] | None = None) -> dict[str, str]:
    """Errors keyed by form field: ``{"description": "描述：太长……"}``. The message names the field."""
    errors: dict[str, str] = {}
    if isinstance(exc, DomainError):
        name = exc.field or default_field
        errors[name.replace("custom_fields.", "custom.")] = exc.message
        return errors
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
        name = ".".join(loc) or default_field
        name = name.replace("custom_fields.", "custom.")
        if name in errors:
            continue
        errors[name] = _("{field}: {message}", field=field_label(name, custom_labels, labels),
                         message=_error_text(error))
    return errors
