"""Demo data for 目标 and the 工作台: a goal per demo role with believable targets, and the admin
dashboard's figures computed once (the periodic job keeps them fresh afterwards).

Targets are set from what the demo's own data reaches: the pace so far carried to the deadline, a
little above or below, so one goal is on track, one at risk and one behind — as in a real month.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM, Viewer
from siyu.goals import catalogue, dashboard, forecast, service
from siyu.goals.catalogue import GoalScope, parse_scope
from siyu.goals.schemas import GoalIn
from siyu.team.models import User

ELAPSED_DAYS = 20  # the demo month: 20 days done, 10 to go
LEFT_DAYS = 10


def _target(session: Session, *, metric: str, scope: str, start: date, today: date, stretch: float,
            floor: float) -> float:
    """The pace so far carried to the deadline, times ``stretch``."""
    found = catalogue.daily(session, viewer=SYSTEM, name=metric, scope=parse_scope(scope), since=start, until=today)
    definition = catalogue.CATALOGUE[metric]
    outlook = forecast.forecast(definition, found, deadline=today + timedelta(days=LEFT_DAYS))
    base = outlook.chosen if outlook.chosen is not None else forecast.progress(definition, found)
    value = max((base or 0) * stretch, floor)
    if definition.unit == "percent":
        return round(min(value, 100.0), 1)
    return float(round(value))


def seed(session: Session, *, admin: Viewer) -> int:
    """Goals for the demo's staff (with sub-goals per account) and today's dashboard figures; goals made."""
    session.flush()
    today = local_today()
    start = today - timedelta(days=ELAPSED_DAYS)
    deadline = today + timedelta(days=LEFT_DAYS)
    users = {u.username: u for u in session.scalars(select(User))}
    made = 0

    def goal(name: str, metric: str, scope: str, owner: str, *, stretch: float, floor: float,
             parent: int | None = None, target: float | None = None) -> int:
        nonlocal made
        value = target if target is not None else _target(session, metric=metric, scope=scope, start=start,
                                                          today=today, stretch=stretch, floor=floor)
        created = service.create_goal(session, viewer=admin, data=GoalIn(
            name=name, metric=metric, scope=scope, target=value, start=start, deadline=deadline,
            owner_id=users[owner].id if owner in users else None, parent_id=parent))
        made += 1
        return created.id

    admin_name = next((u.username for u in users.values() if u.role == "admin"), "")
    company = goal("本月全公司净增好友", "net_adds", "company", admin_name, stretch=0.95, floor=30)
    parent = session.get(service.Goal, company)
    accounts = list(session.scalars(select(Account).order_by(Account.id)))
    if parent is not None and accounts:
        # Sub-goals per account, in proportion to each account's pace; the last takes the remainder.
        paces = [max(_target(session, metric="net_adds", scope=f"account:{a.id}", start=start, today=today,
                             stretch=1.0, floor=0), 1.0) for a in accounts]
        left = parent.target
        for position, (account, pace) in enumerate(zip(accounts, paces, strict=True)):
            share = left if position == len(accounts) - 1 else float(round(parent.target * pace / sum(paces)))
            share = min(share, left)
            if share <= 0:
                continue
            goal(f"{account.display_name} 净增", "net_adds", f"account:{account.id}", admin_name, stretch=1,
                 floor=0, parent=company, target=share)
            left -= share
    goal("本月营收", "revenue", "company", admin_name, stretch=1.15, floor=1000)
    goal("粉丝再多一些", "fans", "company", "chenjing", stretch=1.02, floor=10)
    goal("复购率提升", "repurchase_rate", "company", "chenjing", stretch=1.1, floor=10)
    for username in ("zhouming", "linxiao", "guyan"):
        if username in users:
            goal("今日任务完成率", "task_completion", f"operator:{users[username].id}", username, stretch=1.0,
                 floor=80, target=85.0)
            goal("我的客户净增", "net_adds", f"operator:{users[username].id}", username, stretch=1.05, floor=5)
    for username in ("kefu.xiaoyu", "kefu.ajie"):
        if username in users:
            goal("首次响应不超过 5 分钟", "first_response_minutes", f"operator:{users[username].id}", username,
                 stretch=1, floor=1, target=5.0)
    dashboard.refresh_figures(session, today=today)
    return made


__all__ = ["GoalScope", "seed"]
