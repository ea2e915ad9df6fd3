"""Stage transitions: every change of a customer's stored stage, written where the stage is written.

The customers service derives the stage set-based (``refresh_computed_ids``, ``refresh_purchases``,
``count_new_contacts``); each hands its changed rows here, in the same transaction, as
``(customer_id, old stage, new stage)``. Two statements per batch whatever its size: close the
customers' current rows (``until = at``), insert the new ones. Imports, bulk stage changes and merges
all end in those three functions, so no path changes a stage without a row here. The rollups the
funnel and the cohorts read (``rollups``) change in the same statements' transaction.

``backfill`` gives every customer without a row one initial row (their current stage, from their add
date): what the ladder looked like before transitions were recorded is unknown, and that is the
honest guess the funnel starts from.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, case, exists, func, insert, literal, select, update
from sqlalchemy.orm import Session

from siyu.analytics import rollups
from siyu.analytics.models import STAGE_RANKS, StageTransition
from siyu.core.db import UTCDateTime, among, insert_records, utcnow

_TABLE = cast(Table, StageTransition.__table__)


def record(session: Session, changes: Iterable[tuple[int, str | None, str]], *, at: datetime | None = None) -> int:
    """Record stage changes ``(customer_id, from_stage, to_stage)`` at ``at`` (now); returns rows written."""
    rows = [(customer_id, old, new) for customer_id, old, new in changes if old != new and new in STAGE_RANKS]
    if not rows:
        return 0
    when = at or utcnow()
    connection = session.connection()
    ids = sorted({customer_id for customer_id, _old, _new in rows})
    from siyu.customers.models import Customer

    # The customers' add dates and the rows this closes, for the rollups (live customers only).
    added = {int(cid): created for cid, created in session.execute(select(Customer.id, Customer.created_at).where(
        among(session, Customer.id, ids), Customer.merged_into_id.is_(None)))}
    closing = [(int(cid), int(rank), at, added[int(cid)]) for cid, rank, at in connection.execute(
        update(_TABLE).where(among(session, _TABLE.c.customer_id, ids), _TABLE.c.until.is_(None))
        .values(until=bindparam("v_until", value=when, type_=UTCDateTime()))
        .returning(_TABLE.c.customer_id, _TABLE.c.to_rank, _TABLE.c.at)) if int(cid) in added]
    insert_records(session, _TABLE, [
        {"customer_id": customer_id, "from_rank": STAGE_RANKS.get(old) if old else None,
         "to_rank": STAGE_RANKS[new], "at": when, "until": None} for customer_id, old, new in rows])
    rollups.recorded(session, closed=closing, when=when,
                     opened=[(cid, STAGE_RANKS[new], added[cid]) for cid, _old, new in rows if cid in added])
    return len(rows)


def stage_rank_expression(column: Any) -> ColumnElement[Any]:
    """SQL: a stage column as its rank (unknown text → 流量)."""
    return case(*[(column == stage, literal(rank)) for stage, rank in STAGE_RANKS.items()], else_=literal(0))


def backfill(session: Session) -> int:
    """One initial row (current stage, at the add date) for every customer that has none; set-based."""
    from siyu.customers.models import Customer

    missing = ~exists().where(StageTransition.customer_id == Customer.id)
    source = select(Customer.id, literal(None).label("from_rank"), stage_rank_expression(Customer.stage),
                    Customer.created_at).where(Customer.merged_into_id.is_(None), missing)
    count = int(session.scalar(select(func.count()).select_from(source.subquery())) or 0)
    if count:
        session.execute(insert(_TABLE).from_select(["customer_id", "from_rank", "to_rank", "at"], source))
        rollups.rebuild(session)
    return count
