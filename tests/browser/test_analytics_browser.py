"""数据分析 in a browser: the stage-flow Sankey uses the card's whole width at 1440 and 1024 px, and the
weekly report prints on A4."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Tab, _open_tab


@pytest.mark.parametrize("width", [1440, 1024])
def test_the_stage_flow_sankey_spreads_across_its_card(chromium: Any, live_site: Any, width: int) -> None:
    for tab in _open_tab(chromium, live_site, viewport={"width": width, "height": 1000}):
        _check_sankey(tab, width)


def _check_sankey(tab: Tab, width: int) -> None:
    tab.login()
    tab.go("/analytics")
    chart = tab.page.locator("[data-sankey]")
    chart.wait_for()
    tab.page.locator("[data-sankey][data-chart-drawn]").wait_for(timeout=20000)  # the opening animation ended
    box = chart.bounding_box()
    nodes = tab.page.evaluate("""() => {
        const root = document.querySelector('[data-sankey]').getBoundingClientRect();
        return Array.from(document.querySelectorAll('[data-sankey] svg path')).map(p => {
            const r = p.getBoundingClientRect(); return [r.left - root.left, r.right - root.left]; });
    }""")
    left = min(n[0] for n in nodes)
    right = max(n[1] for n in nodes)
    tab.page.locator("[data-testid=sankey]").scroll_into_view_if_needed()
    tab.screenshot(f"analytics-{width}")
    # the flows reach across the card (its margins hold the labels), every label whole and inside the card
    assert right - left > 0.6 * box["width"], (left, right, box)
    labels = tab.page.evaluate("""() => {
        const root = document.querySelector('[data-sankey]').getBoundingClientRect();
        return Array.from(document.querySelectorAll('[data-sankey] svg text')).map(t => {
            const r = t.getBoundingClientRect(); return [t.textContent, r.left - root.left, r.right - root.left]; });
    }""")
    assert labels and all(text and not text.endswith("...") and lo >= -1 and hi <= box["width"] + 1
                          for text, lo, hi in labels), labels
    assert box["height"] >= 260
    assert not tab.errors, tab.errors


def test_the_weekly_report_page_prints(tab: Tab) -> None:
    tab.login()
    tab.go("/analytics/reports/weekly")
    tab.page.locator("[data-testid=report-flows]").wait_for()
    tab.page.emulate_media(media="print")
    assert not tab.page.locator(".siyu-nav").is_visible()
    assert not tab.page.locator("[data-testid=report-form]").is_visible()
    tab.screenshot("weekly-report-print")
    assert not tab.errors, tab.errors
