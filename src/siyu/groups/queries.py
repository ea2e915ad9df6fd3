"""Reading groups: who may see which group, and the customers behind members.

The lowest module of the groups package besides the models: the group parts (codes,
onboarding, registry, posts, health, moderation) read groups through it, and
``groups.service`` — which runs those parts during a sync — re-exports it. It imports
nothing else from the groups package, so no part has to import ``groups.service``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import ColumnElement, false, select
from sqlalchemy.orm import Session

from siyu.core.errors import NotFound
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import Customer
from siyu.groups.models import GroupChat

BATCH = 500  # ids per IN list and customers per recompute batch


class GroupNotFound(NotFound):
    pass


def batches(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), BATCH):
        yield values[start:start + BATCH]


def visible_group_clause(viewer: Viewer) -> ColumnElement[bool] | None:
    """Groups this viewer may see: owned by one of their accounts (None: every group)."""
    if viewer.sees_all_accounts:
        return None
    if not viewer.account_ids:
        return false()
    return GroupChat.owner_account_id.in_(sorted(viewer.account_ids))


def get_group(session: Session, *, group_id: int, viewer: Viewer) -> GroupChat:
    group = session.get(GroupChat, group_id)
    if group is None or not (viewer.sees_all_accounts or (
            group.owner_account_id is not None and viewer.can_see_account(group.owner_account_id))):
        raise GroupNotFound("Group not found")
    return group


def visible_customer_ids(session: Session, *, customer_ids: Iterable[int], viewer: Viewer) -> set[int]:
    """Which of these customers the viewer may open (the rest are shown by name only)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return set()
    scope = customers_service.visible_customer_clause(viewer)
    found: set[int] = set()
    for chunk in batches(ids):
        query = select(Customer.id).where(Customer.id.in_(chunk))
        if scope is not None:
            query = query.where(scope)
        found.update(session.scalars(query))
    return found


def live_customer_ids(session: Session, *, customer_ids: Iterable[int]) -> dict[int, int]:
    """Each customer id → the customer to show: a customer merged away lives on in the one it went into.

    A member's ``customer_id`` is re-resolved from the WeCom id on the next sync; until then
    the pages follow the merge.
    """
    live = {i: i for i in set(customer_ids)}
    pending = sorted(live)
    for _hop in range(5):  # merges of merges: a short chain at most
        moved: dict[int, int] = {}
        for chunk in batches(pending):
            for source_id, target_id in session.execute(select(Customer.id, Customer.merged_into_id).where(
                    Customer.id.in_(chunk), Customer.merged_into_id.is_not(None))):
                if target_id is not None:
                    moved[source_id] = target_id
        if not moved:
            break
        for original, current in live.items():
            live[original] = moved.get(current, current)
        pending = sorted(set(moved.values()))
    return live
