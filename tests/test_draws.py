"""Lucky draws (抽奖): eligibility by segment less the blacklist, prizes with stock and odds, a seeded draw
anyone can recompute, winners told through tasks, coupon prizes from a coupon batch."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.errors import Invalid
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from siyu.coupons import service as coupons_service
from siyu.coupons.schemas import BatchIn
from siyu.draws import service
from siyu.draws.models import DrawWinner
from siyu.draws.schemas import DrawIn, PrizeIn
from siyu.maintenance.models import Task
from tests.test_coupons import segment_of


def draw(db: Session, account: Any, *, coupon_stock: int = 3, **overrides: Any) -> Any:
    coupons = coupons_service.create_batch(db, viewer=SYSTEM, data=BatchIn(
        name="粉丝节 20 元券", amount=Decimal("20"), valid_from=local_today(),
        valid_until=local_today() + timedelta(days=30), generate=50))
    data = {"name": "粉丝节抽奖", "segment_id": segment_of(db, account).id,
            "prizes": [PrizeIn(name="紫砂壶", stock=1, odds=Decimal("10")),
                       PrizeIn(name="20 元券", coupon_batch_id=coupons.id, stock=coupon_stock, odds=Decimal("60"))]}
    made = service.create_draw(db, viewer=SYSTEM, data=DrawIn(**(data | overrides)))
    db.commit()
    return made


def recompute(seed: str, ids: list[int], prizes: list[tuple[int, int, str]]) -> list[tuple[int, int, int]]:
    """The documented algorithm, written again from its description (not Siyu's code)."""
    text = ",".join(str(i) for i in sorted(ids))
    assert text
    ordered = sorted(sorted(ids), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    stock = {pid: n for pid, n, _odds in prizes}
    out = []
    for position, customer in enumerate(ordered, start=1):
        if not any(stock.values()):
            break
        u = Fraction(int(hashlib.sha256(f"{seed}:{customer}:prize".encode()).hexdigest(), 16), 2 ** 256)
        low = Fraction(0)
        for pid, _n, odds in prizes:
            high = low + Fraction(Decimal(odds)) / 100
            if low <= u < high:
                if stock[pid] > 0:
                    stock[pid] -= 1
                    out.append((position, customer, pid))
                break
            low = high
    return out


def test_a_draw_is_seeded_recorded_and_recomputable_from_the_seed_and_sorted_ids(db: Session, make: Any) -> None:
    account = make.account()
    make.bulk_customers(account, 40)
    made = draw(db, account)
    winners = service.run_draw(db, draw_id=made.id, viewer=SYSTEM)
    db.commit()
    db.refresh(made)
    assert made.status == "drawn" and len(made.seed) == 32 and made.eligible_count == 40
    ids = [int(i) for i in made.eligible_ids.split(",")]
    assert made.eligible_digest == hashlib.sha256(made.eligible_ids.encode()).hexdigest()
    prizes = service.prizes_of(db, made.id)
    again = recompute(made.seed, ids, [(p.id, p.stock, str(p.odds)) for p in prizes])
    assert again == [(w.position, w.customer_id, w.prize_id) for w in winners]
    assert len(winners) <= 4 and all(w.code for w in winners if w.prize_id == prizes[1].id)
    assert service.verify(made, prizes, service.winners_of(db, made.id))
    # The same seed over the same ids gives the same winners, whoever runs it.
    assert service.compute_winners(made.seed, list(reversed(ids)), [
        service.Prize(p.id, p.stock, Decimal(p.odds)) for p in prizes]) == again
    tasks = db.scalar(select(func.count()).select_from(Task).where(Task.kind == "draw_win"))
    assert tasks == len(winners)


def test_stock_is_never_exceeded_and_a_draw_runs_once(db: Session, make: Any) -> None:
    account = make.account()
    make.bulk_customers(account, 200)
    made = draw(db, account, coupon_stock=5)
    winners = service.run_draw(db, draw_id=made.id, viewer=SYSTEM, seed="00" * 16)
    db.commit()
    by_prize: dict[int, int] = {}
    for winner in winners:
        by_prize[winner.prize_id] = by_prize.get(winner.prize_id, 0) + 1
    prizes = service.prizes_of(db, made.id)
    assert by_prize == {prizes[0].id: 1, prizes[1].id: 5}
    from siyu.core.errors import Conflict

    with pytest.raises(Conflict):
        service.run_draw(db, draw_id=made.id, viewer=SYSTEM)


def test_a_draw_with_no_eligible_customer_says_so_and_draws_nothing(client: Any, db: Session, make: Any,
                                                                    admin_headers: dict[str, str]) -> None:
    account = make.account()
    made = draw(db, account)  # a segment of an account with no customers
    answer = client.post(f"/api/v1/draws/{made.id}/draw", headers=admin_headers)
    assert answer.status_code == 422 and "没有符合条件的客户" in answer.json()["detail"]
    db.refresh(made)
    assert made.status == "draft" and made.seed == ""
    assert db.scalar(select(func.count()).select_from(DrawWinner)) == 0


def test_blacklisted_group_members_cannot_win(db: Session, make: Any) -> None:
    from siyu.groups.moderation.models import BlacklistEntry

    account = make.account()
    only = make.customer(account)
    db.add(BlacklistEntry(userid="wmBAD", customer_id=only.id, reason="广告"))
    db.commit()
    made = draw(db, account)
    with pytest.raises(Invalid):
        service.run_draw(db, draw_id=made.id, viewer=SYSTEM)


def test_bad_draws_are_refused_and_the_pages_show_the_seed_after_the_draw(client: Any, db: Session, make: Any,
                                                                          admin: Any,
                                                                          admin_headers: dict[str, str]) -> None:
    from tests.test_pages import Console

    account = make.account()
    make.bulk_customers(account, 10)
    segment = segment_of(db, account)
    too_likely = client.post("/api/v1/draws", headers=admin_headers, json={
        "name": "x", "segment_id": segment.id, "prizes": [{"name": "a", "stock": 1, "odds": "60"},
                                                          {"name": "b", "stock": 1, "odds": "50"}]})
    assert too_likely.status_code == 422
    no_prize = client.post("/api/v1/draws", headers=admin_headers, json={"name": "x", "segment_id": segment.id,
                                                                         "prizes": []})
    assert no_prize.status_code == 422
    console = Console(client).login(admin)
    made = console.post("/draws", {"name": "转发抽奖", "segment_id": str(segment.id), "exclude_blacklisted": "on",
                                   "prize_0_name": "茶饼", "prize_0_stock": "2", "prize_0_odds": "50"})
    assert made.status_code == 303
    page = console.get(made.headers["location"])
    assert page.status_code == 200 and 'data-testid="seed"' not in page.text
    assert console.post(made.headers["location"] + "/draw", {}).status_code == 303
    page = console.get(made.headers["location"])
    assert 'data-testid="seed"' in page.text and "按种子复算：中奖名单一致" in page.text
    audit = client.get(made.headers["location"].replace("/draws", "/api/v1/draws") + "/audit",
                       headers=admin_headers).json()
    assert audit["verified"] is True and len(audit["eligible_ids"]) == 10
