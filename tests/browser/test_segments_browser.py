"""The segment builder (客户分群) in a real browser: build, see the live count, save, export."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_build_a_segment_see_its_count_save_it_and_export_it(tab: Any) -> None:
    page = tab.page
    tab.login()
    tab.go("/segments")
    page.click('[data-testid="segment-new"]')
    expect(page.locator("h2")).to_have_text("新建分群")
    expect(page.locator('[data-testid="segment-count"]')).to_have_text("添加条件即可看到符合的客户")

    page.fill('[data-testid="segment-name"]', "学生党")
    page.select_option('[data-testid="segment-add-kind"]', "tag")
    page.click('[data-testid="segment-add"]')
    # 来源:线上广告: only the seed's 12 have it (other browser tests import more 人群:学生 into the same site).
    page.select_option('[data-testid="segment-row"] select[data-key="tag_ids"]', label="来源:线上广告")
    # The live count and a sample come while editing, before anything is saved.
    expect(page.locator('[data-testid="segment-count"]')).to_have_text("12 位客户符合")
    expect(page.locator('[data-testid="segment-sample"] li')).to_have_count(10)

    # A second condition narrows it: AND "has not been chatted with for 30 days".
    page.select_option('[data-testid="segment-add-kind"]', "no_touch")
    page.click('[data-testid="segment-add"]')
    expect(page.locator('[data-testid="segment-count"]')).to_have_text("8 位客户符合")
    tab.screenshot("segment-builder")

    page.click('[data-testid="segment-save"]')
    page.wait_for_url(tab.site.url + "/segments/*")
    expect(page.locator("h2")).to_have_text("学生党")
    expect(page.locator('[data-testid="segment-count"]')).to_have_text("8 位客户符合")
    expect(page.locator('[data-testid="segment-row"]')).to_have_count(2)  # the saved conditions, as rows again

    with page.expect_download() as download_info:
        page.click('[data-testid="segment-export"]')
    content = open(download_info.value.path(), encoding="utf-8-sig").read()  # noqa: SIM115
    rows = [line for line in content.splitlines()[1:] if line.strip()]
    assert len(rows) == 8 and "顾客01" in content and "王芳" not in content and "顾客00" not in content

    page.click('[data-testid="segment-open-list"]')
    expect(page.locator('[data-testid="filter-segment"]')).to_have_value(page.url.rsplit("=", 1)[1])
    assert not tab.errors, tab.errors
