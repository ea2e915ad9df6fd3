"""Carriers (载体): WeCom members and personal WeChat accounts, their personas and capacity.

Friend counts are counted live from active friendships (one grouped index scan), so
utilisation can never drift from the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.accounts import qr_renewal
from siyu.accounts.models import RAISED_CAPACITY, UTILISATION_WARNING, Account, AccountKind, AccountStatus
from siyu.accounts.schemas import AccountIn, AccountUpdate
from siyu.core.db import missing_ids
from siyu.core.errors import Conflict, Invalid, NotFound
from siyu.core.settings import local_today
from siyu.core.viewer import Viewer
from siyu.customers import variables
from siyu.customers.models import Friendship, FriendshipStatus
from siyu.team import service as team_service


class AccountNotFound(NotFound):
    pass


@dataclass
class AccountView:
    account: Account
    friend_count: int

    @property
    def utilisation(self) -> float:
        return self.friend_count / self.account.friend_capacity if self.account.friend_capacity else 1.0

    @property
    def near_capacity(self) -> bool:
        return self.utilisation >= UTILISATION_WARNING


def _friend_counts(session: Session, account_ids: list[int] | None = None) -> dict[int, int]:
    query = (
        select(Friendship.account_id, func.count())
        .where(Friendship.status == FriendshipStatus.active.value)
        .group_by(Friendship.account_id)
    )
    if account_ids is not None:
        query = query.where(Friendship.account_id.in_(account_ids))
    return {account_id: count for account_id, count in session.execute(query)}


def visible_accounts(session: Session, *, viewer: Viewer) -> list[Account]:
    query = select(Account).order_by(Account.id)
    if not viewer.sees_all_accounts:
        query = query.where(Account.id.in_(viewer.account_ids))
    return list(session.scalars(query))


def list_accounts(session: Session, *, viewer: Viewer) -> list[AccountView]:
    accounts = visible_accounts(session, viewer=viewer)
    counts = _friend_counts(session, [a.id for a in accounts])
    return [AccountView(account=a, friend_count=counts.get(a.id, 0)) for a in accounts]


def get_account(session: Session, *, account_id: int, viewer: Viewer) -> Account:
    account = session.get(Account, account_id)
    if account is None or not viewer.can_see_account(account.id):
        raise AccountNotFound("Account not found")
    return account


def get_account_view(session: Session, *, account_id: int, viewer: Viewer) -> AccountView:
    account = get_account(session, account_id=account_id, viewer=viewer)
    return AccountView(account=account, friend_count=_friend_counts(session, [account.id]).get(account.id, 0))


def _require_owner(session: Session, user_id: int | None) -> None:
    if user_id is not None and missing_ids(session, "user", [user_id]):
        raise Invalid("User {user_id} not found", field="owner_user_id", user_id=user_id)


def create_account(session: Session, *, data: AccountIn, actor: Viewer) -> Account:
    if data.wecom_userid and session.scalar(select(Account).where(Account.wecom_userid == data.wecom_userid)):
        raise Conflict("WeCom user id {userid} already belongs to an account", field="wecom_userid",
                       userid=data.wecom_userid)
    _require_owner(session, data.owner_user_id)
    _check_greeting(data.greeting)
    if (data.kind == AccountKind.wecom_kf) != bool(data.open_kfid):
        raise Invalid("A WeCom customer service account needs its open_kfid, and only such an account has one",
                      field="open_kfid")
    if data.open_kfid and session.scalar(select(Account).where(Account.open_kfid == data.open_kfid)):
        raise Conflict("WeCom customer service account {open_kfid} already exists", field="open_kfid",
                       open_kfid=data.open_kfid)
    account = Account(**data.model_dump())
    session.add(account)
    session.flush()
    team_service.record_audit(session, actor=actor, action="create", entity_type="account",
                              entity_id=account.id, summary=account.display_name, after=_jsonable(_snapshot(account)))
    return account


def update_account(session: Session, *, account_id: int, data: AccountUpdate, actor: Viewer) -> Account:
    account = get_account(session, account_id=account_id, viewer=actor)
    before = _snapshot(account)
    _require_owner(session, data.owner_user_id)
    if data.greeting is not None:
        _check_greeting(data.greeting)
    if data.friend_capacity is not None and data.friend_capacity != account.friend_capacity:
        _check_capacity(session, account, data.friend_capacity)
    fields = data.model_dump(exclude_unset=True)
    for key, value in fields.items():
        if value is not None or key == "qr_expires_on":
            setattr(account, key, value.value if isinstance(value, AccountStatus) else value)
    session.flush()
    retired = before["status"] != account.status and account.status == AccountStatus.retired.value
    if retired or (before["qr_image_url"], before["qr_expires_on"]) != (account.qr_image_url, account.qr_expires_on):
        qr_renewal.close_tasks(session, account_id=account.id)  # a new QR (or expiry) answers its renewal task
    team_service.record_audit(session, actor=actor, action="retire" if retired else "update",
                              entity_type="account", entity_id=account.id, summary=account.display_name,
                              before=_jsonable(before), after=_jsonable(_snapshot(account)))
    return account


def get_personal_account(session: Session, *, account_id: int, viewer: Viewer) -> Account:
    """A personal WeChat account this viewer works on (the own-QR page is only theirs)."""
    account = get_account(session, account_id=account_id, viewer=viewer)
    if account.kind != AccountKind.personal.value:
        raise AccountNotFound("Account not found")
    return account


def update_qr(session: Session, *, account_id: int, image_url: str | None, expires_on: date | None,
              actor: Viewer) -> Account:
    """An operator renews their personal account's own QR code: a new image (None keeps the current one) and
    the date it stops working. A QR needs that date, so the renewal task can come before it lapses."""
    account = get_personal_account(session, account_id=account_id, viewer=actor)
    if expires_on is None:
        raise Invalid("Say until when the QR code works", field="qr_expires_on")
    if expires_on < local_today():
        raise Invalid("That day has passed; give the day the new QR code stops working", field="qr_expires_on")
    if not (image_url or account.qr_image_url):
        raise Invalid("Choose the QR code image", field="qr_image")
    data = AccountUpdate(qr_expires_on=expires_on, **({"qr_image_url": image_url} if image_url else {}))
    return update_account(session, account_id=account_id, data=data, actor=actor)


def _check_capacity(session: Session, account: Account, capacity: int) -> None:
    """A capacity goes up to WeChat's raised limit, and never below the friends the account already has."""
    if capacity > RAISED_CAPACITY:
        raise Invalid("Capacity is at most {max}", field="friend_capacity", max=RAISED_CAPACITY)
    friends = _friend_counts(session, [account.id]).get(account.id, 0)
    if capacity < friends:
        raise Invalid("The account already has {n} friends; the capacity cannot be lower", field="friend_capacity",
                      n=friends)


def _check_greeting(text: str) -> None:
    """The greeting (微信客服's welcome) reaches customers: only the customer-safe variables."""
    variables.check_outgoing(text, field="greeting", allowed=(variables.SALUTATION, variables.ACCOUNT))


def _jsonable(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in snapshot.items()}


def _snapshot(account: Account) -> dict[str, Any]:
    return {
        column.key: getattr(account, column.key)
        for column in Account.__table__.columns
        if column.key not in ("created_at",)
    }
