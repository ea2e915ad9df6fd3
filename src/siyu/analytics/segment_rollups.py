"""Saved segments' funnels for any date as a lookup: per segment, ``stage_count_delta`` for its members.

A segment's funnel otherwise reads each member's valid transition (``service.funnel_for``): hundreds of
thousands of index probes for a big segment. Every hour a job (``jobs.segment_rollups``) compiles each
saved segment once — the customer list's filter, hence the one segment compiler — and writes, in one
set-based statement, how its members' counts change per UTC hour (rank 0: added; 1–3: on the rung).
The funnel reads them (a sum over a few thousand rows) when they answer exactly what the live read
would have answered when they were computed:

* the whole segment for a viewer who sees every account, at an hour-aligned instant (local midnight);
* computed within ``FRESH`` (two hours), after the segment was last changed, with no merge or undo since
  (``rollups.forget_segments``) and no customer added since with an add date before the date or
  ``computed_at`` (``customer_watermark``: imports may backdate).

A date that ends after ``computed_at`` — today, the page's default — is answered as of ``computed_at``.
What the counts do not see: customers added, stages moved, tags, owners or other facts that changed
since ``computed_at`` and move customers in or out of a dynamic segment — the funnel is the segment's
members and their stages as of then, at most ``FRESH`` old, and ``Funnel.as_of`` (the page, the API's
``as_of``) says so. Saving a segment (``segments.service``) enqueues its refresh
(``jobs.refresh_segment_rollup``) after the commit, so a new or edited segment has kept counts seconds
later; until then its funnel reads live and says the counts are being computed (``Funnel.refreshing``).
A viewer who sees only some accounts and account or operator scopes read live (their customers only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, literal_column, select, text, union_all
from sqlalchemy.orm import Session

from siyu.analytics import rollups
from siyu.analytics.models import SegmentRollup, SegmentStageDelta, StageTransition
from siyu.analytics.service import Scope, customer_filter
from siyu.core.db import utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer
from siyu.segments.models import Segment

FRESH = rollups.SEGMENT_FRESH
_DELTA = cast(Table, SegmentStageDelta.__table__)
LOCK_KEY = 5601  # pg_advisory_xact_lock(LOCK_KEY, segment id): one refresh of a segment at a time


def refresh(session: Session, segment_id: int, *, now: datetime | None = None) -> int:
    """Rebuild one segment's counts from its members now; how many members it has (−1: it is broken)."""
    now = now or utcnow()
    try:
        clauses, drivers = customer_filter(session, scope=Scope("segment", segment_id), viewer=SYSTEM)
    except (NotFound, Invalid):  # gone, or broken (a tag or account it names was deleted)
        return -1
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":  # the save's refresh and the hourly job's, one after the other (not both rows)
        session.execute(text("SELECT pg_advisory_xact_lock(:key, :segment)"), {"key": LOCK_KEY, "segment": segment_id})
    watermark = int(session.scalar(select(func.max(Customer.id))) or 0)
    members = select(Customer.id.label("cid"), Customer.created_at.label("created")).where(
        *clauses, *drivers).cte("m")
    t = cast(Table, StageTransition.__table__).alias("t")
    start = rollups._greatest(dialect, "t.at", "m.created")
    end = rollups._greatest(dialect, "t.until", start)

    def hour(expression: str) -> Any:
        return literal_column(rollups._hour_sql(dialect, expression)).label("h")

    joined = members.join(t, t.c.customer_id == members.c.cid)
    parts = union_all(
        select(hour("m.created"), literal_column("0").label("r"), literal_column("1").label("n")).select_from(members),
        select(hour(start), t.c.to_rank.label("r"), literal_column("1").label("n")).select_from(joined)
        .where(t.c.to_rank >= 1),
        select(hour(end), t.c.to_rank.label("r"), literal_column("-1").label("n")).select_from(joined)
        .where(t.c.to_rank >= 1, t.c.until.is_not(None)),
    ).subquery("d")
    connection = session.connection()
    connection.execute(delete(_DELTA).where(_DELTA.c.segment_id == segment_id))
    connection.execute(insert(_DELTA).from_select(
        ["segment_id", "hour", "rank", "n"],
        select(literal_column(str(int(segment_id))), parts.c.h, parts.c.r, func.sum(parts.c.n))
        .group_by(parts.c.h, parts.c.r).having(func.sum(parts.c.n) != 0)))
    size = int(session.scalar(select(func.sum(_DELTA.c.n)).where(
        _DELTA.c.segment_id == segment_id, _DELTA.c.rank == 0)) or 0)
    state = session.get(SegmentRollup, segment_id) or SegmentRollup(segment_id=segment_id)
    state.computed_at, state.members, state.customer_watermark = now, size, watermark
    session.add(state)
    session.flush()
    return size


def saved_segment_ids(session: Session) -> list[int]:
    """The saved segments whose counts the hourly job keeps: every one that is not broken."""
    return list(session.scalars(select(Segment.id).where(Segment.broken.is_(False)).order_by(Segment.id)))


def cleared_segment_ids(session: Session) -> list[int]:
    """Saved segments whose counts a merge or its undo cleared (``rollups.forget_segments``)."""
    return list(session.scalars(select(SegmentRollup.segment_id).join(Segment, Segment.id == SegmentRollup.segment_id)
                                .where(SegmentRollup.computed_at.is_(None), Segment.broken.is_(False))
                                .order_by(SegmentRollup.segment_id)))


def refresh_all(session: Session, *, now: datetime | None = None) -> dict[str, int]:
    """Every saved segment that is not broken, one after another, in this session's transaction."""
    done = skipped = 0
    for segment_id in saved_segment_ids(session):
        if refresh(session, segment_id, now=now) < 0:
            skipped += 1
        else:
            done += 1
    return {"segments": done, "skipped": skipped}
