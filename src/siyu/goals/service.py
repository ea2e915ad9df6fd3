"""Goals: create, edit, delete, list and evaluate SMART goals (progress, forecasts, state), and their sub-goals.

Who sees a goal: admins and planners every goal; others the goals they own and the goals whose scope
they may see (their accounts, themselves). A goal over a scope the viewer may not see is NotFound.

Sub-goals: one account's or one operator's share of an additive metric's goal (net adds, fans,
revenue, group active members), over the same metric and within the parent's dates. Their targets
add up to the parent's: a new share may not take the total over the parent's target, and the parent
reads ``subgoals_add_up`` once the shares sum to it exactly.

Who changes a goal: admins and planners any goal they see; anyone else only a goal they own and set
themselves — a target a manager set for an operator is the manager's to move, not the operator's.
An edit keeps the sub-goal rules true: a parent's target never goes below its shares' total and its
dates keep covering theirs; a share stays within its parent's target and dates; the metric or scope of a
goal that has sub-goals does not change (the shares would measure something else) — that is refused with
the reason. Deleting a goal deletes its sub-goals with it (a share means nothing without its goal);
deleting one share is allowed and leaves the parent under-allocated, shown as shares that no longer add
up (the same state as a goal whose shares are still being set), never a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.settings import local_today
from siyu.core.viewer import Viewer
from siyu.goals import catalogue, forecast
from siyu.goals.catalogue import Daily, GoalMetric, GoalScope, parse_scope
from siyu.goals.models import Goal
from siyu.goals.schemas import GoalEdit, GoalIn
from siyu.team import service as team_service
from siyu.team.models import User

MAX_TARGET = 1e12
MAX_GOAL_DAYS = 366 * 2
SUBGOAL_SCOPES = ("account", "operator")
EPSILON = 0.005


class GoalNotFound(NotFound):
    """No such goal, or one this viewer may not see."""


@dataclass
class Evaluation:
    goal: Goal
    metric: GoalMetric
    daily: Daily
    path: list[float | None]
    progress: float | None
    outlook: forecast.Forecast
    state: str
    subgoals_total: float | None = None
    subgoals_add_up: bool | None = None

    @property
    def has_data(self) -> bool:
        return self.daily.has_data

    @property
    def percent(self) -> float:
        """How far along (0–100) for the progress bar."""
        share = forecast.attainment(self.metric, self.progress, self.goal.target)
        return 0.0 if share is None else round(min(share, 1.0) * 100, 1)


def scope_of(goal: Goal) -> GoalScope:
    return GoalScope(kind=goal.scope_kind, id=goal.scope_id, text=goal.scope_text)


def _may_see(session: Session, goal: Goal, viewer: Viewer) -> bool:
    if viewer.sees_all_accounts or (goal.owner_id is not None and goal.owner_id == viewer.user_id):
        return True
    try:
        catalogue.check_scope(session, scope=scope_of(goal), viewer=viewer)
    except NotFound:
        return False
    return goal.scope_kind != "company"  # company numbers are for those who see every account


def get_goal(session: Session, *, goal_id: int, viewer: Viewer) -> Goal:
    goal = session.get(Goal, goal_id)
    if goal is None or not _may_see(session, goal, viewer):
        raise GoalNotFound("Goal not found")
    return goal


def list_goals(session: Session, *, viewer: Viewer, owner_id: int | None = None) -> list[Goal]:
    query = select(Goal).order_by(Goal.deadline, Goal.id)
    if owner_id is not None:
        query = query.where(Goal.owner_id == owner_id)
    return [g for g in session.scalars(query) if _may_see(session, g, viewer)]


def _check_fields(session: Session, *, name: str, metric: GoalMetric, metric_name: str, scope: GoalScope,
                  target: float, start: date, deadline: date, viewer: Viewer) -> None:
    """The rules a goal meets whether created or edited (the scope is one the viewer may see)."""
    if not name:
        raise Invalid("Give the goal a name", field="name")
    if deadline < start:
        raise Invalid("The deadline is before the start", field="deadline")
    if (deadline - start).days > MAX_GOAL_DAYS:
        raise Invalid("A goal runs at most two years", field="deadline")
    if not 0 < target <= MAX_TARGET:
        raise Invalid("The target must be above zero", field="target")
    if metric.unit == "percent" and target > 100:
        raise Invalid("A percentage target is at most 100", field="target")
    if scope.kind not in metric.scopes:
        raise Invalid("Metric {name} has no {scope} scope", field="scope", name=metric_name, scope=scope.kind)
    catalogue.check_scope(session, scope=scope, viewer=viewer)  # NotFound: never a goal over numbers not theirs
    if not viewer.sees_all_accounts and scope.kind == "company":
        raise catalogue.GoalScopeNotFound("Scope {scope} not found", scope=scope.key)


def _check_owner(session: Session, *, owner_id: int | None, viewer: Viewer) -> None:
    if owner_id is None:
        raise Invalid("Choose who owns the goal", field="owner_id")
    if session.get(User, owner_id) is None:
        raise Invalid("No such user", field="owner_id")
    if owner_id != viewer.user_id and not viewer.sees_all_accounts:
        raise Invalid("Only an admin or a planner sets goals for others", field="owner_id")


def create_goal(session: Session, *, data: GoalIn, viewer: Viewer) -> Goal:
    metric = catalogue.get_metric(data.metric)
    scope = parse_scope(data.scope)
    name = data.name.strip()
    _check_fields(session, name=name, metric=metric, metric_name=data.metric, scope=scope,
                  target=float(data.target), start=data.start, deadline=data.deadline, viewer=viewer)
    owner_id = data.owner_id if data.owner_id is not None else viewer.user_id
    if owner_id is not None:
        _check_owner(session, owner_id=owner_id, viewer=viewer)
    if data.parent_id is not None:
        parent = get_goal(session, goal_id=data.parent_id, viewer=viewer)
        _check_share(session, parent=parent, metric_name=data.metric, target=float(data.target), start=data.start,
                     deadline=data.deadline, scope=scope, metric=metric)
    goal = Goal(name=name, metric=metric.name, scope_kind=scope.kind, scope_id=scope.id, scope_text=scope.text,
                target=float(data.target), start=data.start, deadline=data.deadline, owner_id=owner_id,
                parent_id=data.parent_id, created_by=viewer.user_id)
    session.add(goal)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="goal", entity_id=goal.id,
                              summary=goal.name, after=_snapshot(goal))
    return goal


def _snapshot(goal: Goal) -> dict[str, object]:
    return {"name": goal.name, "metric": goal.metric, "scope": goal.scope_key, "target": goal.target,
            "start": goal.start.isoformat(), "deadline": goal.deadline.isoformat(), "owner_id": goal.owner_id}


def edit_refusal(goal: Goal, viewer: Viewer) -> str | None:
    """Why this viewer may not edit or delete the goal (a msgid), or None when they may."""
    if viewer.sees_all_accounts:
        return None
    if goal.owner_id != viewer.user_id or goal.created_by != viewer.user_id:
        return "Set for you by an admin or a planner: only they change or delete it"
    return None


def _check_may_edit(goal: Goal, viewer: Viewer) -> None:
    reason = edit_refusal(goal, viewer)
    if reason is not None:
        raise Forbidden(reason)


def _shares(session: Session, goal: Goal) -> list[Goal]:
    return list(session.scalars(select(Goal).where(Goal.parent_id == goal.id).order_by(Goal.id)))


def update_goal(session: Session, *, goal_id: int, data: GoalEdit, viewer: Viewer) -> Goal:
    """Change a goal's name, target, dates, owner — and its metric or scope while it has no sub-goals."""
    goal = get_goal(session, goal_id=goal_id, viewer=viewer)
    _check_may_edit(goal, viewer)
    given = data.model_fields_set
    before = _snapshot(goal)
    name = data.name.strip() if data.name is not None else goal.name
    metric_name = data.metric if data.metric is not None else goal.metric
    metric = catalogue.get_metric(metric_name)
    scope = parse_scope(data.scope) if data.scope is not None else scope_of(goal)
    target = float(data.target) if data.target is not None else goal.target
    start = data.start if data.start is not None else goal.start
    deadline = data.deadline if data.deadline is not None else goal.deadline
    shares = _shares(session, goal)
    if shares and (metric.name != goal.metric or scope.key != goal.scope_key):
        raise Invalid("This goal has {n} sub-goals: delete them before changing its metric or scope",
                      field="metric" if metric.name != goal.metric else "scope", n=len(shares))
    _check_fields(session, name=name, metric=metric, metric_name=metric_name, scope=scope, target=target,
                  start=start, deadline=deadline, viewer=viewer)
    if "owner_id" in given:
        _check_owner(session, owner_id=data.owner_id, viewer=viewer)
    if shares:
        total = sum(float(s.target) for s in shares)
        if target + EPSILON < total:
            raise Invalid("The sub-goals already add up to {total}: the target cannot go below it",
                          field="target", total=_number(total))
        if start > min(s.start for s in shares) or deadline < max(s.deadline for s in shares):
            raise Invalid("The sub-goals run from {start} to {deadline}: the goal's dates must cover them",
                          field="deadline", start=min(s.start for s in shares).isoformat(),
                          deadline=max(s.deadline for s in shares).isoformat())
    if goal.parent_id is not None:
        parent = session.get(Goal, goal.parent_id)
        if parent is not None:
            _check_share(session, parent=parent, metric_name=metric.name, target=target, start=start,
                         deadline=deadline, scope=scope, metric=metric, excluding=goal.id)
    goal.name, goal.metric, goal.target, goal.start, goal.deadline = name, metric.name, target, start, deadline
    goal.scope_kind, goal.scope_id, goal.scope_text = scope.kind, scope.id, scope.text
    if "owner_id" in given:
        goal.owner_id = data.owner_id
    after = _snapshot(goal)
    changed = {k for k in after if after[k] != before[k]}
    if changed:
        session.flush()
        team_service.record_audit(session, actor=viewer, action="update", entity_type="goal", entity_id=goal.id,
                                  summary=goal.name, before={k: before[k] for k in sorted(changed)},
                                  after={k: after[k] for k in sorted(changed)})
    return goal


