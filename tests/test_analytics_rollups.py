"""The cohort rollup and the saved segments' kept funnel counts against the hand-written SQL and the live read."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.orm import Session

from siyu.analytics import rollups, segment_rollups, service, transitions
from siyu.analytics.models import SegmentRollup
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from tests.conftest import Factory
from tests.test_analytics import HAND_COHORTS, _added, _hand_funnel, local

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAYS = [date(2025, 12, 31) + timedelta(days=n) for n in range(0, 150, 7)]


def _ladder(db: Session, make: Factory, accounts: list[Any], customers: int = 30) -> list[Any]:
    rng = random.Random(29)
    made = [make.customer(accounts[i % len(accounts)]) for i in range(customers)]
    for customer in made:
        added = local(2026, 1, 1) + timedelta(hours=rng.randint(0, 24 * 80), minutes=rng.choice((0, 7, 59)))
        _added(db, customer, added)
        at, stage = added, "traffic"
        for _step in range(rng.randint(0, 4)):
            at += timedelta(hours=rng.randint(1, 24 * 40), minutes=rng.choice((0, 1, 59)))
            new = rng.choice([s for s in service.STAGES if s != stage])
            transitions.record(db, [(customer.id, stage, new)], at=at)
            stage = new
    db.commit()
    return made


def _hand_cohorts(db: Session, rows: list[service.CohortRow]) -> dict[int, tuple[int, ...]]:
    start = service.day_start(rows[-1].week).replace(tzinfo=None).isoformat(" ", "microseconds")
    end = service.day_start(rows[0].week + timedelta(weeks=1)).replace(tzinfo=None).isoformat(" ", "microseconds")
    hand_sql = HAND_COHORTS
    if db.get_bind().dialect.name == "postgresql":  # the same SQL with PostgreSQL's day arithmetic
        import re

        hand_sql = re.sub(r"julianday\(([^()]+)\)", r"(EXTRACT(EPOCH FROM \1) / 86400.0)",
                          HAND_COHORTS.replace("julianday(:start)",
                                               "(EXTRACT(EPOCH FROM CAST(:start AS timestamptz)) / 86400.0)"))
        hand_sql = hand_sql.replace("SELECT CAST((", "SELECT CAST(FLOOR((", 1).replace(
            ") / 7 AS INTEGER) AS week", ") / 7) AS INTEGER) AS week", 1)
        start, end = start + "+00:00", end + "+00:00"
    return {int(r[0]): tuple(int(v) for v in r[1:]) for r in db.execute(text(hand_sql), {"start": start, "end": end})}


def _cohorts_match(db: Session) -> None:
    rows = service.cohorts(db, viewer=SYSTEM, weeks=16, until=date(2026, 4, 6), now=NOW)
    mine = {15 - i: (r.added, *[r.reached[s][d] for s in service.STAGES[1:] for d in service.COHORT_DAYS])
            for i, r in enumerate(rows) if r.added}
    assert mine == _hand_cohorts(db, rows)
    # and the rollup answered, not the per-customer read
    assert rollups.cohort_cells(db, service.day_start(rows[-1].week), 16)


def test_the_cohort_rollup_follows_new_stages_a_merge_its_undo_and_the_rebuild(db: Session, make: Factory) -> None:
    from siyu.customers.merge import service as merge

    made = _ladder(db, make, [make.account()])
    _cohorts_match(db)
    record = merge.merge_customers(db, target_id=made[0].id, source_ids=[made[1].id, made[2].id], choices={},
                                   viewer=SYSTEM)
    db.commit()
    _cohorts_match(db)
    merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)
    db.commit()
    _cohorts_match(db)
    # A later stage change moves a customer's first time on a rung (their old window leaves, the new one comes).
    transitions.record(db, [(made[5].id, "traffic", "fan")], at=local(2026, 1, 2))
    db.commit()
    _cohorts_match(db)
    sizes = rollups.rebuild(db)
    db.commit()
    assert sizes["cohort"] > 0
    _cohorts_match(db)


def test_a_window_of_the_cohort_rollup_is_exact_to_the_microsecond() -> None:
    day = rollups.MICROSECONDS_A_DAY
    assert rollups.window_of(7 * day) == 7 and rollups.window_of(7 * day + 1) == 30
    assert rollups.window_of(90 * day) == 90 and rollups.window_of(90 * day + 1) is None
    assert rollups.window_of(None) is None and rollups.window_of(-5) == 7


def _segment(db: Session, account_id: int) -> int:
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn

    segment = segments_service.create_segment(db, data=SegmentIn.model_validate(
        {"name": "西湖店", "conditions": {"kind": "and", "conditions": [
            {"kind": "account", "account_ids": [account_id]}]}}), viewer=SYSTEM)
    db.commit()
    return segment.id


def _live(db: Session, segment_id: int, day: date) -> dict[str, int]:
    scope = service.Scope("segment", segment_id)
    clauses, drivers = service.customer_filter(db, scope=scope, viewer=SYSTEM)
    return service.funnel_for(db, clauses=clauses, day=day, drivers=drivers).current


HAND_SEGMENT = """
SELECT t.to_rank, count(*) FROM stage_transition t JOIN customer c ON c.id = t.customer_id
WHERE t.at < :end AND (t.until IS NULL OR t.until >= :end) AND c.created_at < :end AND c.merged_into_id IS NULL
  AND EXISTS (SELECT 1 FROM friendship f WHERE f.customer_id = c.id AND f.account_id = :account)
