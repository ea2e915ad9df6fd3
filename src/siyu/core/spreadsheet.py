"""Cells for spreadsheets people open in Excel or WPS."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A formula behind leading blanks (" =1+1", "\n=1") is one too: a spreadsheet or a tidy-up that trims the
# cell turns it back into a live formula. (Full-width and no-break spaces as well, to be safe.)
LEADING_BLANKS = " \t\r\n\u00a0\u3000"


def looks_like_formula(text: str) -> bool:
    return text.startswith(FORMULA_STARTS) or text.lstrip(LEADING_BLANKS).startswith(FORMULA_STARTS)


def neutralise(text: str) -> str:
    """Text that a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    return "'" + text if looks_like_formula(text) else text


def unneutralise(text: str) -> str:
    """The text ``neutralise`` protected, back again (Siyu's own exports, imported back)."""
    return text[1:] if text.startswith("'") and looks_like_formula(text[1:]) else text


def is_masked_phone(text: str) -> bool:
    """A phone shown masked (``138****5678``): it no longer holds a number, only a hint of one."""
    return "****" in text
