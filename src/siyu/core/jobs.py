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

A worker can die under a tracked job (``kill -9``, a lost host, an out-of-memory kill): Huey
has already handed the task out and will not give it again. So a running job carries a
*lease*: its worker writes ``heartbeat_at`` every quarter of ``SIYU_JOB_LEASE_SECONDS``, and a
sweep (every minute on each bulk worker, and when a worker starts) takes a running job whose
heartbeat is older than the lease as orphaned. It is claimed with one conditional UPDATE (two
sweeps never both win) and enqueued again — treated like a failed attempt, so it counts
against the task's retries — or, once they are used up, failed with a message its owner can
read. Every tracked task therefore must be safe to run again after a crash at any point, as it
already must be for a retry: long ones keep their position with ``JobContext.remember`` in the
same transaction as the work (an import, a bulk action), or redo idempotent work (an export
writes a new file). A worker that comes back from a long pause after its lease was taken
finds ``attempts`` moved on, and its next ``remember`` rolls its batch back (``LeaseLost``).
A job waiting for a retry has ``heartbeat_at`` set to when the retry is due, so a retry the
queue lost (a Redis restarted without persistence) is started by the sweep a lease later.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeAlias

from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.api import TaskWrapper
from huey.consumer import Consumer
from huey.exceptions import RetryTask
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from siyu.core.db import transaction, utcnow
from siyu.core.errors import NotFound
from siyu.core.i18n import N_, _
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
        return RedisHuey(f"{settings.queue_prefix}-{name}", url=settings.redis_url, utc=True)
    path = settings.data_path("queues") / f"{name}.db"
    return SqliteHuey(f"{settings.queue_prefix}-{name}", filename=str(path), utc=True)


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

# A task given by name: "<domain>.<jobs module>.<task>", e.g. "channels.jobs.sync_contact_way".
TaskRef: TypeAlias = "TaskWrapper | str"


def task_named(name: str) -> TaskWrapper:
    """The task called ``name`` ("channels.jobs.sync_contact_way"), its module imported on first use.

    Why by name: a domain's service must not import its own ``jobs`` module (which imports the
    service) — services enqueue through here by name, jobs call services, and no import circle forms.
    """
    module_name, _dot, attribute = name.rpartition(".")
    if not module_name or not attribute:
        raise LookupError(f"not a task name: {name!r}")
    module = importlib.import_module(module_name if module_name.startswith("siyu.") else f"siyu.{module_name}")
    task = getattr(module, attribute, None)
    if not isinstance(task, TaskWrapper):
        raise LookupError(f"no task {name!r}")
    return task


def _task(task: TaskRef) -> TaskWrapper:
    return task_named(task) if isinstance(task, str) else task


def enqueue_after_commit(session: Session, task: TaskRef, *args: Any, **kwargs: Any) -> None:
    """Enqueue ``task(*args)`` once ``session`` commits; nothing is enqueued on rollback.

    ``task`` is the task or its name (``task_named``). Inside a SAVEPOINT the task waits for the
    outermost commit, and a rolled-back savepoint drops only the tasks queued inside it.
    """
    task = _task(task)
    pending: list[tuple[Any, Callable[[], Any]]] = session.info.setdefault("siyu_after_commit", [])
    pending.append((session.get_nested_transaction() or session.get_transaction(), partial(task, *args, **kwargs)))
    if not session.info.get("siyu_after_commit_hooked"):
        session.info["siyu_after_commit_hooked"] = True
        event.listen(session, "after_commit", _run_after_commit)
        event.listen(session, "after_soft_rollback", _drop_after_rollback)


def cancel_after_commit(session: Session, task: TaskRef, *args: Any) -> None:
    """Forget ``task(*args)`` enqueued for this transaction's commit (its work was done meanwhile)."""
    task = _task(task)
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

    def __init__(self, task: TaskWrapper, *, per_task: int, linger: float = 0.05,
                 hold: Callable[[float], bool] | None = None) -> None:
        """``hold(seconds the oldest id has waited)``: True keeps the ids a while longer (a producer
        that gives way to its own requests during a flood); they are written once it says False."""
        self._task = task
        self._per_task = per_task
        self._linger = linger
        self._hold = hold
        self._since = 0.0
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
            if not self._waiting:
                self._since = time.monotonic()
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
                while self._hold is not None and not self._finishing and self._hold(time.monotonic() - self._since):
                    self._changed.wait(_HOLD_RECHECK)
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
_HOLD_RECHECK = 0.2  # seconds between a holding handover's looks at whether to let go


