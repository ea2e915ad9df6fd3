"""Staff hand-over (离职/在职继承): an account's customers to another account or operator.

When a member leaves or an account is retired, its customers must not fall through. A
hand-over lists every active friend of the account as an item and works through them as a
background job; every item ends *moved* or *failed* with the reason, shown in the console,
and failed ones can be tried again.

- **WeCom accounts** go through the platform (``transfer_customer`` or, when the member has
  left the corp, ``resigned/transfer_customer``), 100 customers per call. The platform only
  *starts* a transfer; the customer is taken over after up to 24 hours unless they refuse.
  So an item is *sent* until ``transfer_result`` says taken over (→ the friendship moves to
  the new account in Siyu, remark, description and phones kept) or refused / takeover full
  (→ failed). Waiting hand-overs are checked again every hour.
- **Personal accounts** cannot move friends between WeChat accounts: the phone itself
  changes hands. The account and each of its customers get the new operator as owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import (
    Account,
    AccountKind,
    Handover,
    HandoverItem,
    HandoverItemStatus,
    HandoverMode,
    HandoverStatus,
)
from siyu.core.db import utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Phone, Touch, TouchKind
from siyu.team import service as team_service
from siyu.team.models import User

BATCH = 100  # the platform's limit per transfer call
OWNER_ROLES = ("admin", "planner", "operator")
# transfer_result statuses
TAKEN_OVER, WAITING, REFUSED, TAKEOVER_FULL = 1, 2, 3, 4
RESULT_REASONS = {REFUSED: "The customer refused the takeover",
                  TAKEOVER_FULL: "The receiving member has reached the customer limit"}
RECHECK_AFTER = timedelta(hours=1)


class HandoverNotFound(NotFound):
    pass


@dataclass
class HandoverPlan:
    """What the confirmation shows before anything starts."""

    source: Account
    mode: HandoverMode
    customers: int
    without_wecom_id: int  # WeCom hand-overs: these cannot go through the platform
    target: Account | None = None
    owner: User | None = None
    target_free: int | None = None  # room left on the receiving account


def _ensure_admin(viewer: Viewer) -> None:
    if not viewer.is_admin:
        raise Forbidden("Only an administrator can hand over an account's customers")


def _active_friends(session: Session, account_id: int) -> Any:
    return (select(Friendship.customer_id, Customer.wecom_external_userid)
            .join(Customer, Customer.id == Friendship.customer_id)
            .where(Friendship.account_id == account_id, Friendship.status == FriendshipStatus.active.value,
                   Customer.merged_into_id.is_(None)))


def plan(session: Session, *, from_account_id: int, viewer: Viewer, to_account_id: int | None = None,
         to_owner_id: int | None = None, resigned: bool = False) -> HandoverPlan:
    """Check a hand-over and count what it would move; refuses what cannot work."""
    _ensure_admin(viewer)
    source = session.get(Account, from_account_id)
    if source is None:
        raise HandoverNotFound("Account {account_id} not found", account_id=from_account_id)
    friends = list(session.execute(_active_friends(session, source.id)))
    if source.kind == AccountKind.wecom.value:
        if to_account_id is None:
            raise Invalid("Choose the WeCom account that takes over these customers", field="to_account_id")
        target = session.get(Account, to_account_id)
        if target is None or target.id == source.id:
            raise Invalid("Choose another account to take over", field="to_account_id")
        if target.kind != AccountKind.wecom.value or not target.wecom_userid or not source.wecom_userid:
            raise Invalid("Both accounts must be WeCom members with a WeCom user ID", field="to_account_id")
        have = session.scalar(select(func.count()).select_from(Friendship).where(
            Friendship.account_id == target.id, Friendship.status == FriendshipStatus.active.value)) or 0
        return HandoverPlan(source=source, mode=HandoverMode.wecom_resigned if resigned else HandoverMode.wecom,
                            customers=len(friends), without_wecom_id=sum(1 for _cid, ext in friends if not ext),
                            target=target, target_free=target.friend_capacity - have)
    if to_owner_id is None:
        raise Invalid("Choose the operator who takes over this account", field="to_owner_id")
    owner = session.get(User, to_owner_id)
    if owner is None or not owner.is_active or owner.role not in OWNER_ROLES:
        raise Invalid("User {user_id} cannot own customers", field="to_owner_id", user_id=to_owner_id)
    return HandoverPlan(source=source, mode=HandoverMode.owner, customers=len(friends), without_wecom_id=0,
                        owner=owner)


def start(session: Session, *, handover_plan: HandoverPlan, viewer: Viewer, message: str = "") -> Handover:
    """Record the hand-over and one item per customer (the caller queues the job and commits)."""
    if len(message) > 200:
        raise Invalid("At most {max} characters", field="message", max=200)
    source = handover_plan.source
    handover = Handover(from_account_id=source.id, mode=handover_plan.mode.value,
                        to_account_id=handover_plan.target.id if handover_plan.target else None,
                        to_owner_id=handover_plan.owner.id if handover_plan.owner else None,
                        message=message, created_by=viewer.user_id)
    session.add(handover)
    session.flush()
    rows = []
    for customer_id, external in session.execute(_active_friends(session, source.id)):
        no_id = handover_plan.mode is not HandoverMode.owner and not external
        rows.append({"handover_id": handover.id, "customer_id": customer_id, "external_userid": external or "",
                     "status": (HandoverItemStatus.failed if no_id else HandoverItemStatus.pending).value,
                     "error": _("No WeCom external user ID: WeCom cannot transfer this customer") if no_id else "",
                     "updated_at": utcnow()})
    if rows:
        session.execute(insert(HandoverItem), rows)
    team_service.record_audit(session, actor=viewer, action="handover", entity_type="account", entity_id=source.id,
                              summary=source.display_name,
                              after={"handover_id": handover.id, "mode": handover.mode, "customers": len(rows),
                                     "to_account_id": handover.to_account_id, "to_owner_id": handover.to_owner_id})
    return handover


def get(session: Session, *, handover_id: int) -> Handover:
    handover = session.get(Handover, handover_id)
    if handover is None:
        raise HandoverNotFound("Hand-over {handover_id} not found", handover_id=handover_id)
    return handover


def counts(session: Session, *, handover_id: int) -> dict[str, int]:
    found = {status: n for status, n in session.execute(
        select(HandoverItem.status, func.count()).where(HandoverItem.handover_id == handover_id)
        .group_by(HandoverItem.status))}
    return {status.value: int(found.get(status.value, 0)) for status in HandoverItemStatus}


def failures(session: Session, *, handover_id: int, limit: int = 200) -> list[tuple[HandoverItem, str]]:
    rows = session.execute(select(HandoverItem, Customer.name).join(Customer, Customer.id == HandoverItem.customer_id)
                           .where(HandoverItem.handover_id == handover_id,
                                  HandoverItem.status == HandoverItemStatus.failed.value)
                           .order_by(HandoverItem.id).limit(limit))
    return [(item, name) for item, name in rows]


def retry_failed(session: Session, *, handover_id: int, viewer: Viewer) -> int:
    """Put failed items back in line (those that can go: a customer without a WeCom id stays failed)."""
    _ensure_admin(viewer)
    handover = get(session, handover_id=handover_id)
    query = update(HandoverItem).where(HandoverItem.handover_id == handover.id,
                                       HandoverItem.status == HandoverItemStatus.failed.value)
    if handover.mode != HandoverMode.owner.value:
        query = query.where(HandoverItem.external_userid != "")
    result = session.execute(query.values(status=HandoverItemStatus.pending.value, errcode=None, error=""),
                             execution_options={"synchronize_session": False})
    moved = result.rowcount if isinstance(result, CursorResult) else 0
    handover.status, handover.finished_at = HandoverStatus.running.value, None
    return int(moved)


# ---------------------------------------------------------------- the job's steps


def _pending(session: Session, handover_id: int, limit: int) -> list[HandoverItem]:
    return list(session.scalars(select(HandoverItem).where(
        HandoverItem.handover_id == handover_id, HandoverItem.status == HandoverItemStatus.pending.value)
        .order_by(HandoverItem.id).limit(limit)))


def reassign_batch(session: Session, *, handover: Handover) -> int:
    """Personal account: the next batch of customers gets the new owner; how many were done."""
    items = _pending(session, handover.id, 1000)
    if not items:
        return 0
    ids = [item.customer_id for item in items]
    session.execute(update(Customer).where(Customer.id.in_(ids)).values(owner_id=handover.to_owner_id),
                    execution_options={"synchronize_session": False})
    now = utcnow()
    session.execute(insert(Touch), [
        {"customer_id": cid, "account_id": handover.from_account_id, "user_id": handover.created_by,
         "kind": TouchKind.field_change.value, "content": "", "amount": None,
         "details": {"fields": ["owner_id"], "via": "handover", "handover_id": handover.id},
         "occurred_at": now, "created_at": now} for cid in ids])
    for item in items:
        item.status = HandoverItemStatus.moved.value
    return len(items)


def send_batch(session: Session, *, handover: Handover, api: Any) -> int:
    """WeCom: hand the next 100 customers to the platform; how many were sent or refused at once."""
    items = _pending(session, handover.id, BATCH)
    if not items:
        return 0
    source = session.get_one(Account, handover.from_account_id)
    target = session.get_one(Account, handover.to_account_id)
    answers = api.transfer_customers(source.wecom_userid, target.wecom_userid, [i.external_userid for i in items],
                                     resigned=handover.mode == HandoverMode.wecom_resigned.value,
                                     message=handover.message or None)
    codes = {a.get("external_userid"): int(a.get("errcode") or 0) for a in answers}
    for item in items:
        code = codes.get(item.external_userid)
        if code == 0:
            item.status = HandoverItemStatus.sent.value
        else:
            item.status, item.errcode = HandoverItemStatus.failed.value, code
            item.error = _("WeCom refused the transfer ({code})", code=code if code is not None else "—")
    return len(items)


def collect_results(session: Session, *, handover: Handover, api: Any) -> int:
    """Apply the platform's transfer results to sent items; how many are still waiting."""
    source = session.get_one(Account, handover.from_account_id)
    target = session.get_one(Account, handover.to_account_id)
    results = {r.get("external_userid"): r for r in api.transfer_results(
        source.wecom_userid, target.wecom_userid, resigned=handover.mode == HandoverMode.wecom_resigned.value)}
    waiting = 0
    sent = list(session.scalars(select(HandoverItem).where(
        HandoverItem.handover_id == handover.id, HandoverItem.status == HandoverItemStatus.sent.value)))
    for item in sent:
        status = int(results.get(item.external_userid, {}).get("status") or WAITING)
        if status == TAKEN_OVER:
            _move_friendship(session, item=item, source=source, target=target, handover=handover)
            item.status = HandoverItemStatus.moved.value
        elif status in RESULT_REASONS:
            item.status, item.errcode = HandoverItemStatus.failed.value, status
            item.error = _(RESULT_REASONS[status])
        else:
            waiting += 1
    return waiting


