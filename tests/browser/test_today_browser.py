"""今日任务 in a real browser: an operator opens the list, completes a chat task, sees the touch on the timeline."""

from __future__ import annotations

import os
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.viewer import SYSTEM
from tests.conftest import Factory

pytestmark = pytest.mark.browser


def _seed_tasks() -> dict[str, int]:
    """An operator of an account of their own, one customer due for a chat, today's tasks made."""
    from siyu.accounts.models import Account
    from siyu.maintenance import service
    from siyu.maintenance.schemas import PolicyIn
    from siyu.segments.schemas import parse_tree

    engine = make_engine(os.environ["SIYU_DATABASE_URL"])
    with Session(engine, expire_on_commit=False) as session:
        make = Factory(session)
        account = make.account(display_name="山野茶舍·滨江店", wecom_userid="today.binjiang",
                               wechat_id="shanye_binjiang")
        operator = make.user("operator", username="today.op", accounts=[account])
        session.get(Account, account.id).owner_user_id = operator.id  # type: ignore[union-attr]
        customer = make.customer(account, name="周敏", remark_name="周敏-爱喝白茶", phones=[])
        service.create_policy(session, viewer=SYSTEM, data=PolicyIn(
            name="滨江店每周一聊", every_days=7, quiet_days=2,
            conditions=parse_tree({"kind": "account", "account_ids": [account.id]})))
        service.generate_tasks(session)
        session.commit()
    engine.dispose()
    return {"customer": customer.id}


def test_operator_completes_a_chat_task_from_the_sidebar_and_sees_the_touch_on_the_timeline(tab: Any) -> None:
    ids = _seed_tasks()
    page = tab.page
    tab.login("today.op")
    page.click('[data-testid="today-link"]')  # the 工作台 leads to 今日任务
    page.wait_for_url(tab.site.url + "/today")
    expect(page.locator("h2")).to_have_text("今日任务")
    row = page.locator('[data-testid="task"]', has_text="周敏-爱喝白茶")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("该私聊了")

    # The same list at phone width, as the chat sidebar shows it; done from there.
    page.set_viewport_size({"width": 380, "height": 760})
    tab.go("/today?view=sidebar")
    row = page.locator('[data-testid="task"]', has_text="周敏-爱喝白茶")
    row.locator('input[name="note"]').fill("聊了白茶的存放")
    row.locator('select[name="follow_up_days"]').select_option("3")
    row.locator('[data-testid="task-done"]').click()
    page.wait_for_url(tab.site.url + "/today?view=sidebar")
    expect(page.locator('[data-testid="task"]', has_text="周敏-爱喝白茶")).to_have_count(0)
    tab.screenshot("today-sidebar")

    tab.go(f"/customers/{ids['customer']}")
    entry = page.locator('[data-testid="timeline-entry"][data-kind="chat"]').first
    expect(entry.locator('[data-testid="touch-content"]')).to_have_text("聊了白茶的存放")
    expect(entry.locator('[data-testid="touch-operator"]')).to_contain_text("today.op")
    assert not tab.errors, tab.errors
