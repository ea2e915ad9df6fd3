"""The customer list's filter as query parameters: the list, exports, bulk actions, the console and
the CLI read the same ones (``filter_from_params``; ``FilterDep`` for an API route)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query

from siyu.core.ids import Id, parse_id
from siyu.customers.service import CustomerFilter


def filter_from_params(
    q: str = "",
    tag: Annotated[list[str] | None, Query()] = None,
    stage: str | None = None,
    account_id: Id | None = None,
    source: str | None = None,
    last_touch_before: datetime | None = None,
    last_touch_after: datetime | None = None,
    sort: str = "last_touch",
    segment: Id | None = None,
    rfm: str | None = None,
) -> CustomerFilter:
    """Tags may be given by id or by name (``标签`` or ``组:标签``); the console and API share this."""
    tags = [t.strip() for t in (tag or []) if t and t.strip()]
    return CustomerFilter(
        q=q[:200], tag_ids=[i for t in tags if (i := parse_id(t)) is not None],
        tag_names=[t for t in tags if parse_id(t) is None],
        stage=stage or None, account_id=account_id, source=source or None, last_touch_before=last_touch_before,
        last_touch_after=last_touch_after, sort=sort, segment_id=segment, rfm=rfm or None)


# The list's filter as query parameters; the list, exports and bulk actions read the same ones.
FilterDep = Annotated[CustomerFilter, Depends(filter_from_params)]
