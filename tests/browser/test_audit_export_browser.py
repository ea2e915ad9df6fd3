"""The audit log's filters and an operator's masked export, in a real browser."""

from __future__ import annotations

import codecs
import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import _open_tab

pytestmark = pytest.mark.browser


def test_an_operators_export_is_masked_and_the_admin_finds_it_by_actor_action_kind_and_date(
        tab: Any, chromium: Any, live_site: Any) -> None:
    page = tab.page
    tab.login()
    # The admin adds an operator for the store account, by the console's own form.
    tab.go("/users")
    page.fill("#new-username", "zhou")
    page.fill("#new-display-name", "运维小周")
    page.fill("#new-password", live_site.password)
    page.select_option("#new-role", "operator")
    page.check('[data-testid="user-form"] label:has-text("山野茶舍·西湖店") input[name="account_ids"]')
    page.click('button:has-text("创建用户")')
    page.wait_for_url(live_site.url + "/users")
    expect(page.locator('[data-testid="export-settings-link"]')).to_have_text("导出权限")

    # The operator exports their customers: a direct download (few rows), phones masked.
    operator = next(_open_tab(chromium, live_site, viewport={"width": 1366, "height": 900}))
    operator.login("zhou")
    operator.go("/customers")
    with operator.page.expect_download() as info:
        operator.page.click('[data-testid="export-csv"]')
    raw = Path(info.value.path()).read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    wangfang = next(r for r in rows if r["昵称"] == "王芳")
    assert wangfang["手机号"] == "138****1234"
    assert not any("13812341234" in value for r in rows for value in r.values())
    assert operator.errors == []

    # The admin finds that export: who, what, which kind, today.
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    tab.go("/audit")
    page.select_option("#audit-actor", label="运维小周")
    page.select_option("#audit-action", label="导出")
    page.select_option("#audit-entity", label="客户列表")
    page.fill("#audit-since", today)
    page.fill("#audit-until", today)
    page.click('[data-testid="audit-filters"] button[type=submit]')
    entries = page.locator('[data-testid="audit-entry"]')
    expect(entries).to_have_count(1)
    entry = entries.first
    expect(entry.locator('[data-testid="audit-actor"]')).to_have_text("运维小周")
    expect(entry.locator('[data-testid="audit-action"]')).to_have_text("导出")
    expect(entry.locator(".siyu-user-text").first).to_have_text(f"导出 {len(rows)} 位客户（CSV）")
    entry.locator("details summary").click()
    changes = entry.locator('[data-testid="audit-changes"]')
    expect(changes.locator('tr:has-text("含完整手机号")')).to_contain_text("否")
    expect(changes.locator('tr:has-text("途径")')).to_contain_text("控制台")
    assert page.input_value("#audit-since") == today, "the filters stay in the form"
    tab.screenshot("audit-filtered")

    # A date range with nothing in it says so; the CSV link carries the filters.
    page.fill("#audit-since", "2020-01-01")
    page.fill("#audit-until", "2020-01-02")
    page.click('[data-testid="audit-filters"] button[type=submit]')
    expect(page.locator(".empty-title")).to_have_text("没有符合筛选条件的记录")
    assert "since=2020-01-01" in (page.get_attribute('[data-testid="audit-export"]', "href") or "")
    assert tab.errors == []