GROUP BY t.to_rank"""


def _hand_segment(db: Session, account_id: int, day: date) -> dict[str, int]:
    end: Any = service.day_start(day + timedelta(days=1))
    if db.get_bind().dialect.name != "postgresql":
        end = end.replace(tzinfo=None).isoformat(" ", "microseconds")
    counts = {int(r): int(n) for r, n in db.execute(text(HAND_SEGMENT), {"end": end, "account": account_id})}
    added = int(db.execute(text(
        "SELECT count(*) FROM customer c WHERE c.created_at < :end AND c.merged_into_id IS NULL AND EXISTS "
        "(SELECT 1 FROM friendship f WHERE f.customer_id = c.id AND f.account_id = :account)"),
        {"end": end, "account": account_id}).scalar_one())
    out = {stage: counts.get(rank, 0) for rank, stage in enumerate(service.STAGES)}
    out["traffic"] += added - sum(counts.values())
    return out


def test_a_saved_segments_kept_funnel_equals_the_live_read_and_the_hand_written_sql(
        db: Session, make: Factory) -> None:
    first, second = make.account(), make.account()
    _ladder(db, make, [first, second])
    segment_id = _segment(db, first.id)
    assert service.funnel(db, viewer=SYSTEM, day=DAYS[3], scope=service.Scope("segment", segment_id)).as_of is None
    assert segment_rollups.refresh_all(db) == {"segments": 1, "skipped": 0}
    db.commit()
    for day in DAYS:
        kept = service.funnel(db, viewer=SYSTEM, day=day, scope=service.Scope("segment", segment_id))
        assert kept.as_of is not None, day
        assert kept.current == _live(db, segment_id, day) == _hand_segment(db, first.id, day), day
        # the company's funnel is unchanged by it
        assert service.funnel(db, viewer=SYSTEM, day=day).current == _hand_funnel(db, day)


def test_a_kept_segment_funnel_is_not_read_after_a_merge_a_backdated_add_or_a_change_of_the_segment(
        db: Session, make: Factory) -> None:
    from siyu.customers.merge import service as merge

    account = make.account()
    made = _ladder(db, make, [account], customers=10)
    segment_id = _segment(db, account.id)
    scope = service.Scope("segment", segment_id)
    day = DAYS[10]

    def kept() -> bool:
        return service.funnel(db, viewer=SYSTEM, day=day, scope=scope).as_of is not None

    segment_rollups.refresh(db, segment_id)
    db.commit()
    assert kept()
    # today is after the counts were taken: read live
    assert service.funnel(db, viewer=SYSTEM, day=local_today() + timedelta(days=1), scope=scope).as_of is None
    record = merge.merge_customers(db, target_id=made[0].id, source_ids=[made[1].id], choices={}, viewer=SYSTEM)
    db.commit()
    assert not kept()
    assert service.funnel(db, viewer=SYSTEM, day=day, scope=scope).current == _hand_segment(db, account.id, day)
    merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)
    segment_rollups.refresh(db, segment_id)
    db.commit()
    assert kept()
    # an import adds a customer with an add date in the past: the counts do not know them
    late = make.customer(account)
    _added(db, late, local(2026, 1, 5))
    assert not kept()
    assert service.funnel(db, viewer=SYSTEM, day=day, scope=scope).current == _hand_segment(db, account.id, day)
    segment_rollups.refresh(db, segment_id)
    db.commit()
    assert kept()
    assert service.funnel(db, viewer=SYSTEM, day=day, scope=scope).current == _hand_segment(db, account.id, day)
    # counts older than two hours, or taken before the segment last changed, are not read
    db.execute(update(SegmentRollup).values(computed_at=datetime.now(UTC) - timedelta(hours=3)))
    db.commit()
    assert not kept()
    segment_rollups.refresh(db, segment_id)
    db.commit()
    from siyu.segments.models import Segment

    db.execute(update(Segment).where(Segment.id == segment_id).values(
        updated_at=datetime.now(UTC) + timedelta(minutes=1)))
    db.commit()
    assert not kept()



def test_the_page_and_the_api_say_when_a_segments_kept_funnel_was_taken(
        db: Session, make: Factory, client: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    from tests.test_pages import Console

    account = make.account()
    _ladder(db, make, [account], customers=4)
    segment_id = _segment(db, account.id)
    params = {"day": "2026-03-01", "scope": f"segment:{segment_id}"}
    live = client.get("/api/v1/analytics/funnel", headers=admin_headers, params=params).json()
    assert live["as_of"] is None
    segment_rollups.refresh(db, segment_id)
    db.commit()
    kept = client.get("/api/v1/analytics/funnel", headers=admin_headers, params=params).json()
    assert kept["as_of"] is not None and kept["current"] == live["current"]
    page = Console(client).login(admin).get("/analytics", params={"day": "2026-03-01", "segment_id": segment_id})
    assert page.status_code == 200 and "按 " in page.text and "时的分群成员统计" in page.text


def test_the_hourly_job_keeps_every_saved_segments_counts_and_skips_a_broken_one(
        db: Session, make: Factory) -> None:
    from siyu.analytics import jobs as analytics_jobs
    from siyu.segments.models import Segment

    account = make.account()
    _ladder(db, make, [account], customers=6)
    kept, broken = _segment(db, account.id), _segment(db, account.id)
    db.execute(update(Segment).where(Segment.id == broken).values(broken=True))
    db.commit()
    analytics_jobs.hourly_segment_rollups.call_local()
    db.expire_all()
    state = db.get(SegmentRollup, kept)
    assert state is not None and state.computed_at is not None and state.members == 6
    assert db.get(SegmentRollup, broken) is None
    day = DAYS[12]
    funnel = service.funnel(db, viewer=SYSTEM, day=day, scope=service.Scope("segment", kept))
    assert funnel.as_of is not None and funnel.current == _hand_segment(db, account.id, day)
