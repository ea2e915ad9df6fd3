"""A customer added by hand: a personal-WeChat friend arrives one at a time, not only by CSV.

The same rules as an import: the customer is looked up first in the import's dedup order
(WeCom external user id, phone in any of its written forms, the account's WeChat ID, then the
account's remark name or nickname), so typing in someone who is already there finds them
instead of making a second record; a new one is created through ``service.create_customer``
(tags, computed facts, search index, audit).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.viewer import Viewer
from siyu.customers import service
from siyu.customers.imports import service as imports
from siyu.customers.models import Customer
from siyu.customers.phones import normalise_mobile
from siyu.customers.schemas import CustomerIn

PERSONAL_SOURCE = "personal"  # Customer.source of a friend of a personal WeChat account, typed in


@dataclass(frozen=True)
class Added:
    customer: Customer
    created: bool  # False: the customer was already there (nothing written)


def add_by_hand(session: Session, *, data: CustomerIn, viewer: Viewer) -> Added:
    service._visible_account(session, account_id=data.account_id, viewer=viewer)
    # A mainland mobile as the import stores it (11 digits, whatever the spaces or +86), anything else as typed.
    phones = [p for p in (normalise_mobile(raw) or service.normalise_phone(raw) for raw in data.phones) if p]
    data = data.model_copy(update={"phones": phones})
    values = {k: v for k, v in (("remark_name", data.remark_name), ("wechat_id", data.wechat_id or "")) if v}
    row = imports.ParsedRow(row=1, account_id=data.account_id, name=data.name, values=values, phones=phones, tags=[])
    existing = imports._find_existing(session, [row]).get(0)
    if existing is not None:
        customer = session.scalar(select(Customer).where(Customer.id == existing))
        if customer is not None:
            return Added(customer=customer, created=False)
    if not data.source:
        data = data.model_copy(update={"source": PERSONAL_SOURCE})
    return Added(customer=service.create_customer(session, data=data, viewer=viewer), created=True)
