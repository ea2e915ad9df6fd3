"""Referral and fission (老带新, 任务宝): invite codes, the anti-fraud ledger, rewards, the leaderboard."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.channels import service as channels_service
from siyu.core.db import utcnow
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from siyu.coupons import service as coupons_service
from siyu.coupons.schemas import BatchIn
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Touch
from siyu.maintenance.models import Task
from siyu.referrals import service
from siyu.referrals.models import LedgerEntry, Reward, Standing
from siyu.referrals.schemas import ProgrammeIn, TierIn


def batch(db: Session, name: str = "老带新 20 元券", codes: int = 20) -> Any:
    made = coupons_service.create_batch(db, viewer=SYSTEM, data=BatchIn(
        name=name, amount=Decimal("20"), valid_from=local_today() - timedelta(days=1),
        valid_until=local_today() + timedelta(days=30), generate=codes))
    db.commit()
    return made


def programme(db: Session, account: Any, **overrides: Any) -> Any:
    coupon = batch(db)
    data = {"name": "邀请好友得好礼", "account_ids": [account.id], "reversal_days": 7,
            "tiers": [TierIn(invites=3, coupon_batch_id=coupon.id), TierIn(invites=10, gift="紫砂茶具一套")]}
    made = service.create_programme(db, viewer=SYSTEM, data=ProgrammeIn(**(data | overrides)))
    db.commit()
    return made


def old_customer(db: Session, make: Any, account: Any) -> Any:
    """A customer Siyu has known for a month."""
    customer = make.customer(account)
    long_ago = utcnow() - timedelta(days=30)
    customer.created_at = long_ago
    for friendship in db.scalars(select(Friendship).where(Friendship.customer_id == customer.id)):
        friendship.added_at = long_ago
    db.commit()
    return customer


def add_through(db: Session, customer: Any, account: Any, invite: Any, *, at: Any = None) -> Any:
    outcome = channels_service.on_friend_added(db, customer_id=customer.id, account_id=account.id,
                                               state=invite.state, added_at=at)
    db.commit()
    return outcome


def count(db: Session, programme_id: int, customer_id: int) -> int:
    return int(db.scalar(select(Standing.invites).where(Standing.programme_id == programme_id,
                                                       Standing.customer_id == customer_id)) or 0)


def events(db: Session, customer_id: int) -> list[str]:
    return [str((t.details or {}).get("event")) for t in db.scalars(
        select(Touch).where(Touch.customer_id == customer_id).order_by(Touch.id))
        if str((t.details or {}).get("event", "")).startswith("referral")]


def delete_us(db: Session, customer: Any, account: Any, *, at: Any) -> None:
    friendship = db.scalar(select(Friendship).where(Friendship.customer_id == customer.id,
                                                    Friendship.account_id == account.id))
    assert friendship is not None
    friendship.status, friendship.removed_at = FriendshipStatus.deleted.value, at
    channels_service.on_friend_removed(db, customer_id=customer.id, account_id=account.id, at=at)
    db.commit()


def test_a_new_friend_through_an_invite_code_credits_the_referrer_on_both_timelines(db: Session, make: Any) -> None:
    account = make.account()
    fission = programme(db, account)
    alice = old_customer(db, make, account)
    invite = service.invite_for(db, programme_id=fission.id, customer_id=alice.id, viewer=SYSTEM)
    assert invite.state.startswith("rf") and len(invite.state) <= 30
    assert service.invite_for(db, programme_id=fission.id, customer_id=alice.id, viewer=SYSTEM).id == invite.id
    bob = make.customer(account)
    outcome = add_through(db, bob, account, invite)
    assert outcome.alert == ""  # an invite code's state is not an unknown channel
    assert count(db, fission.id, alice.id) == 1
    assert events(db, alice.id) == ["referral_credit"] and events(db, bob.id) == ["referral_referred"]
    assert service.balance(db, programme_id=fission.id) == []


def test_a_referral_loop_gives_one_credit(db: Session, make: Any) -> None:
    account = make.account()
    fission = programme(db, account)
    alice = old_customer(db, make, account)
    bob = make.customer(account)
    add_through(db, bob, account, service.invite_for(db, programme_id=fission.id, customer_id=alice.id,
                                                      viewer=SYSTEM))
    bobs_code = service.invite_for(db, programme_id=fission.id, customer_id=bob.id, viewer=SYSTEM)
    outcome = service.credit(db, invite=bobs_code, referee_id=alice.id)
    db.commit()
    assert (outcome.credited, outcome.reason) == (False, "loop")
    assert db.scalar(select(func.count()).select_from(LedgerEntry)) == 1
    assert (count(db, fission.id, alice.id), count(db, fission.id, bob.id)) == (1, 0)
    assert events(db, alice.id)[-1] == "referral_refused"
    assert service.balance(db, programme_id=fission.id) == []


def test_only_genuinely_new_customers_count_and_one_referee_credits_one_referrer(db: Session, make: Any) -> None:
    account = make.account()
    fission = programme(db, account)
    alice, carol = old_customer(db, make, account), old_customer(db, make, account)
    known = old_customer(db, make, account)
    alices = service.invite_for(db, programme_id=fission.id, customer_id=alice.id, viewer=SYSTEM)
    carols = service.invite_for(db, programme_id=fission.id, customer_id=carol.id, viewer=SYSTEM)
    add_through(db, known, account, alices)  # an existing customer scanning a friend's code
    assert count(db, fission.id, alice.id) == 0
    newcomer = make.customer(account)
    add_through(db, newcomer, account, alices)
    add_through(db, newcomer, make.account(), carols)  # the same person, through a second code
    assert (count(db, fission.id, alice.id), count(db, fission.id, carol.id)) == (1, 0)
    assert service.credit(db, invite=alices, referee_id=alice.id).reason == "self"


def test_a_referee_deleting_us_the_next_day_reverses_the_credit_and_the_ledger_stays_balanced(
        db: Session, make: Any) -> None:
    account = make.account()
    fission = programme(db, account)
    alice = old_customer(db, make, account)
    invite = service.invite_for(db, programme_id=fission.id, customer_id=alice.id, viewer=SYSTEM)
    bob, dan = make.customer(account), make.customer(account)
    add_through(db, bob, account, invite)
    add_through(db, dan, account, invite)
    assert count(db, fission.id, alice.id) == 2
    delete_us(db, bob, account, at=utcnow() + timedelta(days=1))
    assert count(db, fission.id, alice.id) == 1
    delete_us(db, bob, account, at=utcnow() + timedelta(days=1))  # the deletion delivered twice
    assert count(db, fission.id, alice.id) == 1
    entries = list(db.scalars(select(LedgerEntry).where(LedgerEntry.referrer_id == alice.id)))
    assert sorted(e.delta for e in entries) == [-1, 1, 1]
    assert sum(e.delta for e in entries) == count(db, fission.id, alice.id)
    assert events(db, alice.id) == ["referral_credit", "referral_credit", "referral_reversal"]
    assert events(db, bob.id) == ["referral_referred", "referral_reversed"]
    assert service.balance(db, programme_id=fission.id) == []
    # Bob comes back through the code: not new any more, no second credit; the count never dips below zero.
    channels_service.on_friend_added(db, customer_id=bob.id, account_id=account.id, state=invite.state)
    delete_us(db, dan, account, at=utcnow() + timedelta(days=20))  # after the window: the credit stays
    assert count(db, fission.id, alice.id) == 1
    assert service.balance(db, programme_id=fission.id) == []


def test_a_customer_still_friends_with_another_account_is_not_reversed(db: Session, make: Any) -> None:
    account, other = make.account(), make.account()
    fission = programme(db, account)
    alice = old_customer(db, make, account)
    bob = make.customer(account)
    add_through(db, bob, account, service.invite_for(db, programme_id=fission.id, customer_id=alice.id,
                                                      viewer=SYSTEM))
    db.add(Friendship(customer_id=bob.id, account_id=other.id, added_at=utcnow()))
    db.commit()
    delete_us(db, bob, account, at=utcnow())
    assert count(db, fission.id, alice.id) == 1


def test_tiers_reward_once_with_a_coupon_and_a_task_and_the_leaderboard_ranks_referrers(
        db: Session, make: Any) -> None:
    account = make.account()
    fission = programme(db, account)
    alice, carol = old_customer(db, make, account), old_customer(db, make, account)
    alices = service.invite_for(db, programme_id=fission.id, customer_id=alice.id, viewer=SYSTEM)
    carols = service.invite_for(db, programme_id=fission.id, customer_id=carol.id, viewer=SYSTEM)
    friends = [make.customer(account) for _ in range(4)]
    for friend in friends[:3]:
        add_through(db, friend, account, alices)
    add_through(db, friends[3], account, carols)
    (reward,) = db.scalars(select(Reward))
    assert (reward.customer_id, reward.reason) == (alice.id, "tier:3") and reward.code
    assert db.scalar(select(Task).where(Task.customer_id == alice.id, Task.kind == "reward")) is not None
    delete_us(db, friends[0], account, at=utcnow())
    add_through(db, make.customer(account), account, alices)  # back to 3: the tier is not given twice
    assert db.scalar(select(func.count()).select_from(Reward)) == 1
    board = service.leaderboard(db, programme_id=fission.id)
    assert [(p.rank, p.customer_id, p.invites) for p in board] == [(1, alice.id, 3), (2, carol.id, 1)]


def test_a_referees_first_order_rewards_the_referrer(db: Session, make: Any) -> None:
    from siyu.orders import service as orders_service

    account = make.account()
    coupon = batch(db, name="首单奖励券")
    fission = programme(db, account, first_order_batch_id=coupon.id)
    alice = old_customer(db, make, account)
    bob = make.customer(account)
    add_through(db, bob, account, service.invite_for(db, programme_id=fission.id, customer_id=alice.id,
                                                      viewer=SYSTEM))
    for number in ("A1", "A2"):
        orders_service.upsert_orders(db, viewer=SYSTEM, via="test", orders=[orders_service.OrderData(
            source="shop", order_no=number, paid_at=utcnow(), amount=Decimal("99"),
            buyer=orders_service.Buyer(customer_id=bob.id))])
        db.commit()
    (reward,) = db.scalars(select(Reward))
    assert (reward.customer_id, reward.reason, reward.coupon_batch_id) == (alice.id, f"first_order:{bob.id}",
                                                                          coupon.id)


def test_an_operator_records_a_personal_accounts_referral_through_the_api(
        client: Any, db: Session, make: Any, admin_headers: dict[str, str]) -> None:
    phone = make.account(kind="personal", wecom_userid=None)
    answer = client.post("/api/v1/referrals", headers=admin_headers, json={
        "name": "门店老带新", "account_ids": [phone.id], "tiers": [{"invites": 2, "gift": "冷泡茶一瓶"}]})
    assert answer.status_code == 201, answer.text
    programme_id = answer.json()["id"]
    alice = old_customer(db, make, phone)
    invite = client.post(f"/api/v1/referrals/{programme_id}/invites", headers=admin_headers,
                         json={"customer_id": alice.id}).json()
    assert invite["link"].endswith(f"/r/{invite['state']}")
    bob = make.customer(phone)
    credited = client.post(f"/api/v1/referrals/{programme_id}/credits", headers=admin_headers,
                           json={"referee_id": bob.id, "state": invite["state"]})
    assert credited.status_code == 200 and credited.json()["credited"] is True
    wrong = client.post(f"/api/v1/referrals/{programme_id}/credits", headers=admin_headers,
                        json={"referee_id": bob.id, "state": "rfNOPE"})
    assert wrong.status_code == 422 and "邀请码" in wrong.json()["detail"]
    board = client.get(f"/api/v1/referrals/{programme_id}/leaderboard", headers=admin_headers).json()
    assert board == [{"rank": 1, "customer_id": alice.id, "name": alice.name, "invites": 1}]
    assert client.get(f"/r/{invite['state']}").status_code == 200
    page = client.get(f"/referrals/{programme_id}", headers=admin_headers)
    assert page.status_code in (200, 303)


def test_bad_programmes_are_refused_clearly(client: Any, make: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    same = client.post("/api/v1/referrals", headers=admin_headers, json={
        "name": "x", "account_ids": [account.id], "tiers": [{"invites": 3, "gift": "a"}, {"invites": 3, "gift": "b"}]})
    assert same.status_code == 422
    empty = client.post("/api/v1/referrals", headers=admin_headers, json={
        "name": "x", "account_ids": [account.id], "tiers": [{"invites": 3}]})
    assert empty.status_code == 422
    nobody = client.post("/api/v1/referrals", headers=admin_headers, json={"name": "x", "account_ids": [999]})
    assert nobody.status_code == 422


__all__ = ["Customer"]