# ---------------------------------------------------------------- tracked jobs


@dataclass
class JobContext:
    """What a tracked task sees: its job's id and parameters, and a progress reporter."""

    job_id: int
    params: dict[str, Any]
    attempt: int = 1
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

    def remember(self, session: Session, **values: Any) -> None:
        """Keep ``values`` in the job's params within the caller's transaction.

        Committed together with the work they describe, so an attempt after a crash starts
        exactly where the last committed one stopped (it finds them in ``params``). Raises
        ``LeaseLost`` when another worker has taken the job over: the caller's work rolls back.
        """
        job = session.get(Job, self.job_id, with_for_update=True)
        if job is None or job.attempts != self.attempt or job.finished:
            raise LeaseLost(f"job {self.job_id}: attempt {self.attempt} was taken over")
        job.params = {**job.params, **values}
        job.heartbeat_at = utcnow()
        self.params = {**self.params, **values}


class LeaseLost(RuntimeError):
    """This worker's attempt at a job was given up (its lease ran out) and another one runs it."""


JobFunction = Callable[[JobContext], dict[str, Any]]


@dataclass(frozen=True)
class TrackedTask:
    task: TaskWrapper
    retries: int


# Every tracked task by name (``Job.task``), so the sweep can start an orphaned job again.
TRACKED: dict[str, TrackedTask] = {}


def tracked_task(queue: Huey, *, retries: int = 2, retry_delay: int = 10) -> Callable[[JobFunction], TaskWrapper]:
    """A Huey task whose state lives in a ``Job`` row; retried with a growing delay."""

    def decorate(function: JobFunction) -> TaskWrapper:
        name = f"{function.__module__}.{function.__name__}"

        @queue.task(name=name, context=True)
        def run(job_id: int, task: Any = None) -> None:
            _run_tracked(function, job_id, retries=retries, retry_delay=retry_delay)

        run.siyu_queue = queue_name(queue)
        run.siyu_name = name
        TRACKED[name] = TrackedTask(task=run, retries=retries)
        return run

    return decorate


def lease_seconds() -> float:
    return float(get_settings().job_lease_seconds)


class _Heartbeat:
    """Writes a running job's ``heartbeat_at`` every quarter lease, from its own thread, until stopped."""

    def __init__(self, job_id: int, attempt: int) -> None:
        self.job_id, self.attempt = job_id, attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"siyu-heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(lease_seconds() / 4):
            try:
                with transaction() as session:
                    session.execute(update(Job).where(
                        Job.id == self.job_id, Job.attempts == self.attempt,
                        Job.status == JobStatus.running.value).values(heartbeat_at=utcnow()))
            except Exception:  # a busy database: the next beat tries again, well within the lease
                log.warning("job %s: heartbeat not written", self.job_id, exc_info=True)


def _alive(job: Job, now: datetime) -> bool:
    beat = job.heartbeat_at or job.started_at
    return job.status == JobStatus.running and beat is not None and (now - beat).total_seconds() < lease_seconds()


def _run_tracked(function: JobFunction, job_id: int, *, retries: int, retry_delay: int) -> None:
    with transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.finished:
            log.warning("job %s is gone or already finished; skipping", job_id)
            return
        now = utcnow()
        if _alive(job, now):
            log.warning("job %s is running on another worker (heartbeat %s); skipping", job_id, job.heartbeat_at)
            return
        job.status = JobStatus.running.value
        job.attempts += 1
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        attempt, params = job.attempts, dict(job.params)
    try:
        with _Heartbeat(job_id, attempt):
            result = function(JobContext(job_id=job_id, params=params, attempt=attempt))
    except LeaseLost:
        log.warning("job %s: attempt %s was taken over by another worker; stopping it here", job_id, attempt)
        return
    except Exception as exc:
        last_attempt = attempt > retries
        # Back off: 10 s, 20 s, 40 s … so a struggling dependency gets room to recover.
        delay = retry_delay * 2 ** (attempt - 1)
        log.exception("job %s (%s) failed on attempt %s", job_id, function.__name__, attempt)
        with transaction() as session:
            job = session.get(Job, job_id)
            if job is None or job.attempts != attempt:
                return  # another worker runs it now (this one's lease ran out)
            job.error = _describe(exc)
            job.status = (JobStatus.failed if last_attempt else JobStatus.retrying).value
            # When the retry is due: should the queue lose it (a Redis without persistence restarted),
            # the sweep starts the job a lease after that.
            job.heartbeat_at = utcnow() + timedelta(seconds=delay)
            if last_attempt:
                job.finished_at = utcnow()
        if last_attempt:
            return
        raise RetryTask(delay=delay) from exc
    with transaction() as session:
        job = session.get(Job, job_id)
        if job is not None and job.attempts == attempt:
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
    task: TaskRef,
    *,
    kind: str,
    title: str,
    params: dict[str, Any],
    actor: Viewer,
    total: int | None = None,
    enqueue: bool = True,
) -> Job:
    """Record a job in the caller's transaction; its task is enqueued once that commits.

    ``enqueue=False``: the caller runs it in its own process (``task.call_local(job.id)``, the
    CLI); should that process die, the sweep hands the job to a worker like any other.
    ``task``: the task or its name (``task_named``).
    """
    task = _task(task)
    job = Job(kind=kind, title=title, queue=getattr(task, "siyu_queue", "bulk"), params=params, total=total,
              created_by_id=actor.user_id, task=getattr(task, "siyu_name", ""))
    session.add(job)
    session.flush()
    if enqueue:
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


