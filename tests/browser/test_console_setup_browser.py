"""The rest of an admin's setup in a real browser (issue 21): a user's role, accounts and status, a tag
reordered and deleted with its count confirmed, a custom field edited and retired, a customer added by
hand — and an operator renewing a personal account's own QR code from 今日任务."""

from __future__ import annotations

import io
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from tests.conftest import Factory

pytestmark = pytest.mark.browser

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_admin_changes_a_users_role_and_accounts_then_disables_them(tab: Any) -> None:
    page = tab.page
    tab.login()
    tab.go("/users")
    form = page.locator('[data-testid="user-form"]')
    form.locator("#new-username").fill("wu.setup")
    form.locator("#new-display-name").fill("吴小雨")
    form.locator("#new-password").fill("a-first-password-1")
    form.locator("button[type=submit]").click()
    row = page.locator('tr[data-username="wu.setup"]')
    expect(row).to_contain_text("未分配账号")

    row.locator('[data-testid="user-more"] summary').click()
    row.locator('[data-testid="user-full-edit"] label', has_text="山野茶舍·线上").locator("input").check()
    row.locator('[data-testid="user-full-edit"] input[name="display_name"]').fill("吴小雨·线上")
    row.locator('[data-testid="user-full-save"]').click()
    row = page.locator('tr[data-username="wu.setup"]')
    expect(row).to_contain_text("山野茶舍·线上")
    expect(row).to_contain_text("吴小雨·线上")

    edit = row.locator('[data-testid="user-edit"]')
    edit.locator('select[name="role"]').select_option("service")
    edit.locator('input[name="is_active"]').uncheck()
    edit.locator("button[type=submit]").click()
    row = page.locator('tr[data-username="wu.setup"]')
    expect(row).to_contain_text("已停用")
    assert "客服" in row.inner_text()
    tab.go("/audit")
    expect(page.locator("body")).to_contain_text("吴小雨·线上")
    assert not tab.errors


def test_admin_reorders_a_tag_and_deletes_one_after_confirming_its_count(tab: Any) -> None:
    page = tab.page
    tab.login()
    tab.go("/settings/tags")
    page.fill("#group-name", "茶类")
    page.click('[data-testid="group-form"] button[type=submit]')
    for name in ("绿茶", "岩茶", "花茶"):
        group = page.locator('[data-group="茶类"]')
        group.locator('input[name="name"]').fill(name)
        group.locator("button[type=submit]").click()
        expect(page.locator('[data-group="茶类"] [data-testid="manage-tag"]', has_text=name)).to_be_visible()

    def order() -> list[str]:
        return [t.strip() for t in page.locator('[data-group="茶类"] [data-testid="manage-tag"]').all_inner_texts()]

    assert order() == ["绿茶", "岩茶", "花茶"]
    page.locator('[data-group="茶类"] [data-testid="manage-tag"]', has_text="花茶").click()
    page.click('[data-testid="tag-move-up"]')
    tab.go("/settings/tags")
    assert order() == ["绿茶", "花茶", "岩茶"]

    page.locator('[data-group="茶类"] [data-testid="manage-tag"]', has_text="岩茶").click()
    expect(page.locator('[data-testid="tag-count"]')).to_have_text("0 位客户带有这个标签。")
    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click('[data-testid="tag-delete-submit"]')
    page.wait_for_url(re.compile(r"/settings/tags"))
    assert messages and "0" in messages[0]
    assert order() == ["绿茶", "花茶"]
    assert not tab.errors


def test_admin_edits_a_custom_field_and_retires_it(tab: Any) -> None:
    page = tab.page
    tab.login()
    tab.go("/settings/tags")
    form = page.locator('[data-testid="field-form"]')
    form.locator("#field-label").fill("口味偏好")
    form.locator("#field-key").fill("taste_setup")
    form.locator("#field-type").select_option("choice")
    form.locator("#field-choices").fill("清淡,浓郁")
    form.locator("button[type=submit]").click()
    row = page.locator("tr", has_text="taste_setup")
    expect(row).to_contain_text("口味偏好")
    row.locator('[data-testid="manage-field"]').click()
    page.wait_for_url(re.compile(r"/settings/fields/\d+$"))
    page.fill('[data-testid="field-edit"] #field-label', "口味")
    page.fill('[data-testid="field-edit"] #field-choices', "清淡,浓郁,回甘")
    page.click('[data-testid="field-edit"] button[type=submit]')
    row = page.locator("tr", has_text="taste_setup")
    expect(row).to_contain_text("回甘")

    row.locator('[data-testid="manage-field"]').click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('[data-testid="field-retire"]')
    row = page.locator("tr", has_text="taste_setup")
    expect(row).to_contain_text("已停用")
    assert not tab.errors


