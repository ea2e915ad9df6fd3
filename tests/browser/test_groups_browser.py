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


def _seed_group() -> int:
    from siyu.groups import health, service
    from siyu.groups.models import GroupMessage

    engine = make_engine(os.environ["SIYU_DATABASE_URL"])
    now = datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as session:
        Factory(session).account(display_name="山野茶舍·郑州", wecom_userid="browser.owner")
        detail = {"chat_id": "wrBROWSER01", "name": "金万家郑州中心金粉群", "owner": "browser.owner",
                  "admin_list": [], "member_list": [
                      {"userid": "browser.owner", "type": 1, "join_time": int((now - timedelta(days=20)).timestamp())},
                      *({"userid": f"wmBROWSER{i}", "type": 2, "name": f"茶友{i} 🍵",
                         "join_time": int((now - timedelta(days=20 - i)).timestamp())} for i in range(8))]}
        group = service.apply_group_chat(session, detail, at=now - timedelta(days=20))
        for day in range(1, 8):
            session.add(GroupMessage(msgid=f"browser-{day}", chat_id=group.chat_id, group_chat_id=group.id,
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
