"""Demo data for 数据分析: a believable history of the ladder, so the funnel moves when the date changes.

The demo's customers are made with their final stage and an add date in the past; here each gets the
path that led there — added as 流量, then each higher rung reached on a day between the add date and
now — written as stage transitions (the rows the product records live), set-based.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from siyu.analytics import rollups
from siyu.analytics.models import STAGE_RANKS, StageTransition
from siyu.core.db import utcnow
from siyu.customers.models import Customer

_TABLE = cast(Table, StageTransition.__table__)


def build_history(session: Session, *, seed: int = 7, now: datetime | None = None) -> int:
    """Replace every customer's transitions with a plausible path to their current stage; rows written."""
    rng = random.Random(f"analytics/{seed}")  # noqa: S311 - demo data
    now = now or utcnow()
    session.flush()
    session.execute(delete(StageTransition))
    rows: list[dict[str, Any]] = []
    for customer_id, stage, created_at in session.execute(
            select(Customer.id, Customer.stage, Customer.created_at).where(Customer.merged_into_id.is_(None))):
        rank = STAGE_RANKS.get(stage, 0)
        span = max((now - created_at).total_seconds(), 60.0)
        # Each rung reached a little later than the one below (earlier rungs sooner, as on a real ladder).
        marks = sorted(rng.uniform(0.05, 0.95) * span for _ in range(rank))
        path = [(None, 0, created_at)] + [(r, r + 1, created_at + timedelta(seconds=m)) for r, m in enumerate(marks)]
        for position, (before, after, at) in enumerate(path):
            until = path[position + 1][2] if position + 1 < len(path) else None
            rows.append({"customer_id": customer_id, "from_rank": before, "to_rank": after, "at": at, "until": until})
    for start in range(0, len(rows), 5000):
        session.execute(insert(_TABLE), rows[start:start + 5000])
    rollups.rebuild(session)
    return len(rows)


def fetch_behaviour(session: Session) -> int:
    """``siyu demo --simulate``: queue the fetch of WeCom's member statistics from the simulator (job id)."""
    from siyu.analytics import jobs
    from siyu.core.viewer import SYSTEM

    return jobs.submit_behaviour(session, actor=SYSTEM)
