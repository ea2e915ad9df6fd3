"""Analytics: the ladder over time (transitions, funnel, cohorts, flows, churn), team performance,
WeCom behaviour data and the metrics API — against hand-computed fixtures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from siyu.analytics import service, transitions
from siyu.analytics.models import StageTransition
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Friendship
from tests.conftest import Factory, viewer_of
from tests.test_wecom_client import api, sim, sleeps  # noqa: F401  (fixtures)

SH = timedelta(hours=8)  # Asia/Shanghai, no daylight saving


def local(y: int, m: int, d: int, hh: int = 12, mm: int = 0) -> datetime:
    """A Shanghai wall-clock time as a UTC instant."""
    return datetime(y, m, d, hh, mm, tzinfo=UTC) - SH


def _added(db: Session, customer: Any, at: datetime) -> None:
    db.execute(update(Customer).where(Customer.id == customer.id).values(created_at=at))
    db.execute(update(Friendship).where(Friendship.customer_id == customer.id).values(added_at=at))
    db.execute(StageTransition.__table__.delete().where(StageTransition.customer_id == customer.id))
    db.commit()



def hand_cohorts(db: Session, rows: list[service.CohortRow]) -> dict[int, tuple[int, ...]]:
    """The cohort table of ``rows``' weeks by the hand-written SQL (``HAND_COHORTS``), on either database."""
    from sqlalchemy import text

    start = service.day_start(rows[-1].week).replace(tzinfo=None).isoformat(" ", "microseconds")
    end = service.day_start(rows[0].week + timedelta(weeks=1)).replace(tzinfo=None).isoformat(" ", "microseconds")
    hand_sql = HAND_COHORTS
    if db.get_bind().dialect.name == "postgresql":  # the same SQL with PostgreSQL's day arithmetic
        import re

        hand_sql = re.sub(r"julianday\(([^()]+)\)", r"(EXTRACT(EPOCH FROM \1) / 86400.0)",
                          HAND_COHORTS.replace("julianday(:start)",
                                               "(EXTRACT(EPOCH FROM CAST(:start AS timestamptz)) / 86400.0)"))
        hand_sql = hand_sql.replace("SELECT CAST((", "SELECT CAST(FLOOR((", 1).replace(
            ") / 7 AS INTEGER) AS week", ") / 7) AS INTEGER) AS week", 1)  # PostgreSQL's CAST rounds
        start, end = start + "+00:00", end + "+00:00"
    return {int(r[0]): tuple(int(v) for v in r[1:]) for r in db.execute(text(hand_sql), {"start": start, "end": end})}


def test_a_touch_records_the_stage_change_in_the_same_transaction(db: Session, make: Factory) -> None:
    account = make.account()
    customer = make.customer(account)
    assert db.scalars(select(StageTransition).where(StageTransition.customer_id == customer.id)).all() == []
    make.touch(customer, "chat")
    rows = db.scalars(select(StageTransition).where(StageTransition.customer_id == customer.id)).all()
    assert [(r.from_rank, r.to_rank, r.until) for r in rows] == [(0, 1, None)]


def test_funnel_on_a_day_counts_each_customer_on_the_stage_valid_at_the_end_of_that_day(
        db: Session, make: Factory) -> None:
    account = make.account()
    a, b, c = make.customer(account), make.customer(account), make.customer(account)
    for customer in (a, b, c):
        _added(db, customer, local(2026, 3, 1))
    _added(db, c, local(2026, 3, 10))  # c is added later
    transitions.record(db, [(a.id, "traffic", "user")], at=local(2026, 3, 5, 23, 59))
    transitions.record(db, [(a.id, "user", "customer")], at=local(2026, 3, 6, 0, 1))
    transitions.record(db, [(b.id, "traffic", "user")], at=local(2026, 3, 20))
    db.commit()
    day = lambda d: service.funnel(db, viewer=SYSTEM, day=d).current  # noqa: E731
    assert day(date(2026, 2, 28)) == {"traffic": 0, "user": 0, "customer": 0, "fan": 0}
    assert day(date(2026, 3, 4)) == {"traffic": 2, "user": 0, "customer": 0, "fan": 0}
    # 23:59 local counts on the 5th, 00:01 on the 6th
    assert day(date(2026, 3, 5)) == {"traffic": 1, "user": 1, "customer": 0, "fan": 0}
    assert day(date(2026, 3, 6)) == {"traffic": 1, "user": 0, "customer": 1, "fan": 0}
    assert day(date(2026, 3, 10)) == {"traffic": 2, "user": 0, "customer": 1, "fan": 0}
    funnel = service.funnel(db, viewer=SYSTEM, day=date(2026, 3, 25))
    assert funnel.current == {"traffic": 1, "user": 1, "customer": 1, "fan": 0}
    assert funnel.reached == {"traffic": 3, "user": 2, "customer": 1, "fan": 0}


