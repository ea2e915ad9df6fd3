"""公海 (the public pool): customers without an owner, for the operators of their accounts to claim.

A customer enters the pool (``Customer.pool_since`` set, ``owner_id`` cleared) when their owner
left (the user was deactivated — a resignation hand-over without a receiving operator ends there),
or nobody touched them for ``TaskSettings.pool_untouched_days`` (0: never). An operator claims one
of the customers with an active friendship on their accounts (another account's customer: 404),
at most ``pool_claim_limit`` a day; a claim with no manual touch within ``pool_hold_days`` goes
back to the pool. Claims and returns are written on the customer's timeline (a system touch with
``details.event == "pool"``) and in the audit log.

The sweep runs in the daily job: every step selects its customers by an indexed condition (the
owner's user row, ``ix_customer_last_touch``, ``ix_customer_claimed``) and moves them with batched
UPDATEs; a customer already in the pool matches no step, so a second run moves nobody twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Conflict, Invalid, NotFound
from siyu.core.settings import local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers.models import MANUAL_KINDS, Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.maintenance.models import PoolClaim, TaskSettings
from siyu.team.models import User
from siyu.team.service import record_audit

BATCH = 1000
WORK_KINDS = tuple(k.value for k in MANUAL_KINDS)  # a claim is worked once one of these is recorded


class PoolCustomerNotFound(NotFound):
    """Not in the viewer's accounts (or no such customer): 404, as for any customer."""


def _settings(session: Session) -> TaskSettings:
    from siyu.maintenance.service import get_settings_row

    return get_settings_row(session)


def _visible(viewer: Viewer, account_id: int | None = None) -> Any:
    """Customers with an active friendship on the viewer's accounts (or on this one)."""
    ids = [account_id] if account_id is not None else (None if viewer.sees_all_accounts
                                                       else sorted(viewer.account_ids))
    if ids is None:
        return None
    return exists(select(Friendship.id).where(Friendship.customer_id == Customer.id,
                                              Friendship.account_id.in_(ids),
                                              Friendship.status == FriendshipStatus.active.value))


def list_pool(session: Session, *, viewer: Viewer, account_id: int | None = None, limit: int = 50,
              after: tuple[datetime, int] | None = None) -> list[Customer]:
    """The pool's customers the viewer may claim, longest waiting first (cursor: pool_since, id)."""
    if account_id is not None and not viewer.can_see_account(account_id):
        raise NotFound("Account not found")
    query = select(Customer).where(Customer.pool_since.is_not(None), Customer.owner_id.is_(None),
                                   Customer.merged_into_id.is_(None))
    scope = _visible(viewer, account_id)
    if scope is not None:
        query = query.where(scope)
    if after is not None:
        since, last_id = after
        query = query.where(or_(Customer.pool_since > since, and_(Customer.pool_since == since, Customer.id > last_id)))
    return list(session.scalars(query.order_by(Customer.pool_since, Customer.id).limit(limit)))


def claims_today(session: Session, *, user_id: int, now: datetime | None = None) -> int:
    now = now or utcnow()
    start = datetime.combine(now.astimezone(local_zone()).date(), datetime.min.time(), tzinfo=local_zone())
    return int(session.scalar(select(func.count()).select_from(PoolClaim)
                              .where(PoolClaim.user_id == user_id, PoolClaim.claimed_at >= start)) or 0)


def _timeline(session: Session, rows: list[dict[str, Any]]) -> None:
    table = cast(Table, Touch.__table__)
    for start in range(0, len(rows), BATCH):
        session.execute(table.insert(), rows[start:start + BATCH])


def _touch_row(customer_id: int, *, action: str, at: datetime, user_id: int | None, content: str,
               reason: str = "") -> dict[str, Any]:
    return {"customer_id": customer_id, "account_id": None, "user_id": user_id, "kind": TouchKind.system.value,
            "content": content, "amount": None, "details": {"event": "pool", "action": action, "reason": reason},
            "occurred_at": at, "created_at": at, "dedupe_key": None}


def claim(session: Session, *, customer_id: int, viewer: Viewer, now: datetime | None = None) -> Customer:
    """The viewer takes this pool customer: owner, timeline, audit; limits and races refused clearly."""
    now = now or utcnow()
    if viewer.user_id is None:
        raise Invalid("Only a signed-in operator can claim a customer")
    query = select(Customer).where(Customer.id == customer_id, Customer.merged_into_id.is_(None))
    scope = _visible(viewer)
    if scope is not None:
        query = query.where(scope)
    customer = session.scalar(query.with_for_update())
    if customer is None:
        raise PoolCustomerNotFound("Customer not found")
    if customer.pool_since is None or customer.owner_id is not None:
        if customer.owner_id is not None:
            owner = session.get(User, customer.owner_id)
            name = (owner.display_name or owner.username) if owner else ""
            if customer.owner_id == viewer.user_id:
                raise Conflict("You already own this customer")
            raise Conflict("{name} has already claimed this customer", name=name)
        raise Conflict("This customer is not in the pool")
    limit = _settings(session).pool_claim_limit
    if claims_today(session, user_id=viewer.user_id, now=now) >= limit:
        raise Invalid("You have claimed {limit} customers today, the daily limit", field="limit", limit=limit)
    customer.owner_id, customer.pool_since, customer.claimed_at = viewer.user_id, None, now
    session.add(PoolClaim(customer_id=customer.id, user_id=viewer.user_id, claimed_at=now))
    _timeline(session, [_touch_row(customer.id, action="claim", at=now, user_id=viewer.user_id,
                                   content=f"从公海认领：{viewer.username}")])
    record_audit(session, actor=viewer, action="pool_claim", entity_type="customer", entity_id=customer.id,
                 summary=customer.name, entity_name=customer.name)
    session.flush()
    return customer