STALE_STATUSES = (JobStatus.running.value, JobStatus.retrying.value)


def stale_before(moment: datetime, session: Session) -> list[Job]:
    """Jobs whose worker last reported before ``moment`` (it died under them), or whose retry was due
    before it and never started (the queue lost it)."""
    query = select(Job).where(Job.status.in_(STALE_STATUSES),
                              func.coalesce(Job.heartbeat_at, Job.started_at) < moment).order_by(Job.id)
    return list(session.scalars(query))


RESUMED = N_("Its worker stopped; the job was started again (attempt {attempt}) and goes on from where it was")
GIVEN_UP = N_("Its worker stopped {n} times; the job was stopped after {done} of {total}. Start it again to finish")
NOT_RESUMABLE = N_("Its worker stopped and this job cannot be resumed; start it again")


def recover_stale(now: datetime | None = None) -> list[int]:
    """Resume (or fail, with the reason) every running job whose worker died, and start again every
    retry the queue lost; their ids.

    Each job is claimed with one conditional UPDATE on its status and heartbeat, so two sweeps
    at once (every bulk worker runs one) never both start it.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=lease_seconds())
    recovered: list[int] = []
    with transaction() as session:
        candidates = [(job.id, job.task, job.attempts, job.done, job.total, job.status)
                      for job in stale_before(cutoff, session)]
    for job_id, task_name, attempts, done, total, status in candidates:
        tracked = TRACKED.get(task_name)
        if status == JobStatus.retrying and tracked is None:
            continue  # from before leases: its retry is Huey's to start
        resumable = tracked is not None and attempts <= tracked.retries
        # heartbeat_at = now: a job that waits in the queue behind others is not claimed again at once.
        values: dict[str, Any] = {"heartbeat_at": now}
        if resumable and status == JobStatus.running:
            values.update(status=JobStatus.retrying.value, error=_(RESUMED, attempt=attempts + 1))
        elif not resumable:
            message = (_(GIVEN_UP, n=attempts, done=done, total=total if total is not None else "?")
                       if tracked is not None else _(NOT_RESUMABLE))
            values.update(status=JobStatus.failed.value, error=message, finished_at=now)
        with transaction() as session:
            claimed = session.execute(update(Job).where(
                Job.id == job_id, Job.status == status, Job.attempts == attempts,
                func.coalesce(Job.heartbeat_at, Job.started_at) < cutoff).values(**values))
            if getattr(claimed, "rowcount", 0) != 1:
                continue  # another sweep took it, or its worker was only slow and reported meanwhile
            if resumable and tracked is not None:
                enqueue_after_commit(session, tracked.task, job_id)
        log.warning("job %s (%s) was %s and nobody ran it for a lease; %s", job_id, task_name, status,
                    "started again" if resumable else "failed")
        recovered.append(job_id)
    return recovered


@bulk_queue.periodic_task(crontab(minute="*"))
def sweep_stale_jobs() -> None:
    """Every minute on each bulk worker: jobs whose worker died are resumed or failed."""
    recover_stale()


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

        if any(consumer.huey is bulk_queue for consumer in self.consumers):
            try:  # jobs orphaned while no worker ran: resumed now, not a minute from now
                recover_stale()
            except Exception:
                log.exception("could not look for orphaned jobs; the periodic sweep will")

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
