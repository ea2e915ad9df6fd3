"""A group's page in a real browser: its registry saved through the form, the members' roles, and the health
chart drawn by ECharts (served locally) from the daily snapshots; no console error on the way."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.viewer import SYSTEM
from tests.conftest import Factory

pytestmark = pytest.mark.browser


def _seed_group(suffix: str = "") -> int:
    from siyu.groups import health, service
    from siyu.groups.models import GroupMessage

    engine = make_engine(os.environ["SIYU_DATABASE_URL"])
    now = datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as session:
        Factory(session).account(display_name="山野茶舍·郑州", wecom_userid=f"browser.owner{suffix}")
        detail = {"chat_id": f"wrBROWSER01{suffix}", "name": "金万家郑州中心金粉群" + suffix,
                  "owner": f"browser.owner{suffix}",
                  "admin_list": [], "member_list": [
                      {"userid": f"browser.owner{suffix}", "type": 1,
                       "join_time": int((now - timedelta(days=20)).timestamp())},
                      *({"userid": f"wmBROWSER{i}", "type": 2, "name": f"茶友{i} 🍵",
                         "join_time": int((now - timedelta(days=20 - i)).timestamp())} for i in range(8))]}
        group = service.apply_group_chat(session, detail, at=now - timedelta(days=20))
        for day in range(1, 8):
            session.add(GroupMessage(msgid=f"browser-{day}{suffix}", chat_id=group.chat_id, group_chat_id=group.id,
                                     sender="wmBROWSER1", text="早上好", sent_at=now - timedelta(days=day)))
        session.flush()
        for back in range(7, 0, -1):
            health.snapshot(session, now=now - timedelta(days=back - 1))
        session.commit()
        group_id = group.id
    engine.dispose()
    assert SYSTEM.sees_all_accounts
    return group_id


def test_the_group_page_saves_its_registry_and_draws_the_health_chart(tab: Any) -> None:
    group_id = _seed_group()
    page = tab.page
    tab.login("admin")
    tab.go(f"/groups/{group_id}")
    expect(page.locator('[data-testid="group-title"]')).to_have_text("金万家郑州中心金粉群")
    chart = page.locator('[data-testid="health-chart"]')
    expect(chart.locator("svg")).to_have_count(1)  # ECharts drew it (the vendored copy, no CDN)
    expect(page.locator('[data-testid="health-badge"]')).to_have_text("活跃")

    form = page.locator('[data-testid="registry-form"]')
    form.locator('select[name="kind"]').select_option("marketing")
    form.locator('input[name="tier"]').fill("金粉群")
    form.locator('input[name="region"]').fill("郑州")
    form.locator('button[type="submit"]').click()
    page.wait_for_url(tab.site.url + f"/groups/{group_id}")
    expect(page.locator('[data-testid="registry-form"] select[name="kind"]')).to_have_value("marketing")
    expect(page.locator('[data-testid="group-capacity"]')).to_contain_text("9 / 200")
    expect(page.locator('[data-testid="member-role"]').first).to_contain_text("群主")
    tab.screenshot("group-page")

    tab.go("/groups?kind=marketing&tier=金粉群")
    expect(page.locator('[data-testid="group-row"]')).to_have_count(1)
    assert not tab.errors, tab.errors


def _seed_posts(group_id: int) -> None:
    """A marketing group with 早报 / 晚报 lines: this week's posts, some confirmed, one refused."""
    from siyu.core.settings import local_zone
    from siyu.groups import posts, registry
    from siyu.groups.models import GroupChat, GroupPost

    engine = make_engine(os.environ["SIYU_DATABASE_URL"])
    zone = local_zone()
    today = datetime.now(zone).date()
    with Session(engine, expire_on_commit=False) as session:
        group = session.get(GroupChat, group_id)
        assert group is not None
        registry.update_registry(session, group=group, data=registry.RegistryIn(kind="marketing", tier="孵化群"),
                                 viewer=SYSTEM)
        lines = (("morning", "07:30", "【早报】早上好！今日茶事"), ("evening", "21:00", "【晚报】今日回顾"))
        for slot, at, text in lines:
            posts.save_plan(session, viewer=SYSTEM, data=posts.PlanIn(kind="marketing", slot=slot, at_time=at,
                                                                      text=text))
        week = posts.week_of(today)
        for day in week:
            start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
            posts.schedule_day(session, day=day, now=start)
        for post in session.query(GroupPost).all():
            local_day = post.due_at.astimezone(zone).date()
            if local_day < today:
                post.status, post.msgid = "confirmed", "msgBROWSER"
        session.commit()
    engine.dispose()


def test_the_posts_calendar_shows_the_week_by_kind_and_takes_a_new_line(tab: Any) -> None:
    group_id = _seed_group("2")
    _seed_posts(group_id)
    page = tab.page
    tab.login("admin")
    for width in (1440, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        tab.go("/groups/posts?kind=marketing")
        expect(page.locator('[data-testid="plan-row"]')).to_have_count(2)
        expect(page.locator('[data-testid="calendar-cell"]')).to_have_count(14)
        tab.screenshot(f"group-posts-{width}")
        for path, name in ((f"/groups/{group_id}/intake", "group-intake"), ("/groups/welcome", "group-welcome"),
                           ("/groups", "groups-list")):
            tab.go(path)
            tab.screenshot(f"{name}-{width}")
    tab.go("/groups/posts?kind=marketing")
    form = page.locator('[data-testid="plan-form"]')
    form.locator('select[name="slot"]').select_option("task")
    form.locator('input[name="at_time"]').fill("8点")
    form.locator('textarea[name="text"]').fill("【今日任务】晒茶席")
    form.locator('button[type="submit"]').click()
    expect(page.locator('[data-testid="error-message"]')).to_contain_text("时间格式为")
    form = page.locator('[data-testid="plan-form"]')
    form.locator('input[name="at_time"]').fill("08:00")
    form.locator('button[type="submit"]').click()
    page.wait_for_url(tab.site.url + "/groups/posts?kind=marketing")
    expect(page.locator('[data-testid="plan-row"]')).to_have_count(3)
    expect(page.locator('[data-testid="plan-row"][data-slot="task"]')).to_contain_text("8:00 任务公告")
    assert not tab.errors, tab.errors
