"""Background work through Huey, on two queues.

Why two: inbound WeCom events must be handled within seconds even while an operator's
import of 100,000 rows or a bulk re-tag is running, so they never share a queue with
bulk work. Each queue is its own Huey instance and gets its own consumer threads.

Storage: a SQLite file per queue in the data folder by default (one machine), Redis when
``SIYU_REDIS_URL`` is set (several app and worker hosts). Tests switch both queues to
Huey's immediate mode, which runs a task synchronously the moment it is enqueued.

Two kinds of task:
- plain Huey tasks (``@jobs.inbound_queue.task(...)``) for machine work such as event
  processing, which keeps its own state in its domain's tables;
- *tracked* tasks (``@jobs.tracked_task(queue)``) for work a user started: a ``Job`` row
  holds progress, result and error so the console can show it and the user can come back.

A task is only enqueued after the transaction that created its data commits, so a worker
never looks for rows that are not there yet (``submit`` and ``enqueue_after_commit``).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.api import TaskWrapper
from huey.consumer import Consumer
from huey.exceptions import RetryTask
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from siyu.core.db import transaction, utcnow
from siyu.core.errors import NotFound
from siyu.core.models import Job, JobStatus
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer

log = logging.getLogger(__name__)

QUEUE_NAMES = ("inbound", "bulk")
# A tracked job's progress is written at most this often, so progress never slows the work.
PROGRESS_INTERVAL_SECONDS = 0.5


def _make_queue(name: str) -> Huey:
    settings = get_settings()
    if settings.redis_url:
        return RedisHuey(f"siyu-{name}", url=settings.redis_url, utc=True)
    path = settings.data_path("queues") / f"{name}.db"
    return SqliteHuey(f"siyu-{name}", filename=str(path), utc=True)


inbound_queue: Huey = _make_queue("inbound")
bulk_queue: Huey = _make_queue("bulk")
QUEUES: dict[str, Huey] = {"inbound": inbound_queue, "bulk": bulk_queue}


def queue_name(queue: Huey) -> str:
    return next(name for name, candidate in QUEUES.items() if candidate is queue)


def set_immediate(immediate: bool) -> None:
    """Run tasks synchronously when enqueued (tests) or through the queues (normal)."""
    for queue in QUEUES.values():
        queue.immediate = immediate


# ---------------------------------------------------------------- enqueue after commit


def enqueue_after_commit(session: Session, task: TaskWrapper, *args: Any, **kwargs: Any) -> None:
    """Enqueue ``task(*args)`` once ``session`` commits; nothing is enqueued on rollback.

    Inside a SAVEPOINT the task waits for the outermost commit, and a rolled-back savepoint
    drops only the tasks queued inside it.
    """
    pending: list[tuple[Any, Callable[[], Any]]] = session.info.setdefault("siyu_after_commit", [])
    pending.append((session.get_nested_transaction() or session.get_transaction(), partial(task, *args, **kwargs)))
    if not session.info.get("siyu_after_commit_hooked"):
        session.info["siyu_after_commit_hooked"] = True
        event.listen(session, "after_commit", _run_after_commit)
        event.listen(session, "after_soft_rollback", _drop_after_rollback)


def cancel_after_commit(session: Session, task: TaskWrapper, *args: Any) -> None:
    """Forget ``task(*args)`` enqueued for this transaction's commit (its work was done meanwhile)."""
    pending = session.info.get("siyu_after_commit", [])
    session.info["siyu_after_commit"] = [
        (t, e) for t, e in pending if not (isinstance(e, partial) and e.func is task and e.args == args)]


def _run_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: the work is not committed yet
    pending = session.info.pop("siyu_after_commit", [])
    for _transaction, enqueue in pending:
        enqueue()


def _inside(transaction: Any, outer: Any) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


def _drop_after_rollback(session: Session, previous_transaction: Any) -> None:
    pending = session.info.get("siyu_after_commit", [])
    session.info["siyu_after_commit"] = [(t, e) for t, e in pending if not _inside(t, previous_transaction)]


