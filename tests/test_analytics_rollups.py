"""The cohort rollup and the saved segments' kept funnel counts against the hand-written SQL and the live read."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.orm import Session

from siyu.analytics import rollups, segment_rollups, service, transitions
from siyu.analytics.models import SegmentRollup
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from tests.conftest import Factory
from tests.test_analytics import _added, _hand_funnel, hand_cohorts, local

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


def _cohorts_match(db: Session) -> None:
    rows = service.cohorts(db, viewer=SYSTEM, weeks=16, until=date(2026, 4, 6), now=NOW)
    mine = {15 - i: (r.added, *[r.reached[s][d] for s in service.STAGES[1:] for d in service.COHORT_DAYS])
            for i, r in enumerate(rows) if r.added}
    assert mine == hand_cohorts(db, rows)
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
    # its save enqueued the refresh (run at once by the tests' queue): kept already
    assert service.funnel(db, viewer=SYSTEM, day=DAYS[3], scope=service.Scope("segment", segment_id)).as_of
    assert segment_rollups.refresh_all(db) == {"segments": 1, "skipped": 0}
    db.commit()
    for day in DAYS:
        kept = service.funnel(db, viewer=SYSTEM, day=day, scope=service.Scope("segment", segment_id))
        assert kept.as_of is not None, day
        assert kept.current == _live(db, segment_id, day) == _hand_segment(db, first.id, day), day
        # the company's funnel is unchanged by it
        assert service.funnel(db, viewer=SYSTEM, day=day).current == _hand_funnel(db, day)


def test_a_kept_segment_funnel_is_not_read_after_a_merge_a_backdated_add_or_a_change_of_the_segment(
        db: Session, make: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.core import jobs
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
    monkeypatch.setattr(jobs, "enqueue_after_commit", lambda *args, **kwargs: None)  # no job: see it cleared
    record = merge.merge_customers(db, target_id=made[0].id, source_ids=[made[1].id], choices={}, viewer=SYSTEM)
    db.commit()
    assert not kept()
    assert service.funnel(db, viewer=SYSTEM, day=day, scope=scope).current == _hand_segment(db, account.id, day)
    assert segment_rollups.cleared_segment_ids(db) == [segment_id]
    monkeypatch.undo()
    merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)
    db.commit()
    # the undo cleared them too, and its job (run at once here) built them again: a lookup, no :25 wait
    db.expire_all()
    assert kept() and segment_rollups.cleared_segment_ids(db) == []
    assert service.funnel(db, viewer=SYSTEM, day=day, scope=scope).current == _hand_segment(db, account.id, day)
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
    assert service.funnel(db, viewer=SYSTEM, day=day, scope=scope).refreshing



def test_the_page_and_the_api_say_when_a_segments_kept_funnel_was_taken(
        db: Session, make: Factory, client: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    from tests.test_pages import Console

    account = make.account()
    _ladder(db, make, [account], customers=4)
    segment_id = _segment(db, account.id)
    params = {"day": "2026-03-01", "scope": f"segment:{segment_id}"}
    db.execute(delete(SegmentRollup))  # as before its first refresh
    db.commit()
    live = client.get("/api/v1/analytics/funnel", headers=admin_headers, params=params).json()
    assert live["as_of"] is None and live["refreshing"] is True
    console = Console(client).login(admin)
    page = console.get("/analytics", params={"day": "2026-03-01", "segment_id": segment_id})
    assert "分群已修改，统计正在重新计算，当前为实时数据" in page.text
    segment_rollups.refresh(db, segment_id)
    db.commit()
    kept = client.get("/api/v1/analytics/funnel", headers=admin_headers, params=params).json()
    assert kept["as_of"] is not None and kept["current"] == live["current"]
    page = console.get("/analytics", params={"day": "2026-03-01", "segment_id": segment_id})
    assert page.status_code == 200 and "按 " in page.text and "时的分群成员及阶段统计" in page.text
    assert "非实时" in page.text and "正在重新计算" not in page.text


def test_the_hourly_job_keeps_every_saved_segments_counts_and_skips_a_broken_one(
        db: Session, make: Factory) -> None:
    from siyu.analytics import jobs as analytics_jobs
    from siyu.segments.models import Segment

    account = make.account()
    _ladder(db, make, [account], customers=6)
    kept, broken = _segment(db, account.id), _segment(db, account.id)
    db.execute(update(Segment).where(Segment.id == broken).values(broken=True))
    db.execute(delete(SegmentRollup))  # what their saves kept: the hourly job's own run is measured
    db.commit()
    analytics_jobs.hourly_segment_rollups.call_local()
    db.expire_all()
    state = db.get(SegmentRollup, kept)
    assert state is not None and state.computed_at is not None and state.members == 6
    assert db.get(SegmentRollup, broken) is None
    day = DAYS[12]
    funnel = service.funnel(db, viewer=SYSTEM, day=day, scope=service.Scope("segment", kept))
    assert funnel.as_of is not None and funnel.current == _hand_segment(db, account.id, day)


# ---------------------------------------------------------------- today, a save's refresh, a scoped viewer


def _tag_segment(db: Session, tag_id: int) -> int:
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn

    segment = segments_service.create_segment(db, data=SegmentIn.model_validate(
        {"name": "白领", "conditions": {"kind": "and", "conditions": [{"kind": "tag", "tag_ids": [tag_id]}]}}),
        viewer=SYSTEM)
    db.commit()
    return segment.id


HAND_TAGGED = """
SELECT coalesce(t.to_rank, 0), count(*) FROM customer c
LEFT JOIN stage_transition t ON t.customer_id = c.id AND t.at < :end AND (t.until IS NULL OR t.until >= :end)
WHERE c.created_at < :end AND c.merged_into_id IS NULL
  AND EXISTS (SELECT 1 FROM customer_tag ct WHERE ct.customer_id = c.id AND ct.tag_id = :tag)
  AND EXISTS (SELECT 1 FROM friendship f WHERE f.customer_id = c.id AND f.account_id IN ({accounts}))