def _move_friendship(session: Session, *, item: HandoverItem, source: Account, target: Account,
                     handover: Handover) -> None:
    old = session.scalar(select(Friendship).where(Friendship.customer_id == item.customer_id,
                                                  Friendship.account_id == source.id))
    new = session.scalar(select(Friendship).where(Friendship.customer_id == item.customer_id,
                                                  Friendship.account_id == target.id))
    now = utcnow()
    if new is None:
        new = Friendship(customer_id=item.customer_id, account_id=target.id, added_at=now,
                         remark_name=old.remark_name if old else "", description=old.description if old else "",
                         channel_state=old.channel_state if old else "")
        session.add(new)
        session.flush()
        if old is not None:
            session.add_all(Phone(friendship_id=new.id, customer_id=item.customer_id, number=p.number)
                            for p in old.phones)
    else:
        new.status, new.removed_at = FriendshipStatus.active.value, None
    if old is not None and old.status == FriendshipStatus.active.value:
        old.status, old.removed_at = FriendshipStatus.transferred.value, now
    session.add(Touch(customer_id=item.customer_id, account_id=target.id, user_id=handover.created_by,
                      kind=TouchKind.system.value, occurred_at=now,
                      details={"event": "handover", "from": source.display_name, "to": target.display_name,
                               "handover_id": handover.id}))


def finish_if_done(session: Session, *, handover: Handover) -> None:
    left = counts(session, handover_id=handover.id)
    if left["pending"]:
        handover.status = HandoverStatus.running.value
    elif left["sent"]:
        handover.status = HandoverStatus.waiting.value
    else:
        handover.status, handover.finished_at = HandoverStatus.done.value, utcnow()
        if handover.mode == HandoverMode.owner.value:
            source = session.get_one(Account, handover.from_account_id)
            source.owner_user_id = handover.to_owner_id


def waiting_handovers(session: Session) -> list[int]:
    return list(session.scalars(select(Handover.id).where(Handover.status == HandoverStatus.waiting.value)))
