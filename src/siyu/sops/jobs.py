"""The SOP job: every five minutes, enrol whoever a running SOP's trigger fired for and run the due steps.

Time-based triggers (N days without a touch, birthdays) are only seen here; event triggers are enrolled
by the hooks at once and caught up here. ``service.run_all`` is idempotent (unique enrolment keys,
steps claimed with a conditional UPDATE) and crash-safe (a WeCom message's claim is committed before
the call), so the periodic task and a run by hand never do anything twice.
"""

from __future__ import annotations

from typing import Any

from huey import crontab

from siyu.core import jobs
from siyu.core.db import get_sessionmaker
from siyu.sops import service as _service  # noqa: F401  (registers the hooks in a worker)


def run_once() -> dict[str, Any]:
    from siyu.sops import service

    session = get_sessionmaker()()
    try:
        result = service.run_all(session)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    return {"entered": result.entered, "ran": result.ran, "by_outcome": dict(result.by_outcome)}


@jobs.bulk_queue.periodic_task(crontab(minute="*/5"))
def sops_when_due() -> None:
    run_once()
