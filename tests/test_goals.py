"""SMART goals (metric catalogue, progress, forecasts, state, sub-goals) and the role dashboards —
against hand-computed fixtures, through the services, the API and the console."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from siyu.core.errors import Invalid, NotFound
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Friendship, FriendshipStatus
from siyu.goals import catalogue, dashboard, forecast, service
from siyu.goals.catalogue import CATALOGUE, Daily, GoalScope
from siyu.goals.schemas import GoalIn
from tests.conftest import Factory, viewer_of
from tests.test_demo import session  # noqa: F401  (reads the demo database, built once per process)

SH = timedelta(hours=8)  # Asia/Shanghai


def local(y: int, m: int, d: int, hh: int = 12, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC) - SH


def _days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


# ---------------------------------------------------------------- forecasts (pure, hand-computed)


def test_a_sum_goal_forecasts_linearly_and_by_weekday() -> None:
    metric = CATALOGUE["net_adds"]
    start = date(2026, 3, 2)  # a Monday
    # Two full weeks: 10 on each weekday, 0 on Saturdays and Sundays; the 15th day (a Monday, today) 4 so far.
    values: list[float | None] = [10.0 if d.weekday() < 5 else 0.0 for d in _days(start, 14)] + [4.0]
    daily = Daily(days=_days(start, 15), values=values)
    assert forecast.progress(metric, daily) == 104.0
    outlook = forecast.forecast(metric, daily, deadline=date(2026, 3, 22))  # 6 days left: Tue … Sun
    # linear: the complete days' mean (100 / 14) for each of the 6 days left
    assert outlook.linear == round(104 + 6 * 100 / 14, 2)
    # seasonal: Tue–Fri 10 each, Sat and Sun 0
    assert outlook.seasonal == 144.0
    assert [v for _d, v in outlook.seasonal_path][-2:] == [144.0, 144.0]
    on = forecast.state(metric, daily=daily, target=140, start=start, deadline=date(2026, 3, 22),
                        today=date(2026, 3, 16), outlook=outlook)
    risk = forecast.state(metric, daily=daily, target=155, start=start, deadline=date(2026, 3, 22),
                          today=date(2026, 3, 16), outlook=outlook)
    off = forecast.state(metric, daily=daily, target=200, start=start, deadline=date(2026, 3, 22),
                         today=date(2026, 3, 16), outlook=outlook)
    assert (on, risk, off) == ("on_track", "at_risk", "off_track")  # 144/155 = 0.93 ≥ 0.9; 144/200 < 0.9


def test_a_level_goal_forecasts_along_its_trend_and_lower_is_better_flips_the_rule() -> None:
    fans = CATALOGUE["fans"]
    start = date(2026, 3, 2)
    daily = Daily(days=_days(start, 5), values=[10.0, 12.0, None, 16.0, 18.0])  # +2 a day, one day unknown
    outlook = forecast.forecast(fans, daily, deadline=date(2026, 3, 11))
    assert forecast.progress(fans, daily) == 18.0
    assert outlook.linear == 28.0  # day index 9: 10 + 2 × 9
    wait = CATALOGUE["first_response_minutes"]
    minutes = Daily(days=_days(start, 3), values=[30.0, 20.0, 10.0], denominators=[3.0, 2.0, 1.0])
    assert forecast.progress(wait, minutes) == 10.0  # 60 minutes over 6 conversations
    assert forecast.attainment(wait, 10.0, 5.0) == 0.5 and forecast.attainment(wait, 4.0, 5.0) == 1.25


def test_a_period_without_data_has_no_forecast_and_is_at_risk_not_a_crash() -> None:
    metric = CATALOGUE["revenue"]
    daily = Daily(days=_days(date(2026, 3, 2), 3), values=[0.0, 0.0, 0.0])
    outlook = forecast.forecast(metric, daily, deadline=date(2026, 3, 31))
    assert outlook.linear is None and outlook.seasonal is None and outlook.linear_path == []
    assert forecast.state(metric, daily=daily, target=100, start=date(2026, 3, 2), deadline=date(2026, 3, 31),
                          today=date(2026, 3, 4), outlook=outlook) == "at_risk"


# ---------------------------------------------------------------- metrics against fixtures


def test_net_adds_and_the_timezone_edge_count_on_the_right_local_days(db: Session, make: Factory) -> None:
    account = make.account()
    a, b, c = make.customer(account), make.customer(account), make.customer(account)
    for customer, at in ((a, local(2026, 3, 5, 23, 59)), (b, local(2026, 3, 6, 0, 1)), (c, local(2026, 3, 6, 9))):
        db.execute(update(Customer).where(Customer.id == customer.id).values(created_at=at - timedelta(days=30)))
        db.execute(update(Friendship).where(Friendship.customer_id == customer.id).values(added_at=at))
    db.execute(update(Friendship).where(Friendship.customer_id == c.id).values(
        status=FriendshipStatus.deleted.value, removed_at=local(2026, 3, 7, 0, 1)))
    db.commit()
    # a chat at 23:59 on the 5th and one at 00:01 on the 6th (local): each on its own day
    make.touch(a, "chat", occurred_at=local(2026, 3, 5, 23, 59))
    make.touch(b, "chat", occurred_at=local(2026, 3, 6, 0, 1))
    make.touch(b, "chat", occurred_at=local(2026, 3, 6, 10))  # the same customer again: counted once
    days = catalogue.daily(db, viewer=SYSTEM, name="net_adds", scope=GoalScope(), since=date(2026, 3, 5),
                           until=date(2026, 3, 7))
    assert days.values == [1.0, 2.0, -1.0]
    rate = catalogue.daily(db, viewer=SYSTEM, name="interaction_rate", scope=GoalScope(), since=date(2026, 3, 5),
                           until=date(2026, 3, 7))
    assert rate.base == 3 and rate.values == [100.0, 100.0, 0.0]
    assert forecast.progress(CATALOGUE["interaction_rate"], rate) == round(200 / 3, 2)  # 2 of 3 customers


def test_delivery_rate_reads_the_send_ledger_and_task_completion_the_tasks(db: Session, make: Factory) -> None:
    from siyu.maintenance.models import Task
    from siyu.sends.models import SendLedgerEntry

    account = make.account()
    customer = make.customer(account)
    d1, d2 = date(2026, 3, 2), date(2026, 3, 3)
    released = datetime(2026, 3, 2, 3, tzinfo=UTC)
    db.add_all([SendLedgerEntry(target_kind="customer", target_id=customer.id, day=d1, source="sop",
                                released_at=released if n == 0 else None) for n in range(4)])
    db.add_all([SendLedgerEntry(target_kind="customer", target_id=customer.id, day=d2, source="campaign")
                for _ in range(2)])
    others = [customer] + [make.customer(account) for _ in range(3)]
    db.add_all([Task(kind="chat", customer_id=c.id, account_id=account.id, day=d1, status=status)
                for c, status in zip(others, ("done", "done", "open", "skipped"), strict=True)])
    db.commit()
    rate = catalogue.daily(db, viewer=SYSTEM, name="delivery_rate", scope=GoalScope(), since=d1, until=d2)
    assert rate.values == [300.0, 200.0] and rate.denominators == [4.0, 2.0]
    assert forecast.progress(CATALOGUE["delivery_rate"], rate) == round(500 / 6, 2)  # 5 of 6 went out
    tasks = catalogue.daily(db, viewer=SYSTEM, name="task_completion", scope=GoalScope("account", account.id),
                            since=d1, until=d2)
    assert forecast.progress(CATALOGUE["task_completion"], tasks) == 50.0  # 2 done of 4 due


def test_the_fans_series_is_the_funnel_of_each_day(db: Session, make: Factory) -> None:
    from siyu.analytics import service as analytics_service
    from siyu.analytics import transitions

    account = make.account()
    a, b = make.customer(account), make.customer(account)
    db.execute(update(Customer).values(created_at=local(2026, 3, 1)))
    db.commit()
    transitions.record(db, [(a.id, "traffic", "fan")], at=local(2026, 3, 3, 23, 59))
    transitions.record(db, [(b.id, "traffic", "fan")], at=local(2026, 3, 4, 0, 1))
    transitions.record(db, [(a.id, "fan", "customer")], at=local(2026, 3, 5, 10))
    db.commit()
    days = catalogue.daily(db, viewer=SYSTEM, name="fans", scope=GoalScope(), since=date(2026, 3, 2),
                           until=date(2026, 3, 6))
    assert days.values == [0.0, 1.0, 2.0, 1.0, 1.0]
    assert days.values == [float(analytics_service.funnel(db, viewer=SYSTEM, day=d).current["fan"])
                           for d in days.days]


def test_a_scope_the_viewer_may_not_see_is_not_found_not_zero(db: Session, make: Factory) -> None:
    mine, other = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    viewer = viewer_of(operator)
    with pytest.raises(NotFound):
        catalogue.daily(db, viewer=viewer, name="net_adds", scope=GoalScope("account", other.id),
                        since=date(2026, 3, 1), until=date(2026, 3, 2))
    with pytest.raises(NotFound):
        service.create_goal(db, viewer=viewer, data=GoalIn(name="x", metric="net_adds", scope=f"account:{other.id}",
                                                           target=10, start=date(2026, 3, 1),
                                                           deadline=date(2026, 3, 31)))
    assert catalogue.daily(db, viewer=viewer, name="net_adds", scope=GoalScope("account", mine.id),
                           since=date(2026, 3, 1), until=date(2026, 3, 2)).values == [0.0, 0.0]


def test_the_goal_form_offers_scopes_by_name_and_only_those_the_operator_may_see(
        db: Session, make: Factory, client: Any) -> None:
    from tests.test_pages import Console

    mine, other = make.account(display_name="山野茶舍·我的"), make.account(display_name="别人的号")
    operator = make.user("operator", accounts=[mine])
    db.commit()
    page = Console(client).login(operator).get("/goals")
    assert page.status_code == 200
    assert f'value="account:{mine.id}"' in page.text and "山野茶舍·我的" in page.text
    assert f'value="account:{other.id}"' not in page.text and "别人的号" not in page.text
    assert 'value="company"' not in page.text  # the whole company is an admin's scope
    assert "account:&lt;id&gt;" not in page.text  # no raw identifier syntax asked of anyone


def test_sub_goals_add_up_to_their_parent_and_may_not_exceed_it(db: Session, make: Factory, admin: Any) -> None:
    first, second = make.account(), make.account()
    viewer = viewer_of(admin)
    today = local_today()

    def goal(scope: str, target: float, parent: int | None = None) -> Any:
        return service.create_goal(db, viewer=viewer, data=GoalIn(
            name=f"净增 {scope}", metric="net_adds", scope=scope, target=target, start=today,
            deadline=today + timedelta(days=30), parent_id=parent))

    parent = goal("company", 100)
    goal(f"account:{first.id}", 60, parent.id)
    with pytest.raises(Invalid) as over:
        goal(f"account:{second.id}", 50, parent.id)
    assert over.value.field == "target"
    assert service.evaluate(db, goal=parent, viewer=viewer).subgoals_add_up is False
    goal(f"account:{second.id}", 40, parent.id)
    assert service.evaluate(db, goal=parent, viewer=viewer).subgoals_add_up is True
    with pytest.raises(Invalid):  # a rate does not add up
        service.create_goal(db, viewer=viewer, data=GoalIn(
            name="复购", metric="repurchase_rate", scope=f"account:{first.id}", target=20, start=today,
            deadline=today + timedelta(days=30), parent_id=parent.id))


def test_dashboard_figures_are_precomputed_and_match_a_hand_count(db: Session, make: Factory) -> None:
    account = make.account()
    today = local_today()
    for _ in range(3):
        make.customer(account)
    done = dashboard.refresh_figures(db, today=today)
    assert today in done
    found, stamp = dashboard.read_figures(db, today=today)
    assert found["customers"][today] == 3 and found["adds"][today] == 3 and found["net_adds"][today] == 3
    assert found["adds"][today - timedelta(days=7)] == 0 and stamp is not None
    assert dashboard.refresh_figures(db, today=today) == [today]  # past days kept once their day ended


# ---------------------------------------------------------------- API


def test_goals_api_creates_and_lists_goals_with_progress_forecast_and_state(
        db: Session, make: Factory, client: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    make.customer(account)
    today = local_today()
    body = {"name": "本月净增", "metric": "net_adds", "scope": "company", "target": 10,
            "start": (today - timedelta(days=3)).isoformat(), "deadline": (today + timedelta(days=10)).isoformat()}
    created = client.post("/api/v1/goals", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    goal = created.json()
    assert goal["progress"] == 1 and goal["state"] in forecast.STATES
    assert goal["forecast"]["linear"] is not None and len(goal["forecast"]["seasonal_points"]) == 10
    listed = client.get("/api/v1/goals", headers=admin_headers).json()
    assert [g["id"] for g in listed] == [goal["id"]]
    metrics = client.get("/api/v1/goals/metrics", headers=admin_headers).json()
    assert {m["name"] for m in metrics} == set(CATALOGUE)


def test_goals_api_refuses_bad_input_in_chinese(db: Session, make: Factory, client: Any, token_for: Any,
                                                 admin_headers: dict[str, str]) -> None:
    mine, other = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    body = {"name": "x", "metric": "net_adds", "scope": "company", "target": 10, "start": "2026-03-10",
            "deadline": "2026-03-01"}
    backwards = client.post("/api/v1/goals", json=body, headers=admin_headers | {"Accept-Language": "zh-CN"})
    assert backwards.status_code == 422 and "截止日期早于开始日期" in backwards.text
    hidden = client.post("/api/v1/goals", json=body | {"deadline": "2026-03-31", "scope": f"account:{other.id}"},
                         headers=token_for(operator))
    assert hidden.status_code == 404
    theirs = client.post("/api/v1/goals", json=body | {"deadline": "2026-03-31", "scope": f"account:{other.id}"},
                         headers=admin_headers)
    assert theirs.status_code == 201
    assert client.get(f"/api/v1/goals/{theirs.json()['id']}", headers=token_for(operator)).status_code == 404
    assert client.get("/api/v1/goals", headers=token_for(operator)).json() == []
    unknown = client.post("/api/v1/goals", json=body | {"deadline": "2026-03-31", "metric": "nope"},
                          headers=admin_headers)
    assert unknown.status_code == 404


# ---------------------------------------------------------------- console


def test_each_role_lands_on_its_own_dashboard_and_exports_its_charts(db: Session, make: Factory, client: Any,
                                                                     admin: Any) -> None:
    from openpyxl import load_workbook

    from tests.test_pages import Console

    account = make.account()
    make.customer(account)
    page = Console(client).login(admin).get("/")
    assert page.status_code == 200, page.text
    assert 'data-testid="board-admin"' in page.text and 'data-testid="campaigns-section"' in page.text
    assert 'href="/customers?sort=created" data-testid="figure-adds"' in page.text
    csv = client.get("/dashboard/company.csv")
    assert csv.status_code == 200
    assert csv.text.lstrip("\ufeff").splitlines()[1].split(",")[1] == "1"  # customers today
    xlsx = client.get("/dashboard/company.xlsx")
    rows = list(load_workbook(io.BytesIO(xlsx.content)).active.iter_rows(values_only=True))
    assert rows[1][1] == 1
    assert client.get("/dashboard/nope.csv").status_code == 404
    stages = client.get("/dashboard/stages.csv").text.lstrip("\ufeff").splitlines()
    assert stages[1] == "流量,1" and client.get("/dashboard/rfm.xlsx").status_code == 200
    operator = make.user("operator", accounts=[account])
    page = Console(client).login(operator).get("/")
    assert 'data-testid="board-operator"' in page.text and 'data-testid="chart-ladder"' in page.text
    assert client.get("/dashboard/ladder.csv").status_code == 200
    agent = make.user("service", accounts=[account])
    page = Console(client).login(agent).get("/")
    assert 'data-testid="board-service"' in page.text and 'data-testid="queue"' in page.text


def test_a_goal_page_shows_an_empty_state_for_a_period_without_data_and_refuses_a_backwards_form(
        db: Session, make: Factory, client: Any, admin: Any) -> None:
    from tests.test_pages import Console

    console = Console(client).login(admin)
    bad = console.post("/goals/new", {"name": "反了", "metric": "revenue", "scope": "company", "target": "100",
                                      "start": "2026-03-10", "deadline": "2026-03-01"})
    assert bad.status_code == 422 and "截止日期早于开始日期" in bad.text
    made = console.post("/goals/new", {"name": "去年营收", "metric": "revenue", "scope": "company", "target": "100",
                                       "start": "2020-01-01", "deadline": "2020-01-31"})
    assert made.status_code == 303, made.text
    page = console.get(made.headers["location"])
    assert page.status_code == 200 and 'data-testid="goal-empty"' in page.text and "data-chart=" not in page.text
    export = client.get(made.headers["location"] + "/chart.csv")
    assert export.status_code == 200 and len(export.text.splitlines()) == 32  # header + 31 days
    home = console.get("/")
    assert "去年营收" in home.text and "已偏离" in home.text  # on the owner's 工作台, off track
    listed = console.get("/goals")  # the list names each goal's owner (operators' goals share names)
    assert "负责人" in listed.text and (admin.display_name or admin.username) in listed.text


# ---------------------------------------------------------------- demo


def test_each_demo_role_lands_on_its_own_dashboard_with_goals_that_have_progress_and_a_forecast(
        demo: Any, session: Session) -> None:  # noqa: F811
    from sqlalchemy import select

    from siyu.team import service as team_service
    from siyu.team.models import User

    roles: dict[str, str] = {}
    for user in session.scalars(select(User)):
        viewer = team_service.viewer_for(user)
        board = dashboard.build(session, viewer=viewer)
        roles[board.role] = user.username
        if user.username in ("admin", "zhouming", "kefu.xiaoyu"):
            assert board.goals, user.username  # every role has its goal on its 工作台
    assert set(roles) == {"admin", "operator", "service"}
    admin = session.scalar(select(User).where(User.role == "admin"))
    board = dashboard.build(session, viewer=team_service.viewer_for(admin))
    figures = {f["name"]: f for f in board.figures}
    assert figures["customers"]["today"] >= 0.9 * demo.summary.customers and figures["fans"]["today"] > 0
    company = next(e for e in board.goals if e.goal.metric == "net_adds" and e.goal.parent_id is None)
    assert company.progress and company.progress > 0 and company.outlook.seasonal is not None
    assert company.subgoals_add_up is True
    assert {e.state for e in board.goals} <= set(forecast.STATES)