# ---------------------------------------------------------------- WeCom behaviour data (W:96358)


def test_behaviour_data_is_fetched_per_member_and_an_unknown_member_is_recorded_not_a_crash(
        db: Session, make: Factory, sim: Any, api: Any) -> None:  # noqa: F811
    from siyu.analytics import behaviour
    from siyu.analytics.models import BehaviourState, MemberBehaviour

    members = [m.userid for m in sim.corp.state.members[:2]]
    known = [make.account(wecom_userid=userid) for userid in members]
    stranger = make.account(wecom_userid="nobody-here")
    today = datetime.now(UTC).astimezone(service.local_zone()).date()
    result = behaviour.fetch(db, api=api, since=today - timedelta(days=3), until=today - timedelta(days=1))
    db.commit()
    assert result.members == 3 and result.unknown == ["nobody-here"]
    assert sim.calls("externalcontact/get_user_behavior_data") == 3  # one call per member: never summed
    rows = db.scalars(select(MemberBehaviour).order_by(MemberBehaviour.account_id, MemberBehaviour.day)).all()
    assert len(rows) == 9
    mine = [r for r in rows if r.account_id == known[0].id]
    single = api.member_behaviour(members[0], start_time=int(service.day_start(today - timedelta(days=3)).timestamp()),
                                  end_time=int(service.day_start(today - timedelta(days=1)).timestamp()))
    assert [r.chat_cnt for r in mine] == [row["chat_cnt"] for row in single]
    assert {r.state for r in rows if r.account_id == stranger.id} == {BehaviourState.unknown_member}
    assert {r.errcode for r in rows if r.account_id == stranger.id} == {60111}
    # a second run replaces the days, never duplicates them
    behaviour.fetch(db, api=api, since=today - timedelta(days=3), until=today - timedelta(days=1))
    db.commit()
    assert len(db.scalars(select(MemberBehaviour)).all()) == 9


def test_the_simulator_refuses_a_span_over_30_days_and_an_unknown_member_as_wecom_does(
        sim: Any, api: Any) -> None:  # noqa: F811
    from siyu.wecom.client import WecomApiError

    userid = sim.corp.state.members[0].userid
    now = int(datetime.now(UTC).timestamp())
    with pytest.raises(WecomApiError) as span:
        api.more.get_user_behavior_data([userid], now - 40 * 86400, now)
    assert span.value.errcode == 600018
    with pytest.raises(WecomApiError) as old:
        api.more.get_user_behavior_data([userid], now - 200 * 86400, now - 190 * 86400)
    assert old.value.errcode == 600018
    with pytest.raises(WecomApiError) as unknown:
        api.member_behaviour("ghost", start_time=now - 86400, end_time=now)
    assert unknown.value.errcode == 60111
    both = api.more.get_user_behavior_data([m.userid for m in sim.corp.state.members[:2]], now - 86400, now)
    one = [api.member_behaviour(m.userid, start_time=now - 86400, end_time=now) for m in sim.corp.state.members[:2]]
    assert both["behavior_data"][0]["chat_cnt"] == one[0][0]["chat_cnt"] + one[1][0]["chat_cnt"]  # summed


# ---------------------------------------------------------------- cohorts, flows, churn, time between stages


