"""The import wizard in a real browser: a GBK file with a bad row, its error report, then a good file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

BAD = "备注名,昵称,手机号,标签\n周杰-导入测试,周杰,13811112222,人群:学生\n吴敏-导入测试,吴敏,1381111,人群:白领\n"
GOOD = "备注名,昵称,手机号,标签\n周杰-导入测试,周杰,13811112222,人群:学生\n吴敏-导入测试,吴敏,13811113333,人群:白领\n"


def upload(tab: Any, path: Path) -> None:
    page = tab.page
    page.set_input_files("#import-file", str(path))
    page.select_option("#import-account", label="山野茶舍·线上")
    page.click('[data-testid="import-upload"]')
    expect(page.locator('[data-testid="import-columns"]')).to_be_visible()


def test_import_wizard_reports_a_bad_gbk_file_then_imports_a_good_one(tab: Any, tmp_path: Path) -> None:
    page = tab.page
    bad, good = tmp_path / "好友-有错.csv", tmp_path / "好友.csv"
    bad.write_bytes(BAD.encode("gbk"))  # GBK without BOM, as Excel on Chinese Windows writes it
    good.write_bytes(GOOD.encode("gbk"))
    tab.login()
    tab.go("/customers")
    page.click('[data-testid="open-import"]')
    expect(page.locator("h2")).to_have_text("导入客户")

    upload(tab, bad)
    # The Chinese headers were recognised from a GBK file: each column is already matched.
    assert page.input_value('[data-testid="map-0"]') == "remark_name"
    assert page.input_value('[data-testid="map-2"]') == "phone"
    assert "周杰" in page.inner_text('[data-testid="import-columns"]')
    page.click('[data-testid="import-check"]')
    report = page.locator('[data-testid="import-errors"]')
    expect(report).to_be_visible()
    expect(page.locator('[data-testid="import-invalid"]')).to_contain_text("没有导入任何数据")
    row = page.locator('[data-testid="import-error"]')
    expect(row).to_have_count(1)
    assert row.get_attribute("data-row") == "3"
    expect(row).to_contain_text("手机号")
    expect(row).to_contain_text("不是大陆手机号：1381111")
    tab.screenshot("import-errors")

    page.click('[data-testid="import-again"]')
    upload(tab, good)
    page.click('[data-testid="import-check"]')
    expect(page.locator('[data-testid="import-valid"]')).to_contain_text("全部 2 行都已通过检查")
    expect(page.locator('[data-testid="preview-created"]')).to_have_text("2")
    page.click('[data-testid="import-confirm"]')
    expect(page.locator('[data-testid="result-created"]')).to_have_text("2")
    tab.screenshot("import-done")

    page.click('[data-testid="import-open-list"]')
    page.fill("#filter-q", "导入测试")
    names = page.locator('[data-testid="customer-name"]')
    expect(names).to_have_count(2)
    assert sorted(n.strip() for n in names.all_inner_texts()) == ["吴敏", "周杰"]
    assert not tab.errors, tab.errors


def test_import_wizard_imports_an_xlsx_workbook(tab: Any, tmp_path: Path) -> None:
    import openpyxl

    page = tab.page
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["备注名", "昵称", "手机号", "标签"])
    sheet.append(["郑爽-表格导入", "郑爽", 13822221111, "人群:白领"])  # a phone typed as a number in Excel
    sheet.append(["冯涛-表格导入", "冯涛", "138 2222 3333", "人群:学生"])
    path = tmp_path / "好友.xlsx"
    workbook.save(path)
    tab.login()
    tab.go("/customers/import")
    upload(tab, path)
    assert page.input_value('[data-testid="map-2"]') == "phone"
    assert "郑爽" in page.inner_text('[data-testid="import-columns"]')
    page.click('[data-testid="import-check"]')
    expect(page.locator('[data-testid="import-valid"]')).to_contain_text("全部 2 行都已通过检查")
    page.click('[data-testid="import-confirm"]')
    expect(page.locator('[data-testid="result-created"]')).to_have_text("2")
    page.click('[data-testid="import-open-list"]')
    page.fill("#filter-q", "表格导入")
    names = page.locator('[data-testid="customer-name"]')
    expect(names).to_have_count(2)
    assert sorted(n.strip() for n in names.all_inner_texts()) == ["冯涛", "郑爽"]
    assert not tab.errors, tab.errors
