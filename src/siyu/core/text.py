"""Text that arrives from people, made safe to store: the one rule for names.

A NUL character shows as nothing, cannot be typed on purpose, and PostgreSQL refuses it in
text columns (the request failed with 500). Every name a person gives — users, accounts,
customers, tags, tag groups, custom fields, channels, promoters, rules — is a ``Name``, which
drops NUL characters before the field's own checks run (a name of NULs alone is then empty,
and refused as empty).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def without_nul(value: object) -> object:
    return value.replace("\x00", "") if isinstance(value, str) else value


NoNul = BeforeValidator(without_nul)
Name = Annotated[str, NoNul]
