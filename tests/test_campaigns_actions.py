"""The campaign page offers only the actions that apply where a campaign stands: a scheduled one is edited
or cancelled, one still going out is reminded or stopped, a finished one is copied and its results read —
and a stop posted for a finished campaign is refused, not recorded as a cancellation."""

from __future__ import annotations

import html
import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from siyu.campaigns.models import Campaign, CampaignRecipient, CampaignStatus, RecipientStatus
from tests.test_campaigns import later, segment_of
from tests.test_pages import Console


def _buttons(text: str) -> set[str]:
    block = text.split('data-testid="campaign-actions"', 1)[1].split("</div>", 1)[0]
    return set(re.findall(r'data-testid="campaign-([a-z]+)"', block))


def _campaign(client: TestClient, db: Session, make: Any, admin: Any, headers: dict[str, str],
              **extra: Any) -> int:
    account = make.account(kind="personal", wecom_userid=None)
    make.bulk_customers(account, 3)
    body = {"name": "周末", "segment_id": segment_of(db, admin, account), "text": "周末见"} | extra
    made = client.post("/api/v1/campaigns", headers=headers, json=body)
    assert made.status_code in (200, 201), made.text
    return int(made.json()["id"])


def _set(db: Session, campaign_id: int, status: CampaignStatus, recipients: RecipientStatus) -> None:
    db.execute(update(Campaign).where(Campaign.id == campaign_id).values(status=status.value))
    db.execute(update(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id,
                                               CampaignRecipient.status != RecipientStatus.left_out.value)
               .values(status=recipients.value))
    db.commit()


def test_a_scheduled_campaign_offers_edit_cancel_and_copy_only(client: TestClient, db: Session, make: Any,
                                                                admin: Any, admin_headers: dict[str, str]) -> None:
    campaign_id = _campaign(client, db, make, admin, admin_headers, scheduled_at=later(5).isoformat())
    page = Console(client).login(admin).get(f"/campaigns/{campaign_id}")
    assert _buttons(page.text) == {"edit", "cancel", "copy"}
    assert "取消定时群发" in page.text and "停止群发" not in page.text and 'id="campaign-edit"' in page.text


def test_a_sent_campaign_with_members_still_to_send_offers_remind_and_stop(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    campaign_id = _campaign(client, db, make, admin, admin_headers)
    _set(db, campaign_id, CampaignStatus.sent, RecipientStatus.waiting)
    page = Console(client).login(admin).get(f"/campaigns/{campaign_id}")
    assert _buttons(page.text) == {"refresh", "remind", "stop", "copy"}
    assert "尚未发送的成员将无法再发送" in html.unescape(page.text)  # the stop asks first


def test_a_finished_campaign_offers_copy_and_results_and_refuses_a_stop(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    campaign_id = _campaign(client, db, make, admin, admin_headers)
    _set(db, campaign_id, CampaignStatus.sent, RecipientStatus.delivered)
    assert client.post(f"/api/v1/campaigns/{campaign_id}/cancel", headers=admin_headers).status_code == 422
    console = Console(client).login(admin)
    page = console.get(f"/campaigns/{campaign_id}")
    assert _buttons(page.text) == {"refresh", "copy"} and "停止群发" not in page.text
    stop = console.post(f"/campaigns/{campaign_id}/cancel", {})
    assert stop.status_code == 422 and "没有可停止或提醒的了" in stop.text
    assert console.post(f"/campaigns/{campaign_id}/cancel", {}, csrf=False).status_code == 403
    db.expire_all()
    assert db.get(Campaign, campaign_id).status == CampaignStatus.sent.value  # type: ignore[union-attr]
    _set(db, campaign_id, CampaignStatus.cancelled, RecipientStatus.cancelled)
    assert _buttons(console.get(f"/campaigns/{campaign_id}").text) == {"refresh", "copy"}
