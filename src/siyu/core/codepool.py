"""Pools of one-use codes (coupon codes): drawing a free code for a customer, exactly once.

Why one function: a channel's welcome coupon and a coupon batch's codes are the same thing — a
table of codes, each given to at most one customer, a customer holding at most one code of a
pool. ``draw`` is the only code that hands codes out, for one customer (a friend-add) or many
(a batch issued to a segment); a pool's table only needs the columns ``id``, ``code``,
``customer_id`` and ``claimed_at`` plus whatever scopes the pool (``channel_id``, ``batch_id``).

A code changes hands with a guarded UPDATE (``… WHERE id = :id AND customer_id IS NULL``), so two
transactions drawing at once can never give one code twice: the loser's row is not updated, its
customer is simply drawn again from the codes still free (PostgreSQL skips rows another
transaction has locked; SQLite has one writer).

``release`` is the inverse, for a code whose customer never got it (the message that carried it
never left Siyu): the code goes back to the pool to be drawn again. It is guarded the same way
(``… WHERE customer_id IN (:holders) AND <still releasable>``) and answers only the codes this
transaction freed, so two runs at once (a job retried, a cancel beside the results job) free a code
once. No pool holds codes bound to one customer on a platform — a code is a string any order may
name — so a code that never left Siyu is given back, not voided.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from siyu.core.db import utcnow

DRAW_ATTEMPTS = 5
CHUNK = 1000


def draw(session: Session, model: Any, *, scope: Sequence[ColumnElement[bool]],
         customer_ids: Sequence[int]) -> dict[int, str]:
    """customer id → code for these customers: the code each holds already, else a free one.

    Customers missing from the answer got none: the pool ran dry.
    """
    wanted = list(dict.fromkeys(int(c) for c in customer_ids))
    got: dict[int, str] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start:start + CHUNK]
        got.update({int(c): str(code) for c, code in session.execute(
            select(model.customer_id, model.code).where(*scope, model.customer_id.in_(chunk)))})
    todo = [c for c in wanted if c not in got]
    table: Table = model.__table__
    guarded = (update(table).where(table.c.id == bindparam("p_id"), table.c.customer_id.is_(None))
               .values(customer_id=bindparam("p_customer"), claimed_at=bindparam("p_at")))
    for _attempt in range(DRAW_ATTEMPTS):
        if len(todo) == 1:  # one customer (a friend-add): one statement, the free row picked inside the UPDATE
            free_one = (select(model.id).where(*scope, model.customer_id.is_(None)).order_by(model.id).limit(1)
                        .with_for_update(skip_locked=True).scalar_subquery())
            row = session.execute(update(table).where(table.c.customer_id.is_(None), table.c.id == free_one)
                                  .values(customer_id=todo[0], claimed_at=utcnow()).returning(table.c.code),
                                  execution_options={"synchronize_session": False}).first()
            if row is not None:
                got[todo[0]] = str(row[0])
                todo = []
            elif not session.scalar(select(model.id).where(*scope, model.customer_id.is_(None)).limit(1)):
                break  # the pool is dry
            continue
        if not todo:
            break
        free = list(session.scalars(select(model.id).where(*scope, model.customer_id.is_(None))
                                    .order_by(model.id).limit(len(todo)).with_for_update(skip_locked=True)))
        if not free:
            break
        now = utcnow()
        pairs = list(zip(free, todo, strict=False))
        session.execute(guarded, [{"p_id": i, "p_customer": c, "p_at": now} for i, c in pairs],
                        execution_options={"synchronize_session": False})
        waiting = set(todo)
        for start in range(0, len(free), CHUNK):
            for customer_id, code in session.execute(select(model.customer_id, model.code).where(
                    model.id.in_(free[start:start + CHUNK]))):
                if customer_id is not None and int(customer_id) in waiting:
                    got[int(customer_id)] = str(code)
        todo = [c for c in todo if c not in got]
    return got


def release(session: Session, model: Any, *, scope: Sequence[ColumnElement[bool]], customer_ids: Sequence[int],
            keep: Sequence[ColumnElement[bool]] = (), reset: dict[str, Any] | None = None) -> dict[int, str]:
    """Give these customers' codes back to the pool; customer id → code freed now.

    ``keep``: what a code must still be to go back (not redeemed, …), checked in the guarded UPDATE
    itself, so a code redeemed or freed by another transaction meanwhile is left alone. ``reset``:
    the pool's own columns to clear with the holder (who issued it, a reminder sent).
    """
    wanted = list(dict.fromkeys(int(c) for c in customer_ids))
    table: Table = model.__table__
    freed: dict[int, str] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start:start + CHUNK]
        holders = {int(i): int(c) for i, c in session.execute(
            select(model.id, model.customer_id).where(*scope, *keep, model.customer_id.in_(chunk))
            .with_for_update())}
        if not holders:
            continue
        rows = session.execute(update(table).where(table.c.id.in_(list(holders)), table.c.customer_id.in_(chunk),
                                                   *scope, *keep)
                               .values(customer_id=None, claimed_at=None, **(reset or {}))
                               .returning(table.c.id, table.c.code),
                               execution_options={"synchronize_session": False})
        freed.update({holders[int(i)]: str(code) for i, code in rows})
    return freed


def status(session: Session, model: Any, *, scope: Sequence[ColumnElement[bool]]) -> tuple[int, int]:
    """(codes drawn, codes in the pool)."""
    drawn, total = session.execute(select(func.count(model.customer_id), func.count()).select_from(model)
                                   .where(*scope)).one()
    return int(drawn), int(total)
