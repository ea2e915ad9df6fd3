"""Churn follow-up: the friendships that ended, who ended them, and the operator's review.

A friendship the customer deleted (WeCom ``del_follow_user``, a 公众号 unsubscribe) or our account
removed (``del_external_contact``) is marked by ``wecom.events`` / ``mp.inbound`` with
``Friendship.ended_by``; the daily job makes a ``deleted`` task for the account's operator. The
review stores a reason (one of ``REASONS``, plus free text) on the friendship, and the task shows
the customer's other active friendships: the accounts a win-back can still go through.

The churn list reads ``ix_friendship_status_removed`` (status, removed_at, id), newest first,
paged by a (removed_at, id) cursor, filtered by account, dates and who ended it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import N_
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer, Friendship, FriendshipStatus
from siyu.team.service import record_audit

REASONS = {
    "price": N_("Price or promotion"),
    "too_many_messages": N_("Too many messages"),
    "product": N_("Product or service problem"),
    "no_need": N_("No longer needs it"),
    "competitor": N_("Went to a competitor"),
    "duplicate": N_("Has another of our accounts"),
    "unknown": N_("Unknown"),
    "other": N_("Other"),
}
SIDES = {"customer": N_("The customer deleted us"), "member": N_("Our account removed them")}


@dataclass
class ChurnRow:
    friendship: Friendship
    customer: Customer


def _day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=local_zone())


def list_churn(session: Session, *, viewer: Viewer, account_id: int | None = None, since: date | None = None,
               until: date | None = None, side: str = "", limit: int = 50,
               after: tuple[datetime, int] | None = None) -> list[ChurnRow]:
    """Ended friendships on the viewer's accounts, newest first; another account: 404."""
    if account_id is not None and (not viewer.can_see_account(account_id) or session.get(Account, account_id) is None):
        raise NotFound("Account not found")
    if side and side not in SIDES:
        raise Invalid("Unknown side {side}", field="side", side=side)
    if since is not None and until is not None and since > until:
        raise Invalid("The start date is after the end date", field="since")
    query = (select(Friendship, Customer).join(Customer, Customer.id == Friendship.customer_id)
             .where(Friendship.status == FriendshipStatus.deleted.value, Friendship.removed_at.is_not(None)))
    if account_id is not None:
        query = query.where(Friendship.account_id == account_id)
    elif not viewer.sees_all_accounts:
        query = query.where(Friendship.account_id.in_(sorted(viewer.account_ids)))
    if since is not None:
        query = query.where(Friendship.removed_at >= _day_start(since))
    if until is not None:
        query = query.where(Friendship.removed_at < _day_start(until + timedelta(days=1)))
    if side:
        query = query.where(Friendship.ended_by == side)
    if after is not None:
        at, last_id = after
        query = query.where(or_(Friendship.removed_at < at, and_(Friendship.removed_at == at, Friendship.id < last_id)))
    rows = session.execute(query.order_by(Friendship.removed_at.desc(), Friendship.id.desc()).limit(limit))
    return [ChurnRow(friendship=f, customer=c) for f, c in rows]


def get_ended(session: Session, *, customer_id: int, account_id: int, viewer: Viewer) -> Friendship:
    if not viewer.can_see_account(account_id):
        raise NotFound("Customer not found")
    friendship = session.scalar(select(Friendship).where(Friendship.customer_id == customer_id,
                                                         Friendship.account_id == account_id))
    if friendship is None or friendship.status != FriendshipStatus.deleted.value:
        raise NotFound("Customer not found")
    return friendship


def set_reason(session: Session, *, customer_id: int, account_id: int, reason: str, note: str,
               viewer: Viewer) -> Friendship:
    """The review: why the customer left this account (a choice, plus free text)."""
    if reason not in REASONS:
        raise Invalid("Choose a reason from the list", field="reason")
    friendship = get_ended(session, customer_id=customer_id, account_id=account_id, viewer=viewer)
    before = {"churn_reason": friendship.churn_reason, "churn_note": friendship.churn_note}
    friendship.churn_reason, friendship.churn_note = reason, note.strip()[:255]
    customer = session.get(Customer, customer_id)
    name = customer.name if customer else ""
    record_audit(session, actor=viewer, action="churn_review", entity_type="customer", entity_id=customer_id,
                 summary=name, entity_name=name, before=before,
                 after={"churn_reason": reason, "churn_note": friendship.churn_note})
    session.flush()
    return friendship


def win_back_routes(session: Session, *, customer_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """For each customer: their still-active friendships (account id, account name) to win them back through."""
    if not customer_ids:
        return {}
    found: dict[int, list[tuple[int, str]]] = {}
    for cid, aid, name in session.execute(
            select(Friendship.customer_id, Friendship.account_id, Account.display_name)
            .join(Account, Account.id == Friendship.account_id)
            .where(Friendship.customer_id.in_(sorted(set(customer_ids))),
                   Friendship.status == FriendshipStatus.active.value)
            .order_by(Friendship.customer_id, Friendship.account_id)):
        found.setdefault(int(cid), []).append((int(aid), str(name)))
    return found