@dataclass
class SweepResult:
    returned: int = 0  # claims not worked within the hold time
    owner_left: int = 0
    untouched: int = 0


def _to_pool(session: Session, ids: list[int], *, now: datetime, action: str, reason: str, content: str) -> None:
    table = cast(Table, Customer.__table__)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        session.execute(update(table).where(table.c.id.in_(chunk), table.c.pool_since.is_(None))
                        .values(owner_id=None, pool_since=now, claimed_at=None))
    _timeline(session, [_touch_row(cid, action=action, at=now, user_id=None, content=content, reason=reason)
                        for cid in ids])


def sweep(session: Session, *, now: datetime | None = None) -> SweepResult:
    """The daily pool step: unworked claims return, customers of departed owners and untouched ones enter."""
    now = now or utcnow()
    settings = _settings(session)
    result = SweepResult()
    # 1. Claims past the hold time with no manual touch since the claim (ix_customer_claimed).
    worked = exists(select(Touch.id).where(Touch.customer_id == Customer.id, Touch.kind.in_(WORK_KINDS),
                                           Touch.occurred_at >= Customer.claimed_at))
    returning = session.execute(
        select(Customer.id, Customer.name, Customer.owner_id)
        .where(Customer.claimed_at.is_not(None), Customer.claimed_at <= now - timedelta(days=settings.pool_hold_days),
               Customer.pool_since.is_(None), ~worked)).all()
    ids = [int(r.id) for r in returning]
    if ids:
        _to_pool(session, ids, now=now, action="return", reason="unworked",
                 content=f"认领后 {settings.pool_hold_days} 天未跟进，退回公海")
        claims = cast(Table, PoolClaim.__table__)
        for start in range(0, len(ids), BATCH):
            session.execute(update(claims).where(claims.c.customer_id.in_(ids[start:start + BATCH]),
                                                 claims.c.returned_at.is_(None)).values(returned_at=now))
        for row in returning:  # bounded by the claim limit × operators × hold days
            record_audit(session, actor=SYSTEM, action="pool_return", entity_type="customer", entity_id=row.id,
                         summary=row.name, entity_name=row.name, before={"owner_id": row.owner_id},
                         after={"owner_id": None})
    result.returned = len(ids)
    # 2. Owners who left: a deactivated user's customers (ix_customer_owner_id through the few inactive users).
    gone = list(session.scalars(select(User.id).where(User.is_active.is_(False))))
    if gone:
        ids = list(session.scalars(select(Customer.id).where(Customer.owner_id.in_(gone),
                                                             Customer.pool_since.is_(None))))
        _to_pool(session, ids, now=now, action="enter", reason="owner_left", content="负责人已离职，进入公海")
        result.owner_left = len(ids)
    # 3. Nobody touched them for N days (ix_customer_last_touch; never touched: by creation, ix_customer_created).
    days = settings.pool_untouched_days
    if days > 0:
        cutoff = now - timedelta(days=days)
        fresh_claim = and_(Customer.claimed_at.is_not(None), Customer.claimed_at > cutoff)
        ids = list(session.scalars(select(Customer.id).where(
            Customer.last_touch_at < cutoff, Customer.pool_since.is_(None), Customer.merged_into_id.is_(None),
            ~fresh_claim)))
        ids += list(session.scalars(select(Customer.id).where(
            Customer.last_touch_at.is_(None), Customer.created_at < cutoff, Customer.pool_since.is_(None),
            Customer.merged_into_id.is_(None), ~fresh_claim)))
        _to_pool(session, ids, now=now, action="enter", reason="untouched",
                 content=f"{days} 天无人跟进，进入公海")
        result.untouched = len(ids)
    if result.owner_left or result.untouched:
        record_audit(session, actor=SYSTEM, action="pool_sweep", entity_type="pool",
                     summary=f"退回 {result.returned}，离职转入 {result.owner_left}，未跟进转入 {result.untouched}",
                     after={"returned": result.returned, "owner_left": result.owner_left,
                            "untouched": result.untouched})
    session.flush()
    return result