def test_weekly_cohorts_count_who_reached_each_stage_within_7_30_90_days(db: Session, make: Factory) -> None:
    account = make.account()
    a, b, c = make.customer(account), make.customer(account), make.customer(account)
    monday = date(2026, 1, 5)
    for customer in (a, b, c):
        _added(db, customer, local(2026, 1, 6))
    transitions.record(db, [(a.id, "traffic", "user")], at=local(2026, 1, 8))  # day 2
    transitions.record(db, [(a.id, "user", "customer")], at=local(2026, 1, 26))  # day 20
    transitions.record(db, [(b.id, "traffic", "user")], at=local(2026, 2, 20))  # day 45
    transitions.record(db, [(c.id, "traffic", "fan")], at=local(2026, 1, 7))  # day 1: skips rungs
    db.commit()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    rows = service.cohorts(db, viewer=SYSTEM, weeks=2, until=date(2026, 1, 14), now=now)
    assert [r.week for r in rows] == [date(2026, 1, 12), monday]
    assert rows[0].added == 0
    week = rows[1]
    assert week.added == 3
    assert week.reached["user"] == {7: 2, 30: 2, 90: 3}
    assert week.reached["customer"] == {7: 1, 30: 2, 90: 2}
    assert week.reached["fan"] == {7: 1, 30: 1, 90: 1}
    assert week.share("user", 90) == 1.0
    # A window that has not passed yet is unknown, not zero.
    early = service.cohorts(db, viewer=SYSTEM, weeks=1, until=date(2026, 1, 5), now=datetime(2026, 1, 20, tzinfo=UTC))
    assert early[0].reached["user"] == {7: 2, 30: None, 90: None}


def test_flows_churn_and_median_time_between_stages_over_a_period(db: Session, make: Factory) -> None:
    from siyu.customers import service as customers_service

    account = make.account()
    a, b, c = make.customer(account), make.customer(account), make.customer(account)
    _added(db, a, local(2026, 1, 1))
    _added(db, b, local(2026, 1, 1))
    _added(db, c, local(2026, 3, 5))
    transitions.record(db, [(a.id, "traffic", "user")], at=local(2026, 1, 11))  # 10 days after adding
    transitions.record(db, [(b.id, "traffic", "user")], at=local(2026, 3, 2))
    transitions.record(db, [(b.id, "user", "customer")], at=local(2026, 3, 6))
    db.commit()
    since, until = date(2026, 3, 1), date(2026, 3, 31)
    found = {(f.source, f.target): f.customers for f in service.flows(db, viewer=SYSTEM, since=since, until=until)}
    assert found == {("user", "user"): 1, ("traffic", "customer"): 1, ("new", "traffic"): 1}
    times = {t.to_stage: t for t in service.stage_times(db, viewer=SYSTEM, since=since, until=until)}
    assert times["user"].customers == 1 and times["user"].median_days == 60.0  # b: 01-01 → 03-02
    assert times["customer"].median_days == 4.0
    assert times["fan"].median_days is None
    # b (客户 then) deletes the account on 03-10
    friendship = db.scalars(select(Friendship).where(Friendship.customer_id == b.id)).one()
    friendship.status, friendship.removed_at = "deleted", local(2026, 3, 10)
    db.commit()
    churn = {r.stage: r for r in service.churn_by_stage(db, viewer=SYSTEM, since=since, until=until)}
    assert churn["customer"].churned == 1 and churn["user"].churned == 0
    assert churn["user"].at_start == 1 and churn["traffic"].at_start == 1
    assert churn["customer"].rate is None  # nobody was a 客户 when the period began
    assert customers_service is not None


def test_backfill_gives_each_customer_one_initial_row_at_their_add_date(db: Session, make: Factory) -> None:
    account = make.account()
    a = make.customer(account)
    make.touch(a, "chat")  # a is 用户 now
    b = make.customer(account)
    db.execute(StageTransition.__table__.delete())
    db.commit()
    assert transitions.backfill(db) == 2
    db.commit()
    rows = {r.customer_id: r for r in db.scalars(select(StageTransition))}
    assert (rows[a.id].from_rank, rows[a.id].to_rank) == (None, 1)
    assert (rows[b.id].from_rank, rows[b.id].to_rank) == (None, 0)
    assert rows[a.id].at == db.get(Customer, a.id).created_at
    assert transitions.backfill(db) == 0  # once only


