"""Editing and deleting SMART goals: the sub-goal rules an edit keeps, who may change whose goal, the audit
trail, through the service, the API (PATCH/DELETE) and the console (edit page, delete with its question)."""

from __future__ import annotations

import html
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.errors import Forbidden, Invalid
from siyu.goals import service
from siyu.goals.models import Goal
from siyu.goals.schemas import GoalEdit, GoalIn
from siyu.team.models import AuditEntry
from tests.conftest import Factory, viewer_of


def _goal(db: Session, viewer: Any, **overrides: Any) -> Goal:
    body: dict[str, Any] = {"name": "三月净增", "metric": "net_adds", "scope": "company", "target": 100,
                            "start": "2026-03-01", "deadline": "2026-03-31"} | overrides
    goal = service.create_goal(db, data=GoalIn.model_validate(body), viewer=viewer)
    db.commit()
    return goal


def _split(db: Session, make: Factory, admin: Any) -> tuple[Goal, Goal, Goal]:
    one, two = make.account(), make.account()
    parent = _goal(db, viewer_of(admin))
    a = _goal(db, viewer_of(admin), name="一号", scope=f"account:{one.id}", target=60, parent_id=parent.id)
    b = _goal(db, viewer_of(admin), name="二号", scope=f"account:{two.id}", target=40, parent_id=parent.id)
    return parent, a, b


def test_an_edit_changes_only_the_fields_sent_and_is_audited_with_before_and_after(
        db: Session, admin: Any) -> None:
    goal = _goal(db, viewer_of(admin))
    service.update_goal(db, goal_id=goal.id, data=GoalEdit(target=120, name="三月净增（上调）"),
                        viewer=viewer_of(admin))
    db.commit()
    assert (goal.target, goal.name, goal.deadline.isoformat()) == (120, "三月净增（上调）", "2026-03-31")
    entry = db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "goal", AuditEntry.action == "update")).one()
    assert entry.before == {"name": "三月净增", "target": 100.0}
    assert entry.after == {"name": "三月净增（上调）", "target": 120.0}


def test_a_parent_target_cannot_go_below_its_shares_and_its_dates_must_cover_them(
        db: Session, make: Factory, admin: Any) -> None:
    parent, a, _b = _split(db, make, admin)
    viewer = viewer_of(admin)
    with pytest.raises(Invalid) as low:
        service.update_goal(db, goal_id=parent.id, data=GoalEdit(target=90), viewer=viewer)
    assert low.value.field == "target" and "100" in low.value.message
    db.rollback()
    service.update_goal(db, goal_id=a.id, data=GoalEdit(deadline="2026-03-20"), viewer=viewer)
    db.commit()
    with pytest.raises(Invalid) as dates:
        service.update_goal(db, goal_id=parent.id, data=GoalEdit(deadline="2026-03-25"), viewer=viewer)
    assert dates.value.field == "deadline"
    db.rollback()
    raised = service.update_goal(db, goal_id=parent.id, data=GoalEdit(target=150), viewer=viewer)
    assert raised.target == 150


def test_a_share_stays_within_its_parent_counting_its_siblings_but_not_its_old_self(
        db: Session, make: Factory, admin: Any) -> None:
    _parent, a, _b = _split(db, make, admin)
    viewer = viewer_of(admin)
    service.update_goal(db, goal_id=a.id, data=GoalEdit(target=55), viewer=viewer)  # 55 + 40 ≤ 100
    db.commit()
    with pytest.raises(Invalid) as over:
        service.update_goal(db, goal_id=a.id, data=GoalEdit(target=61), viewer=viewer)  # 61 + 40 > 100
    assert over.value.field == "target" and "101" in over.value.message
    db.rollback()
    with pytest.raises(Invalid):
        service.update_goal(db, goal_id=a.id, data=GoalEdit(deadline="2026-04-30"), viewer=viewer)


def test_metric_and_scope_change_only_while_a_goal_has_no_sub_goals(db: Session, make: Factory,
                                                                     admin: Any) -> None:
    parent, _a, _b = _split(db, make, admin)
    viewer = viewer_of(admin)
    with pytest.raises(Invalid) as metric:
        service.update_goal(db, goal_id=parent.id, data=GoalEdit(metric="revenue"), viewer=viewer)
    assert metric.value.field == "metric" and "2" in metric.value.message
    db.rollback()
    with pytest.raises(Invalid) as scope:
        service.update_goal(db, goal_id=parent.id, data=GoalEdit(scope=f"account:{make.account().id}"),
                            viewer=viewer)
    assert scope.value.field == "scope"
    db.rollback()
    alone = _goal(db, viewer, name="营收")
    service.update_goal(db, goal_id=alone.id, data=GoalEdit(metric="revenue", target=5000), viewer=viewer)
    assert (alone.metric, alone.target) == ("revenue", 5000)


def test_deleting_a_goal_takes_its_sub_goals_and_deleting_a_share_leaves_the_parent_short(
        db: Session, make: Factory, admin: Any) -> None:
    parent, a, b = _split(db, make, admin)
    viewer = viewer_of(admin)
    assert service.delete_goal(db, goal_id=a.id, viewer=viewer) == 0
    db.commit()
    left = service.evaluate(db, goal=parent, viewer=viewer)
    assert left.subgoals_total == 40 and left.subgoals_add_up is False
    assert service.delete_goal(db, goal_id=parent.id, viewer=viewer) == 1
    db.commit()
    assert db.scalars(select(Goal)).all() == []
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "delete",
                                                AuditEntry.entity_id == str(parent.id))).one()
    assert entry.before is not None and entry.before["subgoals"] == 1 and b.id != parent.id