def finish_handovers(timeout: float = 5.0) -> None:
    """On a clean shutdown: write the tasks for ids already handed over (the sweep would, later)."""
    for handover in _HANDOVERS:
        handover.wait_until_written(timeout)


class Handover:
    """Enqueues ``task(*ids)`` from one background thread, for ids handed in from any thread.

    For a producer that must not wait for the queue's storage: a WeCom callback's ``success``
    means its event is committed, not that a job for it is written too. Ids handed in while a
    task is being written, or within ``linger`` seconds of the first, gather into the next one
    (up to ``per_task``), so a busy minute makes few, full tasks: each task is a write to the
    queue's storage. Nothing is lost if the process dies first: the ids name committed rows,
    and the producer's sweep starts whatever was stored but never picked up. In immediate
    mode (tests) the tasks run at once, in the caller's thread.
    """

    def __init__(self, task: TaskWrapper, *, per_task: int, linger: float = 0.05) -> None:
        self._task = task
        self._per_task = per_task
        self._linger = linger
        self._finishing = False
        self._waiting: list[int] = []
        self._writing = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        _HANDOVERS.append(self)

    def hand_over(self, ids: list[int]) -> None:
        if not ids:
            return
        if self._task.huey.immediate:
            self._enqueue(ids)
            return
        with self._changed:
            self._waiting.extend(ids)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="siyu-handover", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def wait_until_written(self, timeout: float = 10.0) -> bool:
        """True once every id handed in so far is in a task (shutdown and tests); nothing lingers meanwhile."""
        with self._changed:
            self._finishing = True
            self._changed.notify_all()
            try:
                return self._changed.wait_for(lambda: not self._waiting and not self._writing, timeout)
            finally:
                self._finishing = False

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._waiting))
                self._changed.wait_for(lambda: len(self._waiting) >= self._per_task or self._finishing,
                                       self._linger)
                ids, self._waiting, self._writing = self._waiting, [], True
            try:
                self._enqueue(ids)
            except Exception:  # the rows are committed: the producer's sweep enqueues them later
                log.exception("could not enqueue %s for %s ids; left to the sweep", self._task.name, len(ids))
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def _enqueue(self, ids: list[int]) -> None:
        for first in range(0, len(ids), self._per_task):
            self._task(*ids[first:first + self._per_task])


_HANDOVERS: list[Handover] = []


# ---------------------------------------------------------------- tracked jobs


