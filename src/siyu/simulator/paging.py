"""The simulator's opaque cursors (WeCom's ``next_cursor``), shared by the corp and its desks."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from siyu.simulator.errors import ApiError

R = TypeVar("R")


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sim:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: Any) -> int:
    """An opaque cursor back to an offset; anything not made here is WeCom's 50100."""
    if cursor in (None, ""):
        return 0
    try:
        text = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4)).decode()
        prefix, _sep, number = text.partition(":")
        if prefix != "sim" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(50100, "invalid cursor") from exc


def page(items: Sequence[R], cursor: Any, limit: int) -> tuple[list[R], str]:
    start = decode_cursor(cursor)
    chunk = list(items[start:start + limit])
    return chunk, encode_cursor(start + limit) if start + limit < len(items) else ""
