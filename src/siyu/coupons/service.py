"""Coupon rules: batches, their code pools, issuing, redemption by orders, expiry reminders.

Why it is shaped this way: a code is money. It is drawn from its batch's pool by
``core.codepool.draw`` — the one pool mechanism, shared with the channels' welcome coupons — so
a customer holds at most one code of a batch and no code is ever given twice, however many
campaigns, SOP steps, referral rewards and lucky draws issue the batch at once. ``issue`` is the
entry point for every other domain (campaigns, sops, referrals, draws); the caller owns the
transaction. An order naming a code redeems it (``redeem_orders``, called by
``orders.service.upsert_orders``); codes drawn and not redeemed become 今日任务 for the
customer's operator a few days before they expire (``remind_expiring``, a daily job). A code
whose customer never got it — the campaign message that carried it was cancelled before it left, or
WeCom did not deliver it — goes back to the pool through ``release`` (``core.codepool.release``),
audited and written on the customer's timeline; a redeemed code never does.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from siyu.core import codepool
from siyu.core.db import utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.settings import local_today, local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.coupons.models import CouponBatch, CouponBatchCode, CouponKind, IssuedVia
from siyu.coupons.schemas import MAX_GENERATE, MAX_GENERATED, BatchIn
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.team import service as team_service

MANAGING_ROLES = ("admin", "planner")
CODE_ALPHABET = string.ascii_uppercase.replace("O", "").replace("I", "") + "23456789"  # no 0/O, 1/I
CODE_LENGTH = 10
CHUNK = 1000


class BatchNotFound(NotFound):
    pass


def require_manager(viewer: Viewer) -> None:
    if viewer.role not in MANAGING_ROLES:
        raise Forbidden("Only an administrator or a planner may manage coupons")


def check_batch(data: BatchIn) -> None:
    if data.valid_until < data.valid_from:
        raise Invalid("The last valid day must not be before the first", field="valid_until")
    if data.kind == CouponKind.amount and data.amount <= 0:
        raise Invalid("Give the amount off (more than 0)", field="amount")
    if data.kind == CouponKind.discount and not 0 < data.discount < 10:
        raise Invalid("A discount is between 0 and 10 (8.5 means 8.5 折)", field="discount")


def create_batch(session: Session, *, data: BatchIn, viewer: Viewer) -> CouponBatch:
    require_manager(viewer)
    check_batch(data)
    batch = CouponBatch(name=data.name, kind=data.kind.value, amount=data.amount, discount=data.discount,
                        min_spend=data.min_spend, valid_from=data.valid_from, valid_until=data.valid_until,
                        remind_days=data.remind_days, note=data.note, created_by_id=viewer.user_id)
    session.add(batch)
    session.flush()
    added = _add_codes(session, batch, codes=data.codes, generate=data.generate)
    team_service.record_audit(session, actor=viewer, action="create", entity_type="coupon_batch",
                              entity_id=batch.id, summary=batch.name,
                              after={**data.model_dump(mode="json", exclude={"codes"}), "codes": added})
    return batch


def get_batch(session: Session, *, batch_id: int) -> CouponBatch:
    batch = session.get(CouponBatch, batch_id)
    if batch is None:
        raise BatchNotFound("Coupon batch not found")
    return batch


def list_batches(session: Session) -> list[CouponBatch]:
    return list(session.scalars(select(CouponBatch).order_by(CouponBatch.id.desc())))


def figures(session: Session, batch_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """batch id → (codes drawn, codes in the pool, codes redeemed)."""
    if not batch_ids:
        return {}
    rows = session.execute(select(CouponBatchCode.batch_id, func.count(CouponBatchCode.customer_id), func.count(),
                                  func.count(CouponBatchCode.redeemed_at))
                           .where(CouponBatchCode.batch_id.in_(list(batch_ids))).group_by(CouponBatchCode.batch_id))
    found = {int(b): (int(d), int(t), int(r)) for b, d, t, r in rows}
    return {b: found.get(b, (0, 0, 0)) for b in batch_ids}


def new_code() -> str:
    """A random code of the 32-letter alphabet (256 is a multiple of 32: every letter equally likely)."""
    return "".join(CODE_ALPHABET[b % len(CODE_ALPHABET)] for b in secrets.token_bytes(CODE_LENGTH))


def _add_codes(session: Session, batch: CouponBatch, *, codes: Sequence[str], generate: int) -> int:
    cleaned = list(dict.fromkeys(c.strip() for c in codes if c and c.strip()))
    if len(cleaned) > MAX_GENERATED:
        raise Invalid("At most {n} codes at a time", field="codes", n=MAX_GENERATED)
    if generate > MAX_GENERATE:
        raise Invalid("At most {n} codes at a time", field="generate", n=MAX_GENERATE)
    too_long = [c for c in cleaned if len(c) > 64]
    if too_long:
        raise Invalid("A code is longer than 64 characters: {code}", field="codes", code=too_long[0][:20])
    existing = set(session.scalars(select(CouponBatchCode.code).where(CouponBatchCode.batch_id == batch.id)))
    fresh = [c for c in cleaned if c not in existing]
    taken = existing | set(fresh)
    while generate > 0:
        code = new_code()
        if code not in taken:
            taken.add(code)
            fresh.append(code)
            generate -= 1
    for start in range(0, len(fresh), CHUNK):
        session.execute(insert(CouponBatchCode), [{"batch_id": batch.id, "code": c}
                                                  for c in fresh[start:start + CHUNK]])
    return len(fresh)


def add_codes(session: Session, *, batch_id: int, codes: Sequence[str], generate: int = 0, viewer: Viewer) -> int:
    """More codes in the batch's pool (the shop's own, or made up by Siyu); duplicates are skipped."""
    require_manager(viewer)
    batch = get_batch(session, batch_id=batch_id)
    added = _add_codes(session, batch, codes=codes, generate=generate)
    team_service.record_audit(session, actor=viewer, action="update", entity_type="coupon_batch",
                              entity_id=batch.id, entity_name=batch.name, summary=_("+{n} coupon codes", n=added))
    session.flush()
    return added


def worth(batch: CouponBatch) -> str:
    """What a code of the batch is worth, as the customer reads it (¥20 / 8.5 折, 满 99 可用)."""
    text = (_("¥{amount} off", amount=f"{batch.amount:g}") if batch.kind == CouponKind.amount.value
            else _("{discount} 折", discount=f"{batch.discount:g}"))
    if batch.min_spend > 0:
        text += " · " + _("on orders from ¥{amount}", amount=f"{batch.min_spend:g}")
    return text


# ---------------------------------------------------------------- issuing


@dataclass
class IssueResult:
    codes: dict[int, str] = field(default_factory=dict)  # customer id → code (new and already held)
    issued: int = 0  # codes drawn now
    already: int = 0  # customers who held a code of the batch already (given it again, not a second one)
    short: list[int] = field(default_factory=list)  # customers left without a code: the pool ran dry


def issue(session: Session, batch_id: int, customer_ids: Sequence[int], *, via: str = IssuedVia.campaign.value,
          viewer: Viewer = SYSTEM, at: datetime | None = None) -> IssueResult:
    """Give each customer one code of the batch (the one they hold already, else a free one).

    For campaigns, SOP steps, referral rewards and lucky draws: the caller owns the transaction and
    sends the codes. A batch past its last day issues nothing; customers the viewer may not see are
    refused. Every code drawn now is written on the customer's timeline.
    """
    batch = get_batch(session, batch_id=batch_id)
    at = at or utcnow()
    if batch.valid_until < at.astimezone(local_zone()).date():
        raise Invalid("This coupon batch expired on {day}; its codes can no longer be issued", field="batch_id",
                      day=batch.valid_until.isoformat())
    wanted = list(dict.fromkeys(int(c) for c in customer_ids))
    scope = customers_service.visible_customer_clause(viewer)
    known: set[int] = set()
    for start in range(0, len(wanted), CHUNK):
        query = select(Customer.id).where(Customer.id.in_(wanted[start:start + CHUNK]))
        known.update(session.scalars(query.where(scope) if scope is not None else query))
    missing = [c for c in wanted if c not in known]
    if missing:
        raise Invalid("Customer {customer_id} not found", field="customer_ids", customer_id=missing[0])
    held: set[int | None] = set()
    for start in range(0, len(wanted), CHUNK):
        held.update(session.scalars(select(CouponBatchCode.customer_id).where(
            CouponBatchCode.batch_id == batch.id, CouponBatchCode.customer_id.in_(wanted[start:start + CHUNK]))))
    codes = codepool.draw(session, CouponBatchCode, scope=[CouponBatchCode.batch_id == batch.id],
                          customer_ids=wanted)
    fresh = [c for c in wanted if c in codes and c not in held]
    if fresh:
        for start in range(0, len(fresh), CHUNK):
            session.execute(update(CouponBatchCode).where(
                CouponBatchCode.batch_id == batch.id, CouponBatchCode.customer_id.in_(fresh[start:start + CHUNK]))
                .values(issued_via=via[:16]), execution_options={"synchronize_session": False})
        accounts = first_accounts(session, fresh)
        session.execute(insert(Touch), [{
            "customer_id": c, "account_id": accounts.get(c), "kind": TouchKind.system.value, "content": batch.name,
            "occurred_at": at, "created_at": utcnow(), "details": {
                "event": "coupon_issued", "batch_id": batch.id, "code": codes[c], "via": via,
                "valid_until": batch.valid_until.isoformat()}} for c in fresh])
    result = IssueResult(codes=codes, issued=len(fresh), already=len([c for c in wanted if c in held]),
                         short=[c for c in wanted if c not in codes])
    if batch.id and (fresh or result.short):
        team_service.record_audit(session, actor=viewer, action="issue", entity_type="coupon_batch",
                                  entity_id=batch.id, entity_name=batch.name, summary=via,
                                  after={"issued": result.issued, "already": result.already,
                                         "short": len(result.short)})
    return result


def release(session: Session, batch_id: int, customer_ids: Sequence[int], *, via: str, reason: str,
            ref: str = "", viewer: Viewer = SYSTEM, at: datetime | None = None) -> dict[int, str]:
    """Take back these customers' codes of the batch that ``via`` issued and no order redeemed: back in the
    pool, drawn again by the next issue. The caller decides who never got their code (``campaigns.rewards``)
    and owns the transaction. customer id → code taken back now; run again, it takes back nothing more."""
    from siyu.maintenance.models import Task, TaskKind, TaskStatus

    batch = get_batch(session, batch_id=batch_id)
    at = at or utcnow()
    freed = codepool.release(session, CouponBatchCode, scope=[CouponBatchCode.batch_id == batch.id],
                             customer_ids=customer_ids,
                             keep=[CouponBatchCode.issued_via == via[:16], CouponBatchCode.redeemed_at.is_(None)],
                             reset={"issued_via": "", "reminded_on": None})
    if not freed:
        return freed
    ids = list(freed)
    accounts = first_accounts(session, ids)
    session.execute(insert(Touch), [{
        "customer_id": c, "account_id": accounts.get(c), "kind": TouchKind.system.value, "content": batch.name,
        "occurred_at": at, "created_at": utcnow(), "details": {
            "event": "coupon_released", "batch_id": batch.id, "code": code, "via": via, "ref": ref,
            "reason": reason}} for c, code in freed.items()])
    codes = list(freed.values())
    for start in range(0, len(codes), CHUNK):  # an expiry reminder of a code taken back: nothing to remind of
        session.execute(update(Task).where(
            Task.kind == TaskKind.coupon_expiry.value, Task.status == TaskStatus.open.value,
            Task.ref_id.in_(select(CouponBatchCode.id).where(CouponBatchCode.batch_id == batch.id,
                                                              CouponBatchCode.code.in_(codes[start:start + CHUNK]))))
            .values(status=TaskStatus.skipped.value, skip_reason=_("The coupon code was taken back")),
            execution_options={"synchronize_session": False})
    team_service.record_audit(session, actor=viewer, action="release", entity_type="coupon_batch",
                              entity_id=batch.id, entity_name=batch.name, summary=ref or via,
                              after={"released": len(freed), "reason": reason})
    return freed


def issue_to_segment(session: Session, *, batch_id: int, segment_id: int, viewer: Viewer) -> IssueResult:
    """The batch to everyone in the segment the viewer may see (walked in id order, by thousands)."""
    from siyu.segments import service as segments_service

    require_manager(viewer)
    try:
        segment = segments_service.get_segment(session, segment_id=segment_id, viewer=viewer)
    except NotFound as exc:
        raise Invalid("Segment {segment_id} not found", field="segment_id", segment_id=segment_id) from exc
    flt = segments_service.segment_filter(segment)
    total = IssueResult()
    after = 0
    while True:
        ids = customers_service.matching_ids(session, flt=flt, viewer=viewer, after_id=after, limit=CHUNK)
        if not ids:
            break
        part = issue(session, batch_id, ids, via=IssuedVia.segment.value, viewer=viewer)
        total.issued += part.issued
        total.already += part.already
        total.short += part.short
        if len(total.codes) < CHUNK:
            total.codes.update(list(part.codes.items())[:CHUNK - len(total.codes)])
        after = ids[-1]
    return total


def first_accounts(session: Session, customer_ids: Sequence[int]) -> dict[int, int]:
    """Each customer's earliest active friendship's account: whose operator talks to them."""
    found: dict[int, int] = {}
    ids = list(customer_ids)
    for start in range(0, len(ids), CHUNK):
        for customer_id, account_id in session.execute(
                select(Friendship.customer_id, Friendship.account_id)
                .where(Friendship.customer_id.in_(ids[start:start + CHUNK]),
                       Friendship.status == FriendshipStatus.active.value)
                .order_by(Friendship.customer_id, Friendship.added_at, Friendship.id)):
            found.setdefault(int(customer_id), int(account_id))
    return found


def customer_codes(session: Session, *, customer_id: int) -> list[tuple[CouponBatchCode, CouponBatch]]:
    rows = session.execute(select(CouponBatchCode, CouponBatch).join(CouponBatch,
                                                                    CouponBatch.id == CouponBatchCode.batch_id)
                           .where(CouponBatchCode.customer_id == customer_id).order_by(CouponBatchCode.id.desc()))
    return [(code, batch) for code, batch in rows.tuples()]


# ---------------------------------------------------------------- redemption


@dataclass(frozen=True)
class OrderCoupon:
    """An order that names a coupon code (what ``orders.service.upsert_orders`` hands over)."""

    order_id: int
    customer_id: int | None
    code: str
    paid_at: datetime


def redeem_orders(session: Session, orders: Sequence[OrderCoupon]) -> int:
    """Mark the codes these orders name as redeemed (once: the first order keeps it). Returns codes redeemed.

    A code is matched in the batches' pools; one the order's buyer does not hold is redeemed all the
    same (the shop took it) and the timeline says whose it was.
    """
    named = [o for o in orders if o.code.strip()]
    if not named:
        return 0
    by_code: dict[str, OrderCoupon] = {}
    for order in sorted(named, key=lambda o: o.paid_at):
        by_code.setdefault(order.code.strip(), order)
    redeemed = 0
    codes = sorted(by_code)
    for start in range(0, len(codes), CHUNK):
        rows = session.scalars(select(CouponBatchCode).where(CouponBatchCode.code.in_(codes[start:start + CHUNK]),
                                                             CouponBatchCode.redeemed_at.is_(None),
                                                             CouponBatchCode.customer_id.is_not(None)))
        for row in rows:
            order = by_code[row.code]
            row.redeemed_at, row.order_id = order.paid_at, order.order_id
            redeemed += 1
            assert row.customer_id is not None
            session.add(Touch(customer_id=row.customer_id, kind=TouchKind.system.value, occurred_at=order.paid_at,
                              content=row.code, details={"event": "coupon_redeemed", "batch_id": row.batch_id,
                                                         "order_id": order.order_id,
                                                         "by_holder": order.customer_id == row.customer_id}))
    session.flush()
    return redeemed


# ---------------------------------------------------------------- expiry reminders (今日任务)


def remind_expiring(session: Session, *, today: date | None = None, now: datetime | None = None) -> int:
    """Codes drawn, not redeemed, expiring within their batch's reminder days: one task each, once."""
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.models import TaskKind

    today = today or local_today()
    batches = {b.id: b for b in session.scalars(select(CouponBatch).where(
        CouponBatch.valid_until >= today, CouponBatch.remind_days > 0))}
    due = [b for b in batches.values() if b.valid_until - timedelta(days=b.remind_days) <= today]
    if not due:
        return 0
    rows = list(session.execute(select(CouponBatchCode.id, CouponBatchCode.customer_id, CouponBatchCode.batch_id,
                                       CouponBatchCode.code)
                                .where(CouponBatchCode.batch_id.in_([b.id for b in due]),
                                       CouponBatchCode.customer_id.is_not(None),
                                       CouponBatchCode.redeemed_at.is_(None), CouponBatchCode.reminded_on.is_(None))))
    if not rows:
        return 0
    accounts = first_accounts(session, [int(r.customer_id) for r in rows])
    tasks: list[dict[str, Any]] = []
    for row in rows:
        account_id = accounts.get(int(row.customer_id))
        if account_id is None:
            continue  # no longer a friend of any account: nobody to remind them
        batch = batches[row.batch_id]
        tasks.append({"customer_id": int(row.customer_id), "account_id": account_id, "ref_id": row.id,
                      "detail": _("{name} ({worth}) code {code} expires on {day}", name=batch.name,
                                  worth=worth(batch), code=row.code, day=batch.valid_until.isoformat())})
    maintenance_service.add_tasks(session, tasks, kind=TaskKind.coupon_expiry, day=today, now=now)
    ids = [r.id for r in rows]
    for start in range(0, len(ids), CHUNK):
        session.execute(update(CouponBatchCode).where(CouponBatchCode.id.in_(ids[start:start + CHUNK]))
                        .values(reminded_on=today), execution_options={"synchronize_session": False})
    return len(tasks)
