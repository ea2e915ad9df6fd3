"""群发 in a real browser: a planner checks the quota and split of a mass send to a segment, sends it, the
operator ticks off the task list of the personal account, and the campaign page fills with the results."""

from __future__ import annotations

import os
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.viewer import SYSTEM
from tests.conftest import Factory

pytestmark = pytest.mark.browser


def _seed() -> dict[str, Any]:
    """A personal account with three customers and a segment of them."""
    from siyu.accounts.models import Account
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn, parse_tree
    from siyu.team.models import User

    engine = make_engine(os.environ["SIYU_DATABASE_URL"])
    with Session(engine, expire_on_commit=False) as session:
        make = Factory(session)
        account = make.account(display_name="山野茶舍·春茶号", kind="personal", wecom_userid=None,
                               wechat_id="shanye_chuncha")
        admin = session.scalar(select(User).where(User.username == "admin"))
        assert admin is not None
        session.get(Account, account.id).owner_user_id = admin.id  # type: ignore[union-attr]
        for name in ("陈静-春茶控", "刘洋-白茶党", "孙丽-爱喝红茶"):
            make.customer(account, name=name.split("-")[0], remark_name=name, phones=[])
        segment = segments_service.create_segment(session, viewer=SYSTEM, data=SegmentIn(
            name="春茶号好友", conditions=parse_tree({"kind": "and", "conditions": [
                {"kind": "account", "account_ids": [account.id]}]})))
        session.commit()
    engine.dispose()
    return {"segment": segment.id}


@pytest.fixture
def patient(tab: Any) -> Any:
    """The shared machine is loaded: this test waits longer than the default 5 s for each step."""
    tab.page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)
    yield tab
    expect.set_options(timeout=5_000)


def test_create_a_campaign_to_a_segment_send_it_and_see_the_results_page_fill(patient: Any) -> None:
    tab = patient
    ids = _seed()
    page = tab.page
    tab.login()
    tab.go("/campaigns")
    expect(page.locator("h2")).to_have_text("群发")
    page.click('[data-testid="new-campaign"]')
    page.fill("#c-name", "春茶上新")
    page.select_option("#c-segment", str(ids["segment"]))
    page.fill("#c-text", "{账号}：明前龙井到了")
    page.click('[data-testid="campaign-check"]')
    expect(page.locator('[data-testid="plan-targeted"]')).to_have_text("3")
    expect(page.locator('[data-testid="plan-over-quota"]')).to_have_text("0")

    page.click('[data-testid="campaign-send"]')
    page.wait_for_url(tab.site.url + "/campaigns/*")
    expect(page.locator("h2")).to_have_text("春茶上新")
    expect(page.locator('[data-testid="campaign-funnel"] svg')).to_have_count(1)
    page.click('[data-testid="campaign-refresh"]')
    expect(page.locator('[data-testid="campaign-status"]')).to_have_text("已发送")
    expect(page.locator('[data-testid="delivery-rate"]')).to_have_text("0.0%")
    campaign_url = page.url.split("?")[0]

    # The operator sends it by hand and ticks the task off in the sidebar's task list.
    tab.go("/today?view=sidebar")
    row = page.locator('[data-testid="task"]', has_text="陈静-春茶控")
    expect(row).to_contain_text("明前龙井到了")
    row.locator('[data-testid="task-done"]').click()
    expect(page.locator('[data-testid="task"]', has_text="陈静-春茶控")).to_have_count(0)

    page.goto(campaign_url)
    page.click('[data-testid="campaign-refresh"]')
    expect(page.locator('[data-testid="delivery-rate"]')).to_have_text("33.3%")
    page.click('[data-testid="step-delivered"]')
    expect(page.locator('[data-testid="campaign-customers"] tbody tr')).to_have_count(1)
    expect(page.locator('[data-testid="campaign-customers"]')).to_contain_text("陈静")
    tab.screenshot("campaign-results")
    assert not tab.errors, tab.errors