def test_an_operator_edits_their_own_goal_but_not_one_a_manager_set_for_them(
        db: Session, make: Factory, admin: Any) -> None:
    account = make.account()
    operator = make.user("operator", accounts=[account])
    mine = _goal(db, viewer_of(operator), scope=f"operator:{operator.id}")
    service.update_goal(db, goal_id=mine.id, data=GoalEdit(target=80), viewer=viewer_of(operator))
    db.commit()
    assigned = _goal(db, viewer_of(admin), scope=f"operator:{operator.id}", owner_id=operator.id)
    with pytest.raises(Forbidden):
        service.update_goal(db, goal_id=assigned.id, data=GoalEdit(target=1), viewer=viewer_of(operator))
    with pytest.raises(Forbidden):
        service.delete_goal(db, goal_id=assigned.id, viewer=viewer_of(operator))
    other = make.user("operator", accounts=[account])
    with pytest.raises(Invalid):  # only an admin or a planner hands a goal to someone else
        service.update_goal(db, goal_id=mine.id, data=GoalEdit(owner_id=other.id), viewer=viewer_of(operator))


def test_the_api_patches_and_deletes_a_goal_and_refuses_what_the_rules_refuse(
        client: Any, db: Session, make: Factory, admin: Any, admin_headers: dict[str, str],
        token_for: Any) -> None:
    parent, a, _b = _split(db, make, admin)
    zh = admin_headers | {"Accept-Language": "zh-CN"}
    low = client.patch(f"/api/v1/goals/{parent.id}", json={"target": 10}, headers=zh)
    assert low.status_code == 422 and "子目标合计已为 100" in low.text
    locked = client.patch(f"/api/v1/goals/{parent.id}", json={"metric": "revenue"}, headers=zh)
    assert locked.status_code == 422 and "先删除子目标" in locked.text
    ok = client.patch(f"/api/v1/goals/{parent.id}", json={"target": 200, "deadline": "2026-04-15"},
                      headers=admin_headers)
    assert ok.status_code == 200 and ok.json()["target"] == 200 and ok.json()["deadline"] == "2026-04-15"
    assert client.patch(f"/api/v1/goals/{parent.id}", json={"colour": "red"}, headers=admin_headers).status_code == 422
    operator = make.user("operator", accounts=[make.account()])
    assigned = _goal(db, viewer_of(admin), scope=f"operator:{operator.id}", owner_id=operator.id)
    refused = client.delete(f"/api/v1/goals/{assigned.id}", headers=token_for(operator))
    assert refused.status_code == 403
    assert client.delete(f"/api/v1/goals/{parent.id}", headers=token_for(operator)).status_code == 404  # unseen
    gone = client.delete(f"/api/v1/goals/{parent.id}", headers=admin_headers)
    assert gone.status_code == 204
    assert client.get(f"/api/v1/goals/{a.id}", headers=admin_headers).status_code == 404


def test_the_goal_page_edits_and_deletes_with_a_confirm_and_csrf(client: Any, db: Session, make: Factory,
                                                                   admin: Any) -> None:
    from tests.test_pages import Console

    parent, a, _b = _split(db, make, admin)
    console = Console(client).login(admin)
    page = console.get(f"/goals/{parent.id}")
    assert 'data-testid="goal-edit"' in page.text
    assert "删除此目标及其 2 个子目标？" in html.unescape(page.text)
    share = html.unescape(console.get(f"/goals/{a.id}").text)
    assert "删除这个子目标？「三月净增」的子目标合计将变为 40 / 100。" in share and "拆分自" in share
    form = console.get(f"/goals/{parent.id}/edit")
    assert form.status_code == 200 and 'data-testid="goal-locked"' in form.text
    assert 'name="metric" disabled' in form.text
    bad = console.post(f"/goals/{parent.id}/edit", {"name": "三月净增", "target": "50", "start": "2026-03-01",
                                                     "deadline": "2026-03-31", "owner_id": str(admin.id)})
    assert bad.status_code == 422 and "子目标合计已为 100" in bad.text and 'value="50"' in bad.text
    saved = console.post(f"/goals/{parent.id}/edit", {"name": "三月净增", "target": "130", "start": "2026-03-01",
                                                       "deadline": "2026-03-31", "owner_id": str(admin.id)})
    db.expire_all()
    assert saved.status_code == 303 and db.get(Goal, parent.id).target == 130  # type: ignore[union-attr]
    no_token = console.post(f"/goals/{parent.id}/delete", {}, csrf=False)
    assert no_token.status_code == 403 and db.get(Goal, parent.id) is not None
    share_gone = console.post(f"/goals/{a.id}/delete", {})
    assert share_gone.status_code == 303 and share_gone.headers["location"] == f"/goals/{parent.id}"
    gone = console.post(f"/goals/{parent.id}/delete", {})
    assert gone.status_code == 303 and gone.headers["location"] == "/goals"
    db.expire_all()
    assert db.scalars(select(Goal)).all() == []


def test_an_operator_sees_why_a_goal_set_for_them_has_no_edit_button(client: Any, db: Session, make: Factory,
                                                                      admin: Any) -> None:
    from tests.test_pages import Console

    operator = make.user("operator", accounts=[make.account()])
    assigned = _goal(db, viewer_of(admin), scope=f"operator:{operator.id}", owner_id=operator.id)
    console = Console(client).login(operator)
    page = console.get(f"/goals/{assigned.id}")
    assert 'data-testid="goal-readonly"' in page.text and 'data-testid="goal-edit"' not in page.text
    assert "只有他们可以修改或删除" in page.text
    assert console.get(f"/goals/{assigned.id}/edit").status_code == 403
    assert console.post(f"/goals/{assigned.id}/delete", {}).status_code == 403