def delete_goal(session: Session, *, goal_id: int, viewer: Viewer) -> int:
    """Delete a goal and its sub-goals; answers how many sub-goals went with it."""
    goal = get_goal(session, goal_id=goal_id, viewer=viewer)
    _check_may_edit(goal, viewer)
    shares = _shares(session, goal)
    snapshot = _snapshot(goal) | {"subgoals": len(shares)}
    for share in shares:
        session.delete(share)
    session.flush()  # the shares first: the goal's own DELETE would take them by the foreign key's cascade
    session.delete(goal)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="delete", entity_type="goal", entity_id=goal_id,
                              summary=goal.name, before=snapshot)
    return len(shares)


def _check_share(session: Session, *, parent: Goal, metric_name: str, target: float, start: date, deadline: date,
                 scope: GoalScope, metric: GoalMetric, excluding: int | None = None) -> None:
    if parent.parent_id is not None:
        raise Invalid("A sub-goal cannot be split again", field="parent_id")
    if not metric.additive or metric_name != parent.metric:
        raise Invalid("Sub-goals take their parent's metric, and only a count or an amount adds up",
                      field="metric")
    if scope.kind not in SUBGOAL_SCOPES:
        raise Invalid("A sub-goal is one account's or one operator's share", field="scope")
    if start < parent.start or deadline > parent.deadline:
        raise Invalid("A sub-goal runs within its parent's dates", field="deadline")
    others = select(func.coalesce(func.sum(Goal.target), 0)).where(Goal.parent_id == parent.id)
    if excluding is not None:
        others = others.where(Goal.id != excluding)
    taken = float(session.scalar(others) or 0)
    if taken + target > parent.target + EPSILON:
        raise Invalid("The sub-goals would add up to {total}, over the goal's target {target}", field="target",
                      total=_number(taken + target), target=_number(parent.target))


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def evaluate(session: Session, *, goal: Goal, viewer: Viewer, today: date | None = None) -> Evaluation:
    """Progress, both forecasts and the state, from the days observed (start … today, within the goal)."""
    today = today or local_today()
    metric = catalogue.get_metric(goal.metric)
    until = min(today, goal.deadline)
    if until < goal.start:
        empty = Daily(days=[], values=[])
        outlook = forecast.Forecast()
        return Evaluation(goal=goal, metric=metric, daily=empty, path=[], progress=None, outlook=outlook,
                          state="on_track")
    daily = catalogue.daily(session, viewer=viewer, name=goal.metric, scope=scope_of(goal), since=goal.start,
                            until=until)
    outlook = forecast.forecast(metric, daily, deadline=goal.deadline)
    state = forecast.state(metric, daily=daily, target=goal.target, start=goal.start, deadline=goal.deadline,
                           today=today, outlook=outlook)
    found = Evaluation(goal=goal, metric=metric, daily=daily, path=forecast.progress_path(metric, daily),
                       progress=forecast.progress(metric, daily), outlook=outlook, state=state)
    if metric.additive and goal.parent_id is None:
        shares = [float(t) for t in session.scalars(select(Goal.target).where(Goal.parent_id == goal.id))]
        if shares:
            found.subgoals_total = round(sum(shares), 2)
            found.subgoals_add_up = abs(sum(shares) - goal.target) <= EPSILON
    return found


