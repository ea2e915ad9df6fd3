"""Cells for spreadsheets people open in Excel or WPS."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """Text that a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def unneutralise(text: str) -> str:
    """The text ``neutralise`` protected, back again (Siyu's own exports, imported back)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def is_masked_phone(text: str) -> bool:
    """A phone shown masked (``138****5678``): it no longer holds a number, only a hint of one."""
    return "****" in text
