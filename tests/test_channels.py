"""Acquisition channels: attribution on add, coupon codes exactly once, account choice, the report."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.channels import service
from siyu.channels.models import ChannelAdd, CouponCode, Promoter, PromoterReward
from siyu.channels.service import ChannelIn
from siyu.core import db as core_db
from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Touch
from siyu.customers.schemas import TouchIn


def channel(db: Session, accounts: list[Any], **fields: Any) -> Any:
    data = ChannelIn(**({"name": "西湖店收银台", "account_ids": [a.id for a in accounts]} | fields))
    saved = service.save_channel(db, data=data, viewer=SYSTEM)
    db.commit()
    return saved


def test_an_add_is_attributed_tagged_and_welcomed(db: Session, make: Any) -> None:
    account = make.account(display_name="茶小满")
    ch = channel(db, [account], tag_names=["来源:门店"], incentive_kind="coupon",
                 welcome_text="{称呼}您好！券码 {券码}", fallback_text="{称呼}您好！券已领完，到店送一杯茶")
    service.add_codes(db, channel_id=ch.id, codes=["A1", "A2", "A1", " "], viewer=SYSTEM)
    customer = make.customer(account, remark_name="王芳-红茶党-西湖自由职业", salutation="王姐")
    outcome = service.on_friend_added(db, customer_id=customer.id, account_id=account.id, state=ch.key)
    db.commit()
    assert outcome.first_touch and outcome.coupon == "A1" and outcome.welcome == "王姐您好！券码 A1"
    again = service.on_friend_added(db, customer_id=customer.id, account_id=account.id, state=ch.key)
    assert again.coupon == "A1" and not again.first_touch  # the same person never gets a second code
    tags = {t.name for t in service.customers_service.customer_tags(db, customer_ids=[customer.id])[customer.id]}
    assert "门店" in tags
    assert db.scalar(select(Touch).where(Touch.customer_id == customer.id, Touch.content == "西湖店收银台"))
    assert service.pool_status(db, channel_id=ch.id) == (1, 2)


def test_a_welcome_text_naming_an_internal_field_is_refused(db: Session, make: Any) -> None:
    account = make.account()
    with pytest.raises(Invalid) as refused:
        channel(db, [account], welcome_text="{备注名}您好，欢迎光临")
    assert refused.value.field == "welcome_text" and "内部字段" in refused.value.message
    with pytest.raises(Invalid) as unknown:
        channel(db, [account], fallback_text="{姓名}您好")
    assert unknown.value.field == "fallback_text" and "{称呼}" in unknown.value.message


def test_five_hundred_concurrent_adds_get_distinct_codes(db: Session, make: Any) -> None:
    account = make.account(friend_capacity=20000)
    ch = channel(db, [account], incentive_kind="coupon", welcome_text="券码 {券码}")
    service.add_codes(db, channel_id=ch.id, codes=[f"CODE{n:04d}" for n in range(500)], viewer=SYSTEM)
    db.commit()
    customers = make.bulk_customers(account, 500)
    key, account_id = ch.key, account.id

    def add(customer_id: int) -> str | None:
        with core_db.transaction() as session:
            return service.on_friend_added(session, customer_id=customer_id, account_id=account_id, state=key).coupon

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(add, customers))
    assert None not in codes and len(set(codes)) == 500
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(CouponCode).where(CouponCode.customer_id.is_(None))) == 0
    assert db.scalar(select(func.count(func.distinct(CouponCode.customer_id)))) == 500


def test_an_empty_pool_falls_back_and_raises_an_alert(db: Session, make: Any) -> None:
    account = make.account()
    ch = channel(db, [account], incentive_kind="coupon", welcome_text="券码 {券码}", fallback_text="券已领完，抱歉")
    service.add_codes(db, channel_id=ch.id, codes=["ONLY"], viewer=SYSTEM)
    first, second = make.customer(account), make.customer(account)
    assert service.on_friend_added(db, customer_id=first.id, account_id=account.id, state=ch.key).coupon == "ONLY"
    late = service.on_friend_added(db, customer_id=second.id, account_id=account.id, state=ch.key)
    db.commit()
    assert late.coupon is None and late.welcome == "券已领完，抱歉" and late.alert == "coupon pool empty"
    db.refresh(ch)
    assert ch.alert == "coupon pool empty"
    service.add_codes(db, channel_id=ch.id, codes=["MORE"], viewer=SYSTEM)
    assert ch.alert == ""


def test_archived_channels_still_attribute_and_unknown_states_are_harmless(db: Session, make: Any) -> None:
    account = make.account()
    ch = channel(db, [account], status="archived")
    customer = make.customer(account)
    assert service.on_friend_added(db, customer_id=customer.id, account_id=account.id, state=ch.key).channel_id
    unknown = service.on_friend_added(db, customer_id=customer.id, account_id=account.id, state="'; DROP TABLE x")
    assert unknown.channel_id is None and unknown.alert == "unknown channel state"
    assert db.scalar(select(func.count()).select_from(ChannelAdd)) == 1


def test_account_strategies_and_capacity(db: Session, make: Any) -> None:
    small, big = make.account(friend_capacity=1), make.account(friend_capacity=10)
    ch = channel(db, [small, big], account_strategy="round_robin")
    picks = [service.pick_account(db, ch)[0] for _ in range(2)]
    assert picks == [small.id, big.id]
    make.customer(small)  # small is now full
    assert service.pick_account(db, ch) == (big.id, "")
    least = channel(db, [small, big], account_strategy="least_utilised")
    assert service.pick_account(db, least)[0] == big.id
    full = channel(db, [small])
    chosen, alert = service.pick_account(db, full)
    assert chosen == small.id and alert == "every account is at capacity"
    assert full.alert == "every account is at capacity"  # shown on the channels page


def test_report_counts_adds_deletions_retention_revenue_and_cost(db: Session, make: Any) -> None:
    account = make.account()
    promoter = Promoter(name="推手小李", reward_per_add=Decimal("5"))
    db.add(promoter)
    db.commit()
    ch = channel(db, [account], cost_model="per_promoter_reward", promoter_id=promoter.id)
    ad = channel(db, [account], name="朋友圈广告", cost_model="per_add", cost_amount=Decimal("12"))
    stayed, left, buyer = make.customer(account), make.customer(account), make.customer(account)
    long_ago = utcnow() - timedelta(days=40)
    for customer in (stayed, left, buyer):
        service.on_friend_added(db, customer_id=customer.id, account_id=account.id, state=ch.key, added_at=long_ago)
    service.on_friend_removed(db, customer_id=left.id, account_id=account.id, at=long_ago + timedelta(days=3))
    service.customers_service.add_touch(db, customer_id=buyer.id, viewer=SYSTEM,
                                        data=TouchIn(kind="purchase", amount=Decimal("100"), account_id=account.id))
    service.on_friend_added(db, customer_id=make.customer(account).id, account_id=account.id, state=ad.key)
    db.commit()
    assert db.scalar(select(func.sum(PromoterReward.amount))) == Decimal("15")
    figures = service.report(db, since=local_today() - timedelta(days=60), until=local_today() + timedelta(days=1))
    row = figures[ch.id]
    assert (row.adds, row.deletions, row.net) == (3, 1, 2)
    assert row.retained_7 == pytest.approx(2 / 3, abs=0.001) and row.retained_30 == pytest.approx(2 / 3, abs=0.001)
    assert (row.purchasers, row.revenue, row.cost) == (1, Decimal("100"), Decimal("15"))
    assert row.cost_per_net == Decimal("7.50") and row.roi == pytest.approx((100 - 15) / 15)
    assert figures[ad.id].cost == Decimal("12") and figures[ad.id].retained_7 is None  # too new to tell


def test_bad_channels_are_refused(db: Session, make: Any) -> None:
    account = make.account()
    with pytest.raises(Invalid):
        service.save_channel(db, viewer=SYSTEM, data=ChannelIn(name="x", account_ids=[999]))
    with pytest.raises(Invalid):
        service.save_channel(db, viewer=SYSTEM, data=ChannelIn(name="x", account_ids=[account.id],
                                                               tag_names=["不存在的组:标签"]))
    with pytest.raises(ValueError, match="start date"):
        ChannelIn(name="x", account_ids=[account.id], starts_on=date(2026, 5, 1), ends_on=date(2026, 4, 1))
    ch = channel(db, [account])
    with pytest.raises(Invalid):
        service.add_codes(db, channel_id=ch.id, codes=["x" * 65], viewer=SYSTEM)
