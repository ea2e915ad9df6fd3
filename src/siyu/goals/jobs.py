"""Goals jobs: the admin dashboard's company figures, recomputed every few minutes (Huey periodic)."""

from __future__ import annotations

from huey import crontab

from siyu.core import jobs
from siyu.core.db import transaction

# Every 5 minutes: the dashboard's "today" is at most this old (benchmarks/dashboard.py: one run ≤ 5 min
# on 1,000,000 customers).
REFRESH_EVERY_MINUTES = 5


@jobs.bulk_queue.periodic_task(crontab(minute=f"*/{REFRESH_EVERY_MINUTES}"))
def refresh_dashboard() -> None:
    """Today's company figures (and yesterday's and last week's once, after their day ended)."""
    from siyu.goals import dashboard

    with transaction() as session:
        dashboard.refresh_figures(session)
