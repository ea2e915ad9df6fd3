"""Edits made in Siyu written back to WeCom: remark, description, phones and corp tags.

An operator who corrects a remark or tags a customer in Siyu expects WeCom to show the same
on every member's phone. The customers domain announces which fields an edit changed
(``customers.service.on_customer_changed``); for the WeCom fields a job writes the
customer's *current* Siyu values to each WeCom member who has them as a friend, so repeats
and retries are harmless. A busy platform is retried by the job; a refusal that retrying
cannot fix is put on the customer's timeline with WeCom's own words, never dropped silently.
Bulk tag changes write back too, in tasks of 100 customers that carry on where a busy WeCom
stopped them; only what changed is written (a tag change does not rewrite remarks). The
sync's own writes do not write back (the sync reads WeCom).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind
from siyu.core.db import utcnow
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Tag, Touch, TouchKind

FIELDS = {"remark_name", "description", "phones", "tags"}
CORP_TAG = 1  # follow_user tags of type 1 are corp tags (2 are a member's personal tags)


def wants_write_back(fields: set[str]) -> bool:
    return bool(fields & FIELDS)


def customers_on_wecom(session: Session, customer_ids: list[int]) -> list[int]:
    """Those of these customers WeCom knows (an external user id): the only ones to write back."""
    found: list[int] = []
    for first in range(0, len(customer_ids), 1000):
        found += session.scalars(select(Customer.id).where(Customer.id.in_(customer_ids[first:first + 1000]),
                                                           Customer.wecom_external_userid.is_not(None)))
    return sorted(found)


def write_back(session: Session, *, customer_id: int, api: Any, fields: set[str] | None = None) -> int:
    """Write the customer's remark, description, phones and corp tags to WeCom; members written.

    ``fields``: which changed (remark fields, ``tags``); None writes everything.
    """
    remarks = fields is None or bool(fields & {"remark_name", "description", "phones"})
    tags = fields is None or "tags" in fields
    customer = session.get(Customer, customer_id)
    if customer is None or not customer.wecom_external_userid or customer.merged_into_id is not None:
        return 0
    external = customer.wecom_external_userid
    rows = session.execute(select(Friendship, Account.wecom_userid).join(Account, Account.id == Friendship.account_id)
                           .where(Friendship.customer_id == customer.id,
                                  Friendship.status == FriendshipStatus.active.value,
                                  Account.kind == AccountKind.wecom.value, Account.wecom_userid.is_not(None)))
    friendships = [(f, str(userid)) for f, userid in rows]
    if not friendships:
        return 0
    if remarks:
        for friendship, userid in friendships:
            api.write_remark(userid, external, remark=friendship.remark_name, description=friendship.description,
                             remark_mobiles=[p.number for p in friendship.phones])
            friendship.wecom_written_at = utcnow()
    if not tags:
        return len(friendships)
    mirrored = {t.wecom_id for t in customers_service.customer_tags(session, customer_ids=[customer.id])
                .get(customer.id, []) if t.wecom_id}
    known = set(session.scalars(select(Tag.wecom_id).where(Tag.wecom_id.is_not(None))))
    detail = api.external_contact(external)
    on_wecom = {f.get("userid"): {t.get("tag_id") for t in f.get("tags") or [] if t.get("type") == CORP_TAG}
                for f in detail.get("follow_user") or []}
    for _friendship, userid in friendships:
        have = on_wecom.get(userid, set())
        add = sorted(mirrored - have)
        remove = sorted((have & known) - mirrored)  # only tags Siyu mirrors: a tag it never knew stays
        if add or remove:
            api.mark_tags(userid, external, add=add, remove=remove)
    return len(friendships)


def record_refusal(session: Session, *, customer_id: int, message: str, errcode: int | None) -> None:
    session.add(Touch(customer_id=customer_id, kind=TouchKind.system.value,
                      details={"event": "wecom_writeback_failed", "error": message[:500], "errcode": errcode}))
