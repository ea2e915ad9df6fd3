"""The order import in a real browser: a bad GBK file is refused whole, a good one imports its orders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

HEADER = "订单号,付款时间,实付金额,订单状态,手机号,商品编码,商品名称,品类,数量,单价\n"
GOOD = (HEADER
        + "BRW-1001,2026-03-01 10:00:00,396.00,已完成,13812341234,SY-RG-150,武夷岩茶·肉桂 150g,岩茶,2,198.00\n"
        + "BRW-1002,2026-03-02 11:30:00,59.00,已付款,13900002222,SY-LP-10,桂花乌龙冷泡茶 10包,乌龙,1,59.00\n")
BAD = GOOD + "BRW-1003,2026-03-03 09:00:00,-5.00,已付款,13900003333,SY-LP-10,冷泡茶,乌龙,1,59.00\n"


def shown(tab: Any, path: str) -> list[str]:
    """The order numbers a list page shows."""
    tab.go(path)
    return [r.get_attribute("data-order-no") or "" for r in tab.page.locator('[data-testid="order-row"]').all()]


def upload(tab: Any, path: Path) -> None:
    page = tab.page
    tab.go("/orders/import")
    page.set_input_files("#order-file", str(path))
    page.click('[data-testid="order-import-submit"]')


def test_order_import_refuses_a_bad_gbk_file_whole_then_imports_a_good_one(tab: Any, tmp_path: Path) -> None:
    page = tab.page
    bad, good = tmp_path / "订单-有错.csv", tmp_path / "订单.csv"
    bad.write_bytes(BAD.encode("gbk"))  # GBK without BOM, as Excel on Chinese Windows writes it
    good.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())  # UTF-8 with a BOM
    tab.login()

    upload(tab, bad)
    expect(page.locator('[data-testid="import-invalid"]')).to_be_visible()
    row = page.locator('[data-testid="import-error"]')
    expect(row).to_have_count(1)
    assert row.get_attribute("data-row") == "4"
    expect(row).to_contain_text("实付金额")
    assert shown(tab, "/orders?q=BRW-1001") == []  # nothing written, not even the good rows before it

    upload(tab, good)
    expect(page.locator('[data-testid="import-result"]')).to_contain_text("2")
    tab.screenshot("orders-imported")
    listed = shown(tab, "/orders")
    assert "BRW-1001" in listed and "BRW-1002" in listed

    upload(tab, good)  # the same file again updates, never duplicates
    expect(page.locator('[data-testid="import-result"]')).to_be_visible()
    assert shown(tab, "/orders?q=BRW-1001") == ["BRW-1001"]
    assert shown(tab, "/orders?q=BRW-1002") == ["BRW-1002"]
    # 王芳 bought by her phone; the buyer Siyu does not know waits in the review queue.
    queued = shown(tab, "/orders?state=unmatched")
    assert "BRW-1002" in queued and "BRW-1001" not in queued
    assert not tab.errors, tab.errors