GROUP BY coalesce(t.to_rank, 0)"""


def _hand_tagged(db: Session, tag_id: int, day: date, account_ids: list[int]) -> dict[str, int]:
    """The tag's customers on each stage at the end of ``day`` (those of these accounts), by hand."""
    end: Any = service.day_start(day + timedelta(days=1))
    if db.get_bind().dialect.name != "postgresql":
        end = end.replace(tzinfo=None).isoformat(" ", "microseconds")
    sql = HAND_TAGGED.format(accounts=", ".join(str(int(a)) for a in account_ids))
    counts = {int(r): int(n) for r, n in db.execute(text(sql), {"end": end, "tag": tag_id})}
    return {stage: counts.get(rank, 0) for rank, stage in enumerate(service.STAGES)}


def _tag(db: Session, customer: Any, tag_id: int) -> None:
    from siyu.customers import service as customers_service

    customers_service.set_customer_tags(db, customer_id=customer.id, viewer=SYSTEM,
                                        add=customers_service.get_tags(db, tag_ids=[tag_id]), remove=[])
    db.commit()


def test_todays_funnel_of_a_saved_segment_is_its_kept_counts_as_of_when_they_were_taken(
        db: Session, make: Factory, client: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    from tests.test_pages import Console, tag_id

    account = make.account()
    made = _ladder(db, make, [account], customers=12)
    white = tag_id(db, "人群", "白领")
    for customer in made[:8]:
        _tag(db, customer, white)
    segment_id = _tag_segment(db, white)
    scope = service.Scope("segment", segment_id)
    today = local_today()
    state = db.get(SegmentRollup, segment_id)
    assert state is not None and state.computed_at is not None  # the save's refresh
    found = service.funnel(db, viewer=SYSTEM, day=today, scope=scope)
    assert found.as_of == rollups.as_utc(state.computed_at) and not found.refreshing
    assert found.current == _hand_tagged(db, white, today, [account.id]) and found.total == 8
    # the page's default date and the API's: today, with as_of
    answer = client.get("/api/v1/analytics/funnel", headers=admin_headers,
                        params={"scope": f"segment:{segment_id}"}).json()
    assert answer["day"] == today.isoformat() and answer["as_of"] is not None and answer["current"] == found.current
    page = Console(client).login(admin).get("/analytics", params={"segment_id": segment_id})
    assert page.status_code == 200 and "时的分群成员及阶段统计" in page.text and "非实时" in page.text
    # A tag given and a stage moved after the counts were taken are not in them until the next refresh —
    # the funnel is the members and stages as of ``as_of`` — nor is a customer added since.
    _tag(db, made[9], white)
    rank = db.execute(text("SELECT to_rank FROM stage_transition WHERE customer_id = :c AND until IS NULL"),
                      {"c": made[0].id}).scalar()
    now_on = service.STAGES[rank] if rank is not None else "traffic"
    transitions.record(db, [(made[0].id, now_on, "user" if now_on == "fan" else "fan")], at=datetime.now(UTC))
    _tag(db, make.customer(account), white)
    db.commit()
    after = service.funnel(db, viewer=SYSTEM, day=today, scope=scope)
    assert after.as_of == found.as_of and after.current == found.current
    live = _hand_tagged(db, white, today, [account.id])
    assert sum(live.values()) == 10 and live != found.current
    segment_rollups.refresh(db, segment_id)
    db.commit()
    refreshed = service.funnel(db, viewer=SYSTEM, day=today, scope=scope)
    assert refreshed.as_of is not None and refreshed.as_of > after.as_of  # type: ignore[operator]
    assert refreshed.current == live
    # a customer imported since with an add date in the past: the counts miss them, read live
    late = make.customer(account)
    _tag(db, late, white)
    _added(db, late, local(2026, 1, 5))
    assert service.funnel(db, viewer=SYSTEM, day=today, scope=scope).as_of is None
    assert service.funnel(db, viewer=SYSTEM, day=today, scope=scope).current == _hand_tagged(
        db, white, today, [account.id])


def test_saving_a_segment_refreshes_its_counts_so_its_funnel_is_kept_at_once(
        db: Session, make: Factory, client: Any, admin_headers: dict[str, str]) -> None:
    first, second = make.account(), make.account()
    _ladder(db, make, [first, second], customers=16)
    day = DAYS[8]

    def funnel(segment_id: int) -> dict[str, Any]:
        response = client.get("/api/v1/analytics/funnel", headers=admin_headers,
                              params={"day": day.isoformat(), "scope": f"segment:{segment_id}"})
        assert response.status_code == 200, response.text
        return dict(response.json())

    created = client.post("/api/v1/segments", headers=admin_headers, json={
        "name": "西湖店", "conditions": {"kind": "and", "conditions": [
            {"kind": "account", "account_ids": [first.id]}]}})
    assert created.status_code == 201, created.text
    segment_id = created.json()["id"]
    answer = funnel(segment_id)
    assert answer["as_of"] is not None and answer["refreshing"] is False
    assert answer["current"] == _hand_segment(db, first.id, day)
    db.expire_all()
    taken = rollups.as_utc(db.get(SegmentRollup, segment_id).computed_at)  # type: ignore[union-attr]
    # an edit: counts of the new conditions, kept again (not the old ones, not a live read)
    edited = client.patch(f"/api/v1/segments/{segment_id}", headers=admin_headers, json={
        "conditions": {"kind": "and", "conditions": [{"kind": "account", "account_ids": [second.id]}]}})
    assert edited.status_code == 200, edited.text
    answer = funnel(segment_id)
    assert answer["as_of"] is not None and answer["as_of"] > taken.isoformat()  # type: ignore[union-attr]
    assert answer["current"] == _hand_segment(db, second.id, day) != _hand_segment(db, first.id, day)


def test_a_viewer_who_sees_some_accounts_gets_their_share_of_a_segment_read_live(
        db: Session, make: Factory, client: Any, token_for: Any) -> None:
    from tests.conftest import viewer_of
    from tests.test_pages import tag_id

    first, second = make.account(), make.account()
    made = _ladder(db, make, [first, second], customers=20)
    white = tag_id(db, "人群", "白领")
    for customer in made[::2] + made[1:8:2]:
        _tag(db, customer, white)
    segment_id = _tag_segment(db, white)
    operator = make.user("operator", accounts=[first])
    headers = token_for(operator)
    for day in (DAYS[9], local_today()):
        mine = service.funnel(db, viewer=viewer_of(operator), day=day, scope=service.Scope("segment", segment_id))
        assert mine.as_of is None and not mine.refreshing  # the kept counts are everyone's: read live
        assert mine.current == _hand_tagged(db, white, day, [first.id])
        everyone = service.funnel(db, viewer=SYSTEM, day=day, scope=service.Scope("segment", segment_id))
        assert everyone.as_of is not None and everyone.current == _hand_tagged(db, white, day, [first.id, second.id])
        assert mine.total < everyone.total
        answer = client.get("/api/v1/analytics/funnel", headers=headers,
                            params={"day": day.isoformat(), "scope": f"segment:{segment_id}"}).json()
        assert answer["as_of"] is None and answer["current"] == mine.current


def test_taking_a_static_segments_snapshot_again_refreshes_its_counts(
        db: Session, make: Factory, client: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    made = _ladder(db, make, [account], customers=6)
    created = client.post("/api/v1/segments", headers=admin_headers, json={
        "name": "西湖店·名单", "mode": "static", "conditions": {"kind": "and", "conditions": [
            {"kind": "account", "account_ids": [account.id]}]}})
    assert created.status_code == 201, created.text
    segment_id = created.json()["id"]
    params = {"day": DAYS[12].isoformat(), "scope": f"segment:{segment_id}"}
    assert client.get("/api/v1/analytics/funnel", headers=admin_headers, params=params).json()["as_of"]
    made_later = [make.customer(account) for _ in range(2)]  # not members until the snapshot is taken again
    for customer in made_later:
        _added(db, customer, local(2026, 1, 3))
    db.execute(delete(SegmentRollup))
    db.commit()
    snapshot = client.post(f"/api/v1/segments/{segment_id}/snapshot", headers=admin_headers)
    assert snapshot.status_code == 200, snapshot.text
    answer = client.get("/api/v1/analytics/funnel", headers=admin_headers, params=params).json()
    assert answer["as_of"] is not None
    assert answer["current"] == _hand_segment(db, account.id, DAYS[12])
    assert sum(answer["current"].values()) == len(made) + 2
