"""An admin edits what the company owns, in a real browser: a persona, a password reset, a tag merge."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_admin_edits_an_account_persona_and_uploads_an_avatar(tab: Any, tmp_path: Path) -> None:
    page = tab.page
    tab.login()
    tab.go("/accounts")
    card = page.locator(f'[data-account-id="{tab.site.ids["online"]}"]')
    card.locator('[data-testid="account-edit"]').click()
    page.wait_for_url(re.compile(r"/accounts/\d+/edit$"))
    page.fill("#acc-positioning", "线上茶艺顾问，耐心讲茶")
    page.fill("#acc-signature", "一杯好茶，慢慢聊 🍵")
    page.fill("#acc-capacity", "20000")
    avatar = tmp_path / "avatar.png"
    avatar.write_bytes(PNG)
    page.set_input_files("#acc-avatar", str(avatar))
    page.click('[data-testid="account-save"]')
    expect(page.locator('[data-testid="notice"]')).to_have_text("已保存。")
    assert page.input_value("#acc-signature") == "一杯好茶，慢慢聊 🍵"
    assert page.get_attribute('[data-testid="avatar-image"]', "src").startswith("/media/persona/")

    # Over WeChat's raised limit: refused next to the form, in Chinese, nothing saved.
    page.fill("#acc-capacity", "30000")
    page.evaluate("document.querySelector('#acc-capacity').removeAttribute('max')")
    page.click('[data-testid="account-save"]')
    expect(page.locator('[data-testid="error-message"]')).to_contain_text("20000")
    tab.go("/accounts")
    expect(card).to_contain_text("线上茶艺顾问，耐心讲茶")
    expect(card).to_contain_text("20,000")
    assert not tab.errors


def test_admin_resets_a_password_shown_once_and_it_works(tab: Any, chromium: Any, live_site: Any) -> None:
    page = tab.page
    tab.login()
    tab.go("/users")
    form = page.locator('[data-testid="user-form"]')
    form.locator("#new-username").fill("zhou.reset")
    form.locator("#new-display-name").fill("周小妹")
    form.locator("#new-password").fill("an-old-password-1")
    form.locator("button[type=submit]").click()
    row = page.locator('tr[data-username="zhou.reset"]')
    expect(row).to_be_visible()
    row.locator('[data-testid="user-more"] summary').click()
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('[data-testid="reset-password"]').click()
    notice = page.locator('[data-testid="new-password-notice"]')
    expect(notice).to_contain_text("周小妹 的新密码")
    password = page.inner_text('[data-testid="new-password"]').strip()
    assert len(password) >= 12
    tab.go("/users")
    assert password not in page.content(), "shown only once"

    context = chromium.new_context(locale="zh-CN")
    other = context.new_page()
    other.goto(live_site.url + "/login")
    other.fill("#username", "zhou.reset")
    other.fill("#password", password)
    other.click("button[type=submit]")
    other.wait_for_url(live_site.url + "/")
    context.close()
    tab.go("/audit")
    expect(page.locator("body")).to_contain_text("重设了密码")
    assert not tab.errors


def test_admin_merges_two_tags(tab: Any) -> None:
    page = tab.page
    tab.login()
    tab.go("/settings/tags")
    page.fill("#group-name", "香型")
    page.click('[data-testid="group-form"] button[type=submit]')
    group = page.locator('[data-group="香型"]')
    expect(group).to_be_visible()
    for name in ("兰花香", "兰香"):
        group.locator('input[name="name"]').fill(name)
        group.locator('button[type=submit]').click()
        group = page.locator('[data-group="香型"]')
        expect(group.locator('[data-testid="manage-tag"]', has_text=name)).to_be_visible()

    group.locator('[data-testid="manage-tag"]', has_text=re.compile("^兰香$")).click()
    expect(page.locator('[data-testid="tag-count"]')).to_have_text("0 位客户带有这个标签。")
    page.select_option("#tag-target", label="兰花香")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('[data-testid="tag-merge-submit"]')
    expect(page.locator('[data-testid="notice"]')).to_contain_text("标签已合并")
    tags = page.locator('[data-group="香型"] [data-testid="manage-tag"]').all_inner_texts()
    assert [t.strip() for t in tags] == ["兰花香"]
    assert not tab.errors
