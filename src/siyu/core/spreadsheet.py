"""Cells for spreadsheets people open in Excel or WPS."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """Text that a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
