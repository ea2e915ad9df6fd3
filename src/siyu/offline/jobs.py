"""The offline-event job: every hour, follow-up tasks for events that ended and have none yet.

``service.follow_up`` claims an event with a conditional UPDATE of ``followed_up_at``, so the job and
an operator pressing the button never create the follow-ups twice.
"""

from __future__ import annotations

from huey import crontab

from siyu.core import jobs
from siyu.core.db import get_sessionmaker


def run_once() -> int:
    from siyu.offline import service

    session = get_sessionmaker()()
    try:
        done = service.follow_up_ended(session)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    return done


@jobs.bulk_queue.periodic_task(crontab(minute="17"))
def offline_follow_ups() -> None:
    run_once()
