"""Saved segments: create, change, preview (live count and sample), snapshot, and "broken".

A segment's conditions are compiled by ``segments.compiler`` through the customer list's own
filter (``customers.service.CustomerFilter(segment_id=…)`` or ``(conditions=…)``), so its count,
its list, its export and a bulk action over it are the same query, scoped to the viewer's
accounts. Saving compiles the tree once: a tree naming a deleted tag or field is refused. A
saved segment that later meets a deletion is marked broken with the reason when it is read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, delete, func, insert, literal, select
from sqlalchemy.orm import Session

from siyu.core import jobs
from siyu.core.db import utcnow
from siyu.core.errors import Forbidden, NotFound
from siyu.core.i18n import _
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import Customer
from siyu.customers.service import CountResult, CustomerFilter
from siyu.segments.compiler import SegmentBroken, compile_tree
from siyu.segments.models import Segment, SegmentMember, SegmentMode
from siyu.segments.schemas import ConditionGroup, SegmentIn, SegmentUpdate
from siyu.team import service as team_service

SAMPLE_SIZE = 10


class SegmentNotFound(NotFound):
    pass


def list_segments(session: Session, *, viewer: Viewer) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(Segment.id.desc())))


def get_segment(session: Session, *, segment_id: int, viewer: Viewer) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise SegmentNotFound("Segment not found")
    return segment


def _may_change(segment: Segment, viewer: Viewer) -> None:
    if not viewer.is_admin and segment.owner_id != viewer.user_id:
        raise Forbidden("Only the segment's owner or an admin may change it")


def _validated(session: Session, tree: ConditionGroup, viewer: Viewer) -> dict[str, Any]:
    compile_tree(session, tree, viewer=viewer)  # refuses deleted tags, fields, … and other accounts
    return tree.model_dump(mode="json")


def create_segment(session: Session, *, data: SegmentIn, viewer: Viewer) -> Segment:
    segment = Segment(name=data.name.strip(), conditions=_validated(session, data.conditions, viewer),
                      mode=data.mode.value, owner_id=viewer.user_id, broken=False, broken_reason="")
    session.add(segment)
    session.flush()
    if segment.mode == SegmentMode.static.value:
        take_snapshot(session, segment=segment, viewer=viewer)
    team_service.record_audit(session, actor=viewer, action="create", entity_type="segment", entity_id=segment.id,
                              summary=segment.name, after={"conditions": segment.conditions, "mode": segment.mode})
    _refresh_funnel_counts(session, segment)
    return segment


REFRESH_FUNNEL_COUNTS = "analytics.jobs.refresh_segment_rollup"


def _refresh_funnel_counts(session: Session, segment: Segment) -> None:
    """The segment's funnel counts (``analytics.segment_rollups``) are computed once this commits, not at the
    next hourly run: until then its funnel reads live. Once per transaction (a save that also takes a
    snapshot asks twice); by name: no import of the analytics jobs here."""
    jobs.cancel_after_commit(session, REFRESH_FUNNEL_COUNTS, segment.id)
    jobs.enqueue_after_commit(session, REFRESH_FUNNEL_COUNTS, segment.id)


def update_segment(session: Session, *, segment_id: int, data: SegmentUpdate, viewer: Viewer) -> Segment:
    segment = get_segment(session, segment_id=segment_id, viewer=viewer)
    _may_change(segment, viewer)
    before = {"name": segment.name, "conditions": segment.conditions, "mode": segment.mode}
    if data.name is not None:
        segment.name = data.name.strip()
    if data.conditions is not None:
        segment.conditions = _validated(session, data.conditions, viewer)
        segment.broken, segment.broken_reason = False, ""
    if data.mode is not None:
        segment.mode = data.mode.value
    session.flush()
    if segment.mode == SegmentMode.static.value and (data.conditions is not None or data.mode is not None):
        take_snapshot(session, segment=segment, viewer=viewer)
    team_service.record_audit(session, actor=viewer, action="update", entity_type="segment", entity_id=segment.id,
                              summary=segment.name, before=before,
                              after={"name": segment.name, "conditions": segment.conditions, "mode": segment.mode})
    _refresh_funnel_counts(session, segment)
    return segment


def delete_segment(session: Session, *, segment_id: int, viewer: Viewer) -> None:
    segment = get_segment(session, segment_id=segment_id, viewer=viewer)
    _may_change(segment, viewer)
    team_service.record_audit(session, actor=viewer, action="delete", entity_type="segment", entity_id=segment.id,
                              summary=segment.name)
    session.delete(segment)


def check_segment(session: Session, *, segment: Segment, viewer: Viewer) -> None:
    """Compile a saved segment now; a deletion it meets marks it broken (committed) and is raised.

    The caller's transaction is committed here on purpose: the broken flag must survive the error.
    """
    try:
        compile_tree(session, _tree(segment), viewer=viewer)
    except SegmentBroken as exc:
        segment.broken, segment.broken_reason = True, exc.message[:255]
        session.commit()
        raise


def _tree(segment: Segment) -> ConditionGroup:
    from siyu.segments.schemas import parse_tree

    return parse_tree(segment.conditions)


def segment_filter(segment: Segment, **changes: Any) -> CustomerFilter:
    return CustomerFilter(segment_id=segment.id, **changes)


def take_snapshot(session: Session, *, segment: Segment, viewer: Viewer) -> int:
    """A static segment's members: everyone its conditions match now, as this viewer may see them."""
    flt = CustomerFilter(conditions=segment.conditions)
    clauses = customers_service._filter_clauses(session, flt, viewer)
    session.execute(delete(SegmentMember).where(SegmentMember.segment_id == segment.id))
    session.execute(insert(SegmentMember).from_select(
        ["segment_id", "customer_id"], select(literal(segment.id, Integer()), Customer.id).where(*clauses)))
    count = int(session.scalar(select(func.count()).select_from(SegmentMember)
                               .where(SegmentMember.segment_id == segment.id)) or 0)
    segment.snapshot_at, segment.snapshot_count = utcnow(), count
    _refresh_funnel_counts(session, segment)  # new members: new counts
    return count


def preview(session: Session, *, conditions: ConditionGroup, viewer: Viewer,
            sample: int = SAMPLE_SIZE) -> tuple[CountResult, list[Customer]]:
    """The live count (exact up to the list's cap, then an estimate) and the first customers."""
    flt = CustomerFilter(conditions=conditions.model_dump(mode="json"))
    count = customers_service.count_customers(session, flt=flt, viewer=viewer,
                                              cap=get_settings().list_exact_count_limit)
    page = customers_service.list_customers(session, flt=flt, viewer=viewer, limit=sample)
    return count, page.items


def broken_message(segment: Segment) -> str:
    return _("This segment is broken: {reason}", reason=segment.broken_reason) if segment.broken else ""