def test_admin_adds_a_customer_by_hand_and_a_second_time_is_told_they_are_here(tab: Any) -> None:
    page = tab.page
    tab.login()
    tab.go("/customers/new")
    page.fill("#new-name", "郑好")
    page.fill("#new-phone", "+86 139-0000-1234")
    page.select_option("#new-account", str(tab.site.ids["online"]))
    page.fill("#new-remark", "郑好-朋友介绍")
    page.click('[data-testid="customer-new-save"]')
    page.wait_for_url(re.compile(r"/customers/\d+$"))
    expect(page.locator("body")).to_contain_text("郑好-朋友介绍")

    tab.go("/customers/new")
    page.fill("#new-name", "郑好")
    page.fill("#new-phone", "13900001234")
    page.select_option("#new-account", str(tab.site.ids["online"]))
    page.click('[data-testid="customer-new-save"]')
    expect(page.locator('[data-testid="existing-customer"]')).to_contain_text("郑好")

    tab.go("/customers/new")
    page.fill("#new-name", "没有账号")
    page.evaluate("document.querySelector('#new-account').removeAttribute('required')")
    page.evaluate("document.querySelector('#new-account').value = ''")
    page.click('[data-testid="customer-new-save"]')
    expect(page.locator('[data-testid="error-message"]')).to_be_visible()
    assert re.search(r"[\u4e00-\u9fff]", page.inner_text('[data-testid="error-message"]'))
    assert [e for e in tab.errors if "status of 409" not in e] == []  # 409: "already here", answered on the form


def _seed_qr_renewal() -> int:
    """A personal account of an operator whose own QR code expires tomorrow; today's tasks made."""
    from siyu.accounts import media, qr_renewal
    from siyu.accounts.models import Account
    from siyu.core.settings import local_today

    engine = make_engine(os.environ["SIYU_DATABASE_URL"])
    with Session(engine, expire_on_commit=False) as session:
        make = Factory(session)
        account = make.account(display_name="山野茶舍·阿满", kind="personal", wecom_userid=None,
                               qr_image_url=media.save_image(io.BytesIO(PNG), field="qr_image"),
                               qr_expires_on=local_today() + timedelta(days=1))
        operator = make.user("operator", username="qr.op", accounts=[account])
        session.get(Account, account.id).owner_user_id = operator.id  # type: ignore[union-attr]
        qr_renewal.make_renewal_tasks(session)
        session.commit()
    engine.dispose()
    return int(account.id)


def test_an_operator_renews_the_accounts_qr_from_todays_task(tab: Any, tmp_path: Path) -> None:
    account_id = _seed_qr_renewal()
    page = tab.page
    tab.login("qr.op")
    tab.go("/today")
    task = page.locator('[data-testid="task"][data-kind="account_qr"]')
    expect(task).to_contain_text("「山野茶舍·阿满」的个人微信二维码将于")
    task.locator('[data-testid="task-upload-qr"]').click()
    page.wait_for_url(re.compile(rf"/accounts/{account_id}/qr$"))
    image = tmp_path / "qr.png"
    image.write_bytes(PNG)
    page.set_input_files('[data-testid="qr-upload"]', str(image))
    from siyu.core.settings import local_today

    page.fill('[data-testid="qr-expires"]', (local_today() + timedelta(days=7)).isoformat())
    page.click('[data-testid="qr-save"]')
    expect(page.locator('[data-testid="notice"]')).to_have_text("已保存。")
    assert page.get_attribute('[data-testid="qr-image"]', "src").startswith("/media/persona/")
    tab.go("/today")
    expect(page.locator('[data-testid="task"][data-kind="account_qr"]')).to_have_count(0)
    assert not tab.errors


def test_admin_creates_a_personal_account_with_its_qr_and_retires_it(tab: Any, tmp_path: Path) -> None:
    from siyu.core.settings import local_today

    page = tab.page
    tab.login()
    tab.go("/accounts")
    page.click('[data-testid="account-new"]')
    page.wait_for_url(re.compile(r"/accounts/new$"))
    page.fill("#acc-name", "山野茶舍·试用号")
    page.select_option("#acc-kind", "personal")
    page.fill("#acc-capacity", "5000")
    image = tmp_path / "qr.png"
    image.write_bytes(PNG)
    page.set_input_files("#acc-qr_image", str(image))
    page.fill("#acc-qr-expires", (local_today() + timedelta(days=10)).isoformat())
    page.click('[data-testid="account-save"]')
    page.wait_for_url(re.compile(r"/accounts/\d+/edit\?saved=1$"))
    assert page.get_attribute('[data-testid="qr-image"]', "src").startswith("/media/persona/")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click('[data-testid="account-retire"]')
    expect(page.locator('[data-testid="retired"]')).to_have_text("已停用")
    assert not tab.errors