@dataclass
class JobContext:
    """What a tracked task sees: its job's id and parameters, and a progress reporter."""

    job_id: int
    params: dict[str, Any]
    _last_progress: float = field(default=0.0, repr=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction() as session:
            yield session

    def progress(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        import time

        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_progress = now
        with transaction() as session:
            job = session.get(Job, self.job_id)
            if job is not None:
                job.done = done
                if total is not None:
                    job.total = total


JobFunction = Callable[[JobContext], dict[str, Any]]


def tracked_task(queue: Huey, *, retries: int = 2, retry_delay: int = 10) -> Callable[[JobFunction], TaskWrapper]:
    """A Huey task whose state lives in a ``Job`` row; retried with a growing delay."""

    def decorate(function: JobFunction) -> TaskWrapper:
        @queue.task(name=f"{function.__module__}.{function.__name__}", context=True)
        def run(job_id: int, task: Any = None) -> None:
            _run_tracked(function, job_id, retries=retries, retry_delay=retry_delay)

        run.siyu_queue = queue_name(queue)
        return run

    return decorate


def _run_tracked(function: JobFunction, job_id: int, *, retries: int, retry_delay: int) -> None:
    with transaction() as session:
        job = session.get(Job, job_id)
        if job is None or job.finished:
            log.warning("job %s is gone or already finished; skipping", job_id)
            return
        job.status = JobStatus.running.value
        job.attempts += 1
        job.started_at = job.started_at or utcnow()
        attempt, params = job.attempts, dict(job.params)
    try:
        result = function(JobContext(job_id=job_id, params=params))
    except Exception as exc:
        last_attempt = attempt > retries
        log.exception("job %s (%s) failed on attempt %s", job_id, function.__name__, attempt)
        with transaction() as session:
            job = session.get(Job, job_id)
            if job is not None:
                job.error = _describe(exc)
                job.status = (JobStatus.failed if last_attempt else JobStatus.retrying).value
                if last_attempt:
                    job.finished_at = utcnow()
        if last_attempt:
            return
        # Back off: 10 s, 20 s, 40 s … so a struggling dependency gets room to recover.
        raise RetryTask(delay=retry_delay * 2 ** (attempt - 1)) from exc
    with transaction() as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.status = JobStatus.succeeded.value
            job.result = result
            job.error = ""
            if job.total is not None:
                job.done = job.total
            job.finished_at = utcnow()


def _describe(exc: Exception) -> str:
    # Kept for operators and engineers; shown only to the job's owner and admins.
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[:4000]


def submit(
    session: Session,
    task: TaskWrapper,
    *,
    kind: str,
    title: str,
    params: dict[str, Any],
    actor: Viewer,
    total: int | None = None,
) -> Job:
    """Record a job in the caller's transaction; its task is enqueued once that commits."""
    job = Job(kind=kind, title=title, queue=getattr(task, "siyu_queue", "bulk"), params=params, total=total,
              created_by_id=actor.user_id)
    session.add(job)
    session.flush()
    enqueue_after_commit(session, task, job.id)
    return job


def get_job(session: Session, job_id: int, viewer: Viewer) -> Job:
    job = session.get(Job, job_id)
    if job is None or not can_see(viewer, job):
        raise NotFound("Job not found.")
    return job


def can_see(viewer: Viewer, job: Job) -> bool:
    return viewer.is_admin or (viewer.user_id is not None and job.created_by_id == viewer.user_id)


def list_jobs(
    session: Session, viewer: Viewer, *, status: str | None = None, before_id: int | None = None, limit: int = 50
) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if not viewer.is_admin:
        query = query.where(Job.created_by_id == viewer.user_id)
    if status:
        query = query.where(Job.status == status)
    if before_id:
        query = query.where(Job.id < before_id)
    return list(session.scalars(query))


def stale_before(moment: datetime, session: Session) -> list[Job]:
    """Jobs still marked running that started before ``moment`` (a worker died under them)."""
    query = select(Job).where(Job.status == JobStatus.running.value, Job.started_at < moment)
    return list(session.scalars(query))


# ---------------------------------------------------------------- workers


class Workers:
    """Consumers for both queues, run as threads (``siyu worker`` or inside the web process)."""

    def __init__(self, *, inbound_threads: int = 2, bulk_threads: int = 1, queues: tuple[str, ...] = QUEUE_NAMES):
        threads = {"inbound": inbound_threads, "bulk": bulk_threads}
        self.consumers = [
            Consumer(QUEUES[name], workers=threads[name], worker_type="thread", periodic=True,
                     check_worker_health=False, scheduler_interval=1)
            for name in queues
        ]
        self._stopped = threading.Event()

    def start(self) -> None:
        import signal

        # Huey's consumer installs its own signal handlers; the host process (uvicorn, or
        # run_forever below) keeps its own, so Ctrl-C and SIGTERM still shut down cleanly.
        kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        for consumer in self.consumers:
            consumer.start()
        for sig, handler in kept.items():
            signal.signal(sig, handler)
        log.info("job workers started: %s", ", ".join(c.huey.name for c in self.consumers))

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop(graceful=True)
        self._stopped.set()

    def run_forever(self) -> None:
        """Block until interrupted (Ctrl-C / SIGTERM), then stop gracefully."""
        import signal

        self.start()
        signal.signal(signal.SIGTERM, lambda *_: self._stopped.set())
        signal.signal(signal.SIGHUP, lambda *_: self._stopped.set())
        try:
            while not self._stopped.wait(1):
                pass
        except KeyboardInterrupt:
            pass
        self.stop()
