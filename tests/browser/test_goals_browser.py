"""目标 in a real browser: the admin sets a goal, sees its progress on the 工作台 and exports the chart's data."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from siyu.core.settings import local_today

pytestmark = pytest.mark.browser


def test_admin_creates_a_goal_sees_its_progress_on_the_dashboard_and_exports_the_chart(tab: Any) -> None:
    page = tab.page
    tab.login("admin")
    expect(page.locator('[data-testid="board-admin"]')).to_be_visible()
    expect(page.locator('[data-testid="chart-company"] svg')).to_have_count(1)  # ECharts drew the chart
    tab.go("/goals")
    today = local_today()
    page.fill("#goal-name", "本月净增好友")
    page.select_option("#goal-metric", "net_adds")
    page.select_option("#goal-scope", "company")
    page.fill("#goal-target", "20")
    page.fill("#goal-start", (today - timedelta(days=3)).isoformat())
    page.fill("#goal-deadline", (today + timedelta(days=20)).isoformat())
    page.click('[data-testid="goal-save"]')
    page.wait_for_url(tab.site.url + "/goals/*")
    expect(page.locator('[data-testid="goal-chart"] svg')).to_have_count(1)
    expect(page.locator('[data-testid="goal-progress"]')).not_to_have_text("—")
    tab.go("/")  # the first page after login: the 工作台
    row = page.locator('[data-testid="board-goals"] a', has_text="本月净增好友")
    expect(row).to_have_count(1)
    expect(row.locator('[data-testid="goal-progress"]')).to_contain_text("/ 20")
    # The company chart's data: the table view, then its export.
    page.locator('[data-testid="table-company"] summary').click()
    expect(page.locator('[data-testid="table-company"] table')).to_contain_text("净增")
    with page.expect_download() as info:
        page.click('[data-testid="csv-company"]')
    content = open(info.value.path(), encoding="utf-8-sig").read()  # noqa: SIM115
    assert content.splitlines()[0].startswith("指标,今天,昨日,上周同日")
    assert not tab.errors, tab.errors