# ---------------------------------------------------------------- metrics API


def test_metrics_catalogue_and_a_touch_series_counts_2359_and_0001_on_their_own_local_days(
        db: Session, make: Factory, client: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = make.customer(account)
    make.touch(customer, "chat", occurred_at=local(2026, 5, 1, 23, 59), account_id=account.id)
    make.touch(customer, "chat", occurred_at=local(2026, 5, 2, 0, 1), account_id=account.id)
    make.touch(customer, "note", occurred_at=local(2026, 5, 2, 10, 0), account_id=account.id)
    catalogue = client.get("/api/v1/metrics", headers=admin_headers)
    assert catalogue.status_code == 200
    assert {"touches", "private_chats", "ladder_fan", "net_adds", "revenue"} <= {m["name"] for m in catalogue.json()}
    answer = client.get("/api/v1/metrics/private_chats", headers=admin_headers,
                        params={"from": "2026-05-01", "to": "2026-05-03", "interval": "day"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"metric": "private_chats", "scope": "company", "interval": "day", "points": [
        {"at": "2026-05-01", "value": 1}, {"at": "2026-05-02", "value": 1}, {"at": "2026-05-03", "value": 0}]}
    weekly = client.get("/api/v1/metrics/touches", headers=admin_headers,
                        params={"from": "2026-04-27", "to": "2026-05-10", "interval": "week",
                                "scope": f"account:{account.id}"}).json()
    assert weekly["points"] == [{"at": "2026-04-27", "value": 3}, {"at": "2026-05-04", "value": 0}]


def test_a_ladder_metric_moves_with_the_date(db: Session, make: Factory, client: Any,
                                             admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = make.customer(account)
    _added(db, customer, local(2026, 4, 1))
    transitions.record(db, [(customer.id, "traffic", "user")], at=local(2026, 4, 15))
    db.commit()
    answer = client.get("/api/v1/metrics/ladder_user", headers=admin_headers,
                        params={"from": "2026-04-01", "to": "2026-05-31", "interval": "month"}).json()
    assert answer["points"] == [{"at": "2026-04-01", "value": 1}, {"at": "2026-05-01", "value": 1}]
    answer = client.get("/api/v1/metrics/ladder_traffic", headers=admin_headers,
                        params={"from": "2026-04-13", "to": "2026-04-16", "interval": "day"}).json()
    assert [p["value"] for p in answer["points"]] == [1, 1, 0, 0]


def test_a_metric_over_a_scope_the_user_may_not_see_is_404_not_a_zero(
        db: Session, make: Factory, client: Any, token_for: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    other = make.user("operator", accounts=[theirs])
    make.touch(make.customer(theirs), "chat")
    headers = token_for(operator)
    params = {"from": "2026-01-01", "to": "2026-01-31"}
    for scope in (f"account:{theirs.id}", f"operator:{other.id}", "account:999999", "segment:999999"):
        answer = client.get("/api/v1/metrics/touches", headers=headers, params=params | {"scope": scope})
        assert answer.status_code == 404, (scope, answer.text)
    assert client.get("/api/v1/metrics/touches", headers=headers,
                      params=params | {"scope": f"account:{mine.id}"}).status_code == 200
    assert client.get("/api/v1/metrics/touches", headers=headers,
                      params=params | {"scope": f"operator:{operator.id}"}).status_code == 200
    assert client.get("/api/v1/metrics/nonsense", headers=headers).status_code == 404
    # the operator's company view counts only their accounts' customers
    today = datetime.now(UTC).astimezone(service.local_zone()).date().isoformat()
    company = client.get("/api/v1/metrics/touches", headers=headers, params={"from": today, "to": today}).json()
    assert company["points"] == []  # nothing of theirs: no data, not a zero


@pytest.mark.parametrize("params", [
    {"from": "2026-02-01", "to": "2026-01-01"},
    {"interval": "hour"},
    {"scope": "planet:3"},
    {"from": "2020-01-01", "to": "2026-01-01"},
    {"from": "not-a-date"},
])
def test_bad_metric_requests_are_clear_errors_not_500(client: Any, admin_headers: dict[str, str],
                                                      params: dict[str, str]) -> None:
    answer = client.get("/api/v1/metrics/touches", headers=admin_headers, params=params)
    assert answer.status_code in (400, 422), answer.text


# ---------------------------------------------------------------- team performance


def test_team_performance_per_operator_and_account_with_the_team_average(
        db: Session, make: Factory) -> None:
    from siyu.analytics import team

    first, second = make.account(), make.account()
    alice = make.user("operator", accounts=[first])
    bob = make.user("operator", accounts=[second])
    customer = make.customer(first)
    db.execute(update(Customer).where(Customer.id == customer.id).values(owner_id=alice.id))
    db.commit()
    from siyu.customers import service as customers_service
    from siyu.customers.schemas import TouchIn

    for kind in ("chat", "chat", "note"):
        customers_service.add_touch(db, customer_id=customer.id, data=TouchIn(kind=kind),  # type: ignore[arg-type]
                                    viewer=viewer_of(alice))
    db.commit()
    today = datetime.now(UTC).astimezone(service.local_zone()).date()
    found = team.build(db, viewer=SYSTEM, since=today - timedelta(days=6), until=today)
    rows = {r.key: r for r in found.operators}
    assert rows[alice.id].figures["touches"] == 3 and rows[alice.id].figures["private_chats"] == 2
    assert rows[bob.id].figures["touches"] == 0
    assert found.average(found.operators)["touches"] == 1.5
    accounts = {r.key: r for r in found.accounts}
    assert accounts[first.id].figures["adds"] == 1 and accounts[first.id].figures["net_adds"] == 1
    assert accounts[second.id].figures["adds"] == 0
    # an operator sees their own row and their own accounts only
    mine = team.build(db, viewer=viewer_of(bob), since=today - timedelta(days=6), until=today)
    assert [r.key for r in mine.operators] == [bob.id] and [r.key for r in mine.accounts] == [second.id]


# ---------------------------------------------------------------- console


def test_the_analytics_pages_show_empty_states_for_a_period_without_data(client: Any, admin: Any) -> None:
    from tests.test_pages import Console

    console = Console(client).login(admin)
    page = console.get("/analytics", params={"day": "2020-01-01", "since": "2020-01-01", "until": "2020-01-31"})
    assert page.status_code == 200, page.text
    for empty in ("empty-funnel", "empty-flows", "empty-churn", "empty-cohorts"):
        assert f'data-testid="{empty}"' in page.text
    assert "data-sankey" not in page.text and "data-funnel" not in page.text
    team = console.get("/analytics/team", params={"days": "7", "until": "2020-01-31"})
    assert team.status_code == 200 and 'data-testid="empty-team"' in team.text
    assert 'href="/analytics"' in console.get("/").text  # the nav leads here, not to the placeholder


def test_the_funnel_page_moves_with_the_date_and_exports_each_chart(db: Session, make: Factory, client: Any,
                                                                     admin: Any) -> None:
    from tests.test_pages import Console

    account = make.account()
    customer = make.customer(account)
    _added(db, customer, local(2026, 4, 1))
    transitions.record(db, [(customer.id, "traffic", "fan")], at=local(2026, 4, 10))
    db.commit()
    console = Console(client).login(admin)
    before = console.get("/analytics", params={"day": "2026-04-05", "since": "2026-04-01", "until": "2026-04-30"})
    after = console.get("/analytics", params={"day": "2026-04-20", "since": "2026-04-01", "until": "2026-04-30"})
    assert before.status_code == after.status_code == 200
    assert "流量 1" in before.text and "粉丝 0" in before.text
    assert "粉丝 1" in after.text and "data-sankey" in after.text
    funnel_csv = console.get("/analytics/funnel.csv", params={"day": "2026-04-20"})
    assert funnel_csv.status_code == 200 and funnel_csv.headers["content-type"].startswith("text/csv")
    assert funnel_csv.text.splitlines()[-1] == "粉丝,1,1"
    flows_csv = console.get("/analytics/flows.csv", params={"since": "2026-04-01", "until": "2026-04-30"})
    assert "新加客户,粉丝,1" in flows_csv.text
    assert console.get("/analytics/cohorts.csv").status_code == 200
    assert console.get("/analytics/team.csv").text.startswith("\ufeff")
    assert console.get("/analytics/nonsense.csv").status_code == 404
    bad = console.get("/analytics", params={"day": "yesterday"})
    assert bad.status_code == 422 and "yesterday" in bad.text


def test_an_operator_cannot_open_the_funnel_of_a_segment_or_account_that_is_not_theirs(
        db: Session, make: Factory, client: Any, token_for: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    headers = token_for(operator)
    assert client.get("/api/v1/analytics/funnel", headers=headers,
                      params={"scope": f"account:{theirs.id}"}).status_code == 404
    own = client.get("/api/v1/analytics/funnel", headers=headers, params={"scope": f"account:{mine.id}"})
    assert own.status_code == 200 and own.json()["current"] == {"traffic": 0, "user": 0, "customer": 0, "fan": 0}
    make.customer(theirs)
    company = client.get("/api/v1/analytics/funnel", headers=headers).json()
    assert company["reached"]["traffic"] == 0  # the other account's customer is not counted


# ---------------------------------------------------------------- rollups (what the funnel and cohorts read)


HAND_FUNNEL = """
SELECT t.to_rank, count(*) FROM stage_transition t JOIN customer c ON c.id = t.customer_id
WHERE t.at < :end AND (t.until IS NULL OR t.until >= :end) AND c.created_at < :end AND c.merged_into_id IS NULL
GROUP BY t.to_rank"""
HAND_COHORTS = """
SELECT CAST((julianday(c.created_at) - julianday(:start)) / 7 AS INTEGER) AS week, count(*),
       count(*) FILTER (WHERE r1 <= 7), count(*) FILTER (WHERE r1 <= 30), count(*) FILTER (WHERE r1 <= 90),
       count(*) FILTER (WHERE r2 <= 7), count(*) FILTER (WHERE r2 <= 30), count(*) FILTER (WHERE r2 <= 90),
       count(*) FILTER (WHERE r3 <= 7), count(*) FILTER (WHERE r3 <= 30), count(*) FILTER (WHERE r3 <= 90)
FROM (SELECT c.id, c.created_at,
             min(CASE WHEN t.to_rank >= 1 THEN julianday(t.at) - julianday(c.created_at) END) AS r1,
             min(CASE WHEN t.to_rank >= 2 THEN julianday(t.at) - julianday(c.created_at) END) AS r2,
             min(CASE WHEN t.to_rank >= 3 THEN julianday(t.at) - julianday(c.created_at) END) AS r3
      FROM customer c LEFT JOIN stage_transition t ON t.customer_id = c.id
      WHERE c.created_at >= :start AND c.created_at < :end AND c.merged_into_id IS NULL
      GROUP BY c.id, c.created_at) c
GROUP BY week"""


def _hand_funnel(db: Session, day: date) -> dict[str, int]:
    from sqlalchemy import text

    end = service.day_start(day + timedelta(days=1)).replace(tzinfo=None).isoformat(" ", "microseconds")
    counts = {int(r): int(n) for r, n in db.execute(text(HAND_FUNNEL), {"end": end})}
    added = int(db.execute(text("SELECT count(*) FROM customer WHERE created_at < :end AND merged_into_id IS NULL"),
                           {"end": end}).scalar_one())
    out = {stage: counts.get(rank, 0) for rank, stage in enumerate(service.STAGES)}
    out["traffic"] += added - sum(counts.values())
    return out


def _random_ladder(db: Session, make: Factory, customers: int = 24) -> list[Any]:
    import random

    rng = random.Random(24)
    account = make.account()
    made = [make.customer(account) for _ in range(customers)]
    stages = list(service.STAGES)
    for customer in made:
        added = local(2026, 1, 1) + timedelta(hours=rng.randint(0, 24 * 80))
        _added(db, customer, added)
        at, stage = added, "traffic"
        for _step in range(rng.randint(0, 4)):
            at += timedelta(hours=rng.randint(1, 24 * 20), minutes=rng.choice((0, 1, 59)))
            new = rng.choice([s for s in stages if s != stage])  # up, skipping rungs, or back down
            transitions.record(db, [(customer.id, stage, new)], at=at)
            stage = new
    db.commit()
    return made


def test_the_rollups_answer_the_funnel_and_cohorts_exactly_as_the_hand_written_sql(
        db: Session, make: Factory) -> None:
    from siyu.analytics import rollups

    made = _random_ladder(db, make)
    days = [date(2025, 12, 31) + timedelta(days=n) for n in range(0, 150, 3)]
    for day in days:
        assert service.funnel(db, viewer=SYSTEM, day=day).current == _hand_funnel(db, day), day
    # A merged customer leaves every day's counts; undone, they come back (the merge service's hooks).
    victim = made[3]
    rollups.shift(db, [victim.id], -1)
    db.execute(update(Customer).where(Customer.id == victim.id).values(merged_into_id=made[0].id))
    db.commit()
    for day in days[::5]:
        assert service.funnel(db, viewer=SYSTEM, day=day).current == _hand_funnel(db, day), day
    # The nightly rebuild folds the appended rows and answers the same.
    assert rollups.rebuild(db)["deltas"] > 0
    db.commit()
    for day in days[::5]:
        assert service.funnel(db, viewer=SYSTEM, day=day).current == _hand_funnel(db, day), day
    # Cohorts from each customer's first time on each rung, against the per-transition SQL.

    now = datetime(2026, 12, 1, tzinfo=UTC)
    rows = service.cohorts(db, viewer=SYSTEM, weeks=14, until=date(2026, 3, 30), now=now)
    hand = hand_cohorts(db, rows)
    mine = {13 - i: (r.added, *[r.reached[s][d] for s in service.STAGES[1:] for d in service.COHORT_DAYS])
            for i, r in enumerate(rows) if r.added}
    assert mine == hand and sum(r.added for r in rows) == len(made) - 1


def test_an_operator_funnel_reads_the_transitions_and_agrees_with_the_company_rollup(
        db: Session, make: Factory) -> None:
    from siyu.accounts.models import Account

    made = _random_ladder(db, make, customers=12)
    account_id = db.scalars(select(Friendship.account_id).where(Friendship.customer_id == made[0].id)).one()
    operator = make.user("operator", accounts=[db.get(Account, account_id)])
    for day in (date(2026, 2, 1), date(2026, 3, 15), date(2026, 5, 1)):
        company = service.funnel(db, viewer=SYSTEM, day=day).current
        assert company == _hand_funnel(db, day)
        # every customer is on that one account: the transitions' read says the same
        assert service.funnel(db, viewer=SYSTEM, day=day, scope=service.Scope("account", account_id)).current \
            == company
        assert service.funnel(db, viewer=viewer_of(operator), day=day).current == company


def test_a_merge_and_its_undo_move_the_company_funnel_as_the_hand_written_sql_does(
        db: Session, make: Factory) -> None:
    from siyu.customers.merge import service as merge

    made = _random_ladder(db, make, customers=8)
    days = [date(2026, 1, 15), date(2026, 2, 20), date(2026, 4, 1), date(2026, 6, 1)]
    record = merge.merge_customers(db, target_id=made[0].id, source_ids=[made[1].id, made[2].id], choices={},
                                   viewer=SYSTEM)
    db.commit()
    for day in days:
        assert service.funnel(db, viewer=SYSTEM, day=day).current == _hand_funnel(db, day), day
    merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)
    db.commit()
    for day in days:
        assert service.funnel(db, viewer=SYSTEM, day=day).current == _hand_funnel(db, day), day
