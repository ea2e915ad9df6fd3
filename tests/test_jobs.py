"""Background jobs: tracked progress and outcome, enqueue-after-commit, retries, workers, pages."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from siyu.core import db as core_db
from siyu.core import jobs
from siyu.core.models import Job, JobStatus
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from tests.conftest import viewer_of
from tests.test_pages import Console

calls: list[dict[str, Any]] = []


@jobs.tracked_task(jobs.bulk_queue)
def count_to(ctx: jobs.JobContext) -> dict[str, Any]:
    calls.append(ctx.params)
    target = int(ctx.params["target"])
    for done in range(1, target + 1):
        ctx.progress(done, target, force=True)
    return {"rows": target}


@jobs.tracked_task(jobs.bulk_queue, retries=1, retry_delay=1)
def always_fails(ctx: jobs.JobContext) -> dict[str, Any]:
    raise RuntimeError("the spreadsheet service is down")


@jobs.tracked_task(jobs.bulk_queue, retries=0)
def fails_once(ctx: jobs.JobContext) -> dict[str, Any]:
    raise ValueError("bad row 3")


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def _job(job_id: int) -> Job:
    with core_db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def test_submitted_job_runs_after_commit_and_records_result(db: Session) -> None:
    job = jobs.submit(db, count_to, kind="test.count", title="Count", params={"target": 3}, actor=SYSTEM)
    assert calls == []  # nothing runs before the transaction commits
    db.commit()
    assert calls == [{"target": 3}]
    finished = _job(job.id)
    assert finished.status == JobStatus.succeeded
    assert finished.result == {"rows": 3}
    assert (finished.done, finished.total, finished.percent) == (3, 3, 100)
    assert finished.started_at is not None and finished.finished_at is not None


def test_rolled_back_job_is_never_enqueued(db: Session) -> None:
    jobs.submit(db, count_to, kind="test.count", title="Count", params={"target": 1}, actor=SYSTEM)
    db.rollback()
    db.commit()
    assert calls == []
    assert db.query(Job).count() == 0


def test_failed_job_keeps_the_error_and_waits_to_retry(db: Session) -> None:
    job = jobs.submit(db, always_fails, kind="test.fail", title="Fail", params={}, actor=SYSTEM)
    db.commit()
    first = _job(job.id)
    assert first.status == JobStatus.retrying
    assert "the spreadsheet service is down" in first.error
    assert first.attempts == 1
    # Huey scheduled the retry with a delay: it is in the queue's schedule, not lost.
    assert jobs.bulk_queue.scheduled_count() >= 1
    jobs.bulk_queue.flush()


def test_job_without_retries_fails_for_good(db: Session) -> None:
    job = jobs.submit(db, fails_once, kind="test.fail", title="Fail", params={}, actor=SYSTEM)
    db.commit()
    failed = _job(job.id)
    assert failed.status == JobStatus.failed
    assert failed.finished_at is not None
    assert "bad row 3" in failed.error


def test_job_pages_show_progress_to_their_starter_only(client: TestClient, db: Session, make: Any) -> None:
    owner = make.user(role="operator")
    other = make.user(role="operator")
    job = jobs.submit(db, count_to, kind="test.count", title="导入 <客户>", params={"target": 2},
                      actor=viewer_of(owner))
    db.commit()

    console = Console(client).login(other)
    assert console.get(f"/jobs/{job.id}").status_code == 404
    assert "导入 &lt;客户&gt;" not in console.get("/jobs").text

    console = Console(client).login(owner)
    page = console.get(f"/jobs/{job.id}")
    assert page.status_code == 200
    assert "导入 &lt;客户&gt;" in page.text
    assert 'data-status="succeeded"' in page.text
    assert "hx-trigger" not in page.text  # finished jobs stop polling
    listing = console.get("/jobs")
    assert listing.status_code == 200 and f"/jobs/{job.id}" in listing.text


def test_job_api_reports_status(client: TestClient, db: Session, make: Any, admin_headers: dict[str, str]) -> None:
    job = jobs.submit(db, fails_once, kind="test.fail", title="Fail", params={}, actor=SYSTEM)
    db.commit()
    body = client.get(f"/api/v1/jobs/{job.id}", headers=admin_headers).json()
    assert body["status"] == "failed" and "bad row 3" in body["error"]
    assert client.get("/api/v1/jobs/999999", headers=admin_headers).status_code == 404
    listed = client.get("/api/v1/jobs?status=failed", headers=admin_headers).json()["items"]
    assert [j["id"] for j in listed] == [job.id]


def test_workers_consume_the_sqlite_queue_outside_immediate_mode(db: Session) -> None:
    jobs.set_immediate(False)
    workers = jobs.Workers(queues=("bulk",))
    try:
        job = jobs.submit(db, count_to, kind="test.count", title="Count", params={"target": 2}, actor=SYSTEM)
        db.commit()
        assert calls == []  # enqueued into the SQLite queue file, not run inline
        assert str(get_settings().data_dir) in jobs.bulk_queue.storage.filename
        workers.start()
        deadline = time.monotonic() + 15
        while _job(job.id).status != JobStatus.succeeded and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _job(job.id).status == JobStatus.succeeded
    finally:
        workers.stop()
        jobs.set_immediate(True)


@jobs.bulk_queue.task()
def note_ids(*ids: int) -> None:
    calls.append({"ids": list(ids)})


def test_a_handover_enqueues_from_its_own_thread_in_full_tasks(db: Session, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    handover = jobs.Handover(note_ids, per_task=50)
    handover.hand_over([1, 2])  # immediate mode (tests): the task runs at once, in this thread
    assert calls == [{"ids": [1, 2]}]
    jobs.set_immediate(False)
    try:
        jobs.bulk_queue.storage.flush_queue()
        handover.hand_over(list(range(100)))
        handover.hand_over(list(range(100, 120)))
        assert handover.wait_until_written()
        written = sorted((task.args for task in jobs.bulk_queue.pending()), key=lambda args: args[0])
        assert [len(args) for args in written] == [50, 50, 20]  # at most 50 ids a task
        assert [i for args in written for i in args] == list(range(120))
        # A queue that cannot be written loses nothing committed (the sweep finds it) and stops nothing.
        jobs.bulk_queue.storage.flush_queue()
        original = jobs.bulk_queue.storage.enqueue
        def disk_full(*_args: Any, **_kwargs: Any) -> None:
            raise OSError("disk full")

        jobs.bulk_queue.storage.enqueue = disk_full  # type: ignore[method-assign]
        try:
            handover.hand_over([7])
            assert handover.wait_until_written()
        finally:
            jobs.bulk_queue.storage.enqueue = original  # type: ignore[method-assign]
        assert "left to the sweep" in caplog.text
        handover.hand_over([8])
        assert handover.wait_until_written()
        assert [task.args for task in jobs.bulk_queue.pending()] == [(8,)]
    finally:
        jobs.bulk_queue.storage.flush_queue()
        jobs.set_immediate(True)
    assert calls == [{"ids": [1, 2]}]  # outside immediate mode nothing ran inline


def test_a_holding_handover_writes_its_ids_only_once_its_producer_lets_go(db: Session) -> None:
    flooding = threading.Event()
    flooding.set()
    waited: list[float] = []

    def hold(seconds: float) -> bool:
        waited.append(seconds)
        return flooding.is_set()

    handover = jobs.Handover(note_ids, per_task=50, linger=0.01, hold=hold)
    jobs.set_immediate(False)
    try:
        jobs.bulk_queue.storage.flush_queue()
        handover.hand_over([1, 2, 3])
        deadline = time.monotonic() + 5
        while len(waited) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(waited) >= 2 and list(jobs.bulk_queue.pending()) == []  # held while the producer is flooded
        assert waited == sorted(waited)  # told how long the oldest id has waited
        flooding.clear()
        deadline = time.monotonic() + 5
        while not list(jobs.bulk_queue.pending()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [task.args for task in jobs.bulk_queue.pending()] == [(1, 2, 3)]
    finally:
        jobs.bulk_queue.storage.flush_queue()
        jobs.set_immediate(True)


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_answers(), reason="no Redis on 127.0.0.1:6379 (CI starts one)")
def test_queues_use_redis_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from huey import RedisHuey

    monkeypatch.setenv("SIYU_REDIS_URL", "redis://127.0.0.1:6379/15")
    get_settings.cache_clear()
    queue = jobs._make_queue("test")
    assert isinstance(queue, RedisHuey)

    @queue.task()
    def add(a: int, b: int) -> int:
        return a + b

    queue.flush()
    result = add(2, 3)
    task = queue.dequeue()
    assert task is not None
    queue.execute(task)
    assert result.get() == 5
    queue.flush()
    get_settings.cache_clear()


def test_rule_change_recomputes_every_customer_as_a_job(client: TestClient, db: Session, make: Any,
                                                        admin_headers: dict[str, str]) -> None:
    account = make.account()
    talked = make.customer(account)
    make.touch(talked, kind="chat")
    rules = client.get("/api/v1/lifecycle-rules", headers=admin_headers).json()
    rules["user_min_contacts"] = 2
    response = client.put("/api/v1/lifecycle-rules", json=rules, headers=admin_headers)
    assert response.status_code == 200, response.text
    job = client.get(response.json()["job_url"], headers=admin_headers).json()
    assert (job["status"], job["result"], job["done"], job["total"]) == ("succeeded", {"rows": 1}, 1, 1)
    db.expire_all()
    assert db.get(type(talked), talked.id).stage == "traffic"  # one chat is no longer enough


def test_tasks_queued_in_a_savepoint_wait_for_the_outer_commit(db: Any) -> None:
    from siyu.core import db as core_db
    from siyu.core import jobs as core_jobs
    from siyu.core.models import AppSetting

    ran: list[int] = []
    with core_db.transaction() as session:
        core_jobs.enqueue_after_commit(session, ran.append, 0)
        with session.begin_nested():
            session.add(AppSetting(key="savepoint-test", value={}))
            core_jobs.enqueue_after_commit(session, ran.append, 1)
        assert ran == []  # a released savepoint is not a commit
        try:
            with session.begin_nested():
                core_jobs.enqueue_after_commit(session, ran.append, 2)
                raise ValueError("undo this savepoint")
        except ValueError:
            pass
        assert ran == []
    assert ran == [0, 1]  # the rolled-back savepoint's task is gone, the others run once
    try:
        with core_db.transaction() as session:
            core_jobs.enqueue_after_commit(session, ran.append, 3)
            raise ValueError("undo everything")
    except ValueError:
        pass
    assert ran == [0, 1]


# ---------------------------------------------------------------- workers that die: leases and the sweep


@jobs.tracked_task(jobs.bulk_queue, retries=1)
def steps(ctx: jobs.JobContext) -> dict[str, Any]:
    calls.append(dict(ctx.params))
    with ctx.transaction() as session:
        ctx.remember(session, step=int(ctx.params.get("step", 0)) + 1)
    return {"rows": ctx.params["step"]}


def _orphan(db: Session, *, task: str, attempts: int, params: dict[str, Any], beat_seconds_ago: float) -> Job:
    """A job as a killed worker leaves it: running, its heartbeat as old as given, nothing queued."""
    from datetime import timedelta

    from siyu.core.db import utcnow

    beat = utcnow() - timedelta(seconds=beat_seconds_ago)
    job = Job(kind="test.steps", title="Steps", queue="bulk", params=params, status=JobStatus.running.value,
              task=task, attempts=attempts, started_at=beat, heartbeat_at=beat, done=3, total=10)
    db.add(job)
    db.commit()
    return job


def test_a_job_whose_worker_died_is_resumed_from_its_position_and_a_live_one_is_left_alone(db: Session) -> None:
    lease = jobs.lease_seconds()
    dead = _orphan(db, task=steps.siyu_name, attempts=1, params={"step": 3}, beat_seconds_ago=lease + 5)
    alive = _orphan(db, task=steps.siyu_name, attempts=1, params={"step": 7}, beat_seconds_ago=lease / 2)
    assert [j.id for j in jobs.stale_before(utcnow_minus(lease), db)] == [dead.id]
    assert jobs.recover_stale() == [dead.id]
    assert calls == [{"step": 3}]  # started again (immediate mode: at once) where it had got to
    resumed = _job(dead.id)
    assert resumed.status == JobStatus.succeeded and resumed.attempts == 2 and resumed.error == ""
    assert resumed.params == {"step": 4} and resumed.result == {"rows": 4}
    assert _job(alive.id).status == JobStatus.running
    assert jobs.recover_stale() == []  # nothing twice


def utcnow_minus(seconds: float) -> Any:
    from datetime import timedelta

    from siyu.core.db import utcnow

    return utcnow() - timedelta(seconds=seconds)


def test_a_dead_job_out_of_retries_or_without_a_known_task_fails_with_a_reason_its_owner_reads(
        db: Session, client: TestClient, make: Any) -> None:
    lease = jobs.lease_seconds()
    spent = _orphan(db, task=steps.siyu_name, attempts=2, params={}, beat_seconds_ago=lease + 5)  # retries=1
    unknown = _orphan(db, task="", attempts=1, params={}, beat_seconds_ago=lease + 5)  # from before the upgrade
    assert sorted(jobs.recover_stale()) == sorted([spent.id, unknown.id])
    assert calls == []
    given_up = _job(spent.id)
    assert given_up.status == JobStatus.failed and given_up.finished_at is not None
    assert given_up.error == ("执行这个任务的工作进程中断了 2 次，任务已在完成 3/10 后停止。"
                              "请重新发起以完成它；已完成的部分不会重复")
    assert _job(unknown.id).error == "执行这个任务的工作进程中断了，这个任务无法继续；请重新发起"
    admin = make.user("admin")
    page = Console(client).login(admin).get(f"/jobs/{spent.id}")
    assert "工作进程中断了 2 次" in page.text


def test_a_worker_whose_lease_was_taken_cannot_write_its_batch(db: Session) -> None:
    job = _orphan(db, task=steps.siyu_name, attempts=2, params={}, beat_seconds_ago=0)
    stale = jobs.JobContext(job_id=job.id, params={}, attempt=1)  # the worker before the sweep took over
    with pytest.raises(jobs.LeaseLost), core_db.transaction() as session:
        stale.remember(session, step=99)
    assert _job(job.id).params == {}


def test_a_running_job_reports_a_heartbeat(db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "lease_seconds", lambda: 0.4)
    beats: list[Any] = []

    @jobs.tracked_task(jobs.bulk_queue)
    def slow(ctx: jobs.JobContext) -> dict[str, Any]:
        for _ in range(3):
            time.sleep(0.25)
            beats.append(_job(ctx.job_id).heartbeat_at)
        return {}

    job = jobs.submit(db, slow, kind="test.slow", title="Slow", params={}, actor=SYSTEM)
    db.commit()
    assert _job(job.id).status == JobStatus.succeeded and _job(job.id).task.endswith(".slow")
    assert len(set(beats)) >= 2  # written while the work went on, from the heartbeat's own thread


def test_a_retry_the_queue_lost_is_started_by_the_sweep(db: Session) -> None:
    job = _orphan(db, task=steps.siyu_name, attempts=1, params={"step": 1}, beat_seconds_ago=jobs.lease_seconds() + 5)
    job.status, job.error = JobStatus.retrying.value, "ConnectionError: WeCom did not answer"
    db.commit()
    assert jobs.recover_stale() == [job.id]
    assert calls == [{"step": 1}] and _job(job.id).status == JobStatus.succeeded


def test_a_task_is_found_by_its_name_and_a_wrong_name_is_refused() -> None:
    from siyu.channels.jobs import sync_contact_way
    from siyu.core import jobs as core_jobs

    assert core_jobs.task_named("channels.jobs.sync_contact_way") is sync_contact_way
    assert core_jobs.task_named("siyu.channels.jobs.sync_contact_way") is sync_contact_way
    for wrong in ("channels.jobs.no_such_task", "channels.jobs.service", "nodots"):
        with pytest.raises(LookupError):
            core_jobs.task_named(wrong)
