"""Channel console: create, codes, QR and poster, the public link, the report and its exports."""

from __future__ import annotations

import io
from typing import Any

from fastapi.testclient import TestClient
from openpyxl import load_workbook
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.channels import service
from siyu.channels.models import Channel
from tests.test_pages import Console


def test_planner_creates_a_channel_and_prints_its_poster(client: TestClient, db: Session, make: Any) -> None:
    account = make.account(display_name="茶小满", wechat_id="chaxiaoman", kind="personal", wecom_userid=None)
    planner = make.user("planner")
    console = Console(client).login(planner)
    assert 'data-testid="new-channel"' in console.get("/channels").text
    bad = console.post("/channels/save", {"name": "", "kind": "store_staff", "status": "active",
                                          "cost_model": "per_add", "cost_amount": "x", "account_strategy": "single",
                                          "incentive_kind": "none"})
    assert bad.status_code == 422 and 'data-testid="error-name"' in bad.text
    long_name = "门店收银台" * 12  # 60 characters
    saved = console.post("/channels/save", {"name": long_name, "kind": "store_staff", "status": "active",
                                            "cost_model": "per_add", "cost_amount": "3", "account_ids": [account.id],
                                            "account_strategy": "single", "incentive_kind": "coupon",
                                            "incentive_text": "加好友立得 3 元券", "tag_names": "来源:门店",
                                            "welcome_text": "您好，券码 {券码}"})
    assert saved.status_code == 303, saved.text
    channel = db.scalar(select(Channel))
    assert channel is not None and channel.tag_names == ["来源:门店"]
    codes = console.post(f"/channels/{channel.id}/codes", {"codes": "A1\nA2,A3\nA1"})
    assert codes.status_code == 303
    assert "已发出 0 / 3" in console.get(f"/channels/{channel.id}").text
    qr = console.get(f"/channels/{channel.id}/qr.png")
    assert qr.status_code == 200 and qr.headers["content-type"] == "image/png"
    poster = console.get(f"/channels/{channel.id}/poster.png")
    assert poster.status_code == 200
    assert Image.open(io.BytesIO(poster.content)).size == (1080, 1440)
    link = client.get(f"/c/{channel.key}")  # public: no login needed
    assert link.status_code == 200 and "chaxiaoman" in link.text
    assert client.get("/c/unknown-key").status_code == 404


def test_channel_report_exports_are_audited_and_neutralised(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    saved = service.save_channel(db, viewer=make_viewer(make), data=service.ChannelIn(
        name="=HYPERLINK(1)", account_ids=[account.id]))
    customer = make.customer(account)
    service.on_friend_added(db, customer_id=customer.id, account_id=account.id, state=saved.key)
    db.commit()
    console = Console(client).login(make.user("admin"))
    page = console.get("/channels")
    assert page.status_code == 200 and 'data-testid="channel-chart"' in page.text
    csv_text = console.get("/channels/report.csv").text
    assert csv_text.startswith("\ufeff") and "'=HYPERLINK(1)" in csv_text
    xlsx = console.get("/channels/report.xlsx")
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None and sheet.cell(row=2, column=1).value == "'=HYPERLINK(1)"
    assert sheet.cell(row=2, column=2).value == 1
    from siyu.team.models import AuditEntry

    assert len(list(db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "channel_report")))) == 2


def test_operators_only_see_their_accounts_channels(client: TestClient, db: Session, make: Any) -> None:
    mine, theirs = make.account(), make.account()
    other = service.save_channel(db, viewer=make_viewer(make), data=service.ChannelIn(name="别家",
                                                                                    account_ids=[theirs.id]))
    db.commit()
    console = Console(client).login(make.user("operator", accounts=[mine]))
    assert "别家" not in console.get("/channels").text
    assert console.get(f"/channels/{other.id}").status_code == 404


def make_viewer(make: Any) -> Any:
    from tests.conftest import viewer_of

    return viewer_of(make.user("admin"))


def test_promoters_bring_friends_and_earn_rewards_once(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    console = Console(client).login(make.user("planner"))
    refused = console.post("/channels/promoters", {"name": "小李", "reward_per_add": "5"})
    assert refused.status_code == 422
    created = console.post("/channels/promoters", {"name": "<b>小李</b>", "reward_per_add": "5",
                                                   "account_ids": [account.id]})
    assert created.status_code == 303
    channel = db.scalar(select(Channel).where(Channel.kind == "promoter"))
    assert channel is not None and channel.promoter_id is not None
    fans = [make.customer(account) for _ in range(3)]
    for fan in fans:
        service.on_friend_added(db, customer_id=fan.id, account_id=account.id, state=channel.key)
    service.on_friend_added(db, customer_id=fans[0].id, account_id=account.id, state=channel.key)  # re-add
    service.on_friend_removed(db, customer_id=fans[2].id, account_id=account.id)
    db.commit()
    (standing,) = service.leaderboard(db, viewer=make_viewer(make))
    assert (standing.adds, standing.kept, standing.rewards) == (3, 2, 15)
    page = console.get("/channels/promoters").text
    assert "&lt;b&gt;小李&lt;/b&gt;" in page and "¥15.00" in page


def test_a_personal_channels_landing_page_shows_the_persona_and_wechat_id_not_the_internal_name(
        client: TestClient, db: Session, make: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None, display_name="茶小满", brand="山野茶事",
                           wechat_id="chaxiaoman", signature="每天一杯好茶")
    saved = service.save_channel(db, viewer=make_viewer(make), data=service.ChannelIn(
        name="内部:西湖店地推第3批", account_ids=[account.id], incentive_text="扫码领试饮"))
    db.commit()
    page = client.get(f"/c/{saved.key}")
    assert page.status_code == 200
    assert "茶小满" in page.text and "山野茶事" in page.text and "chaxiaoman" in page.text and "扫码领试饮" in page.text
    assert "内部:西湖店地推第3批" not in page.text and 'data-testid="landing-qr"' not in page.text


def test_a_personal_channels_landing_page_shows_the_accounts_own_qr_until_it_expires(
        client: TestClient, db: Session, make: Any) -> None:
    from datetime import timedelta

    from siyu.core.settings import local_today

    account = make.account(kind="personal", wecom_userid=None, display_name="茶小满", wechat_id="chaxiaoman",
                           qr_image_url="/media/persona/qr-abc.png", qr_expires_on=local_today() + timedelta(days=3))
    saved = service.save_channel(db, viewer=make_viewer(make), data=service.ChannelIn(
        name="地推", account_ids=[account.id]))
    db.commit()
    page = client.get(f"/c/{saved.key}")
    assert 'data-testid="landing-qr"' in page.text and "/media/persona/qr-abc.png" in page.text
    assert "长按识别二维码" in page.text
    account.qr_expires_on = local_today() - timedelta(days=1)  # lapsed: the WeChat ID to search instead
    db.commit()
    lapsed = client.get(f"/c/{saved.key}")
    assert "/media/persona/qr-abc.png" not in lapsed.text and "chaxiaoman" in lapsed.text
