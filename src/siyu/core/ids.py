"""Ids as the API accepts them: whole numbers the database can hold, nothing else.

Every table's id is an ``INTEGER`` column, and PostgreSQL's ``INTEGER`` holds at most
2,147,483,647 (https://www.postgresql.org/docs/current/datatype-numeric.html). An id outside
1…that is refused with a 422 naming the field before any query runs, instead of overflowing
the driver (SQLite cannot even bind a Python int above 2^63 − 1). ``Id`` bounds path, query and
body ids in one place; ``parse_id`` reads an id typed into a console form or query string.
"""

from __future__ import annotations

from typing import Annotated

import annotated_types

MAX_ID = 2_147_483_647  # PostgreSQL INTEGER's largest value (see the module docstring)

Id = Annotated[int, annotated_types.Ge(1), annotated_types.Le(MAX_ID)]


def parse_id(text: str) -> int | None:
    """The id written in ``text`` (ASCII digits, surrounding spaces allowed), or None.

    ``str.isdigit`` is not enough: it accepts ``²`` and other digits ``int()`` rejects.
    """
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def parse_count(text: str, *, default: int) -> int:
    """A count written in ``text`` (0 or more, ASCII digits), or ``default`` when it is not one."""
    text = text.strip()
    if text == "0":
        return 0
    value = parse_id(text)
    return default if value is None else value