def subgoals(session: Session, *, goal: Goal, viewer: Viewer) -> list[Goal]:
    return [g for g in session.scalars(select(Goal).where(Goal.parent_id == goal.id).order_by(Goal.id))
            if _may_see(session, g, viewer)]


def scope_choices(session: Session, *, viewer: Viewer) -> list[tuple[str, list[tuple[str, str]]]]:
    """What the goal form offers as a scope, by name and grouped by kind: only what the viewer may see
    (the values are ``parse_scope``'s: ``company``, ``account:<id>``, …)."""
    from siyu.accounts.models import Account
    from siyu.channels import service as channels_service
    from siyu.core.i18n import _
    from siyu.groups.registry import KIND_LABELS
    from siyu.segments import service as segments_service

    groups: list[tuple[str, list[tuple[str, str]]]] = []
    if viewer.sees_all_accounts:
        groups.append((_("Whole company"), [("company", _("Whole company"))]))
    accounts = [a for a in session.scalars(select(Account).order_by(Account.id)) if viewer.can_see_account(a.id)]
    groups.append((_("Account"), [(f"account:{a.id}", a.display_name) for a in accounts]))
    users = list(session.scalars(select(User).order_by(User.id))) if viewer.sees_all_accounts else \
        [u for u in [session.get(User, viewer.user_id or 0)] if u is not None]
    groups.append((_("Operators"), [(f"operator:{u.id}", u.display_name or u.username) for u in users]))
    groups.append((_("Segment"), [(f"segment:{s.id}", s.name)
                                   for s in segments_service.list_segments(session, viewer=viewer)]))
    groups.append((_("Channel"), [(f"channel:{c.id}", c.name)
                                   for c in channels_service.list_channels(session, viewer=viewer)]))
    groups.append((_("Group kind"), [(f"group_kind:{k.value}", _(label)) for k, label in KIND_LABELS.items()]))
    return [(label, options) for label, options in groups if options]
