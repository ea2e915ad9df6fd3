"""A worker SIGKILLed in the middle of a large API import, then the sweep and a new worker: the import
ends complete — every row written once, one audit entry — and the job never stays "running"."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from siyu.core.migrate import upgrade
from siyu.core.models import Job, JobStatus
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, Phone
from siyu.team.models import AuditEntry
from tests.conftest import POSTGRES_URL, TEST_PASSWORD, Factory
from tests.processes import api_token, free_port, serve, worker

ROWS = 6000  # more than imports.BACKGROUND_ROWS: written by the worker, 1,000 rows a batch
LEASE = "2"  # seconds: a dead worker's job is taken over soon after (production: 120)


def _wait(engine: Any, job_id: int, until: Any, timeout: float, what: str) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as session:
            job = session.get(Job, job_id)
            if job is not None and until(job):
                session.expunge(job)
                return job
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(bool(POSTGRES_URL), reason="runs on its own SQLite file; the PostgreSQL run covers the rest")
def test_sigkill_mid_import_then_a_new_worker_finishes_it_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'import.db'}"
    upgrade(url)
    engine = create_engine(url)
    with Session(engine) as session:
        customers_service.ensure_default_tag_groups(session)
        make = Factory(session)
        account = make.account()
        admin = make.user("admin")
        account_id, username = account.id, admin.username
    lines = "".join(f"顾客{n},{13_000_000_000 + n},人群:宝妈\n" for n in range(ROWS))
    body = ("备注名,手机号,标签\n" + lines).encode()

    port = free_port()
    app = serve(url, port, tmp_path, SIYU_JOB_LEASE_SECONDS=LEASE)
    try:
        headers = api_token(port, username, TEST_PASSWORD)
        answer = httpx.post(f"http://127.0.0.1:{port}/api/v1/customers/import", headers=headers,
                            data={"account_id": str(account_id)}, files={"file": ("好友.csv", body, "text/csv")},
                            timeout=60)
        assert answer.status_code == 202, answer.text
        job_id = int(answer.json()["job_id"])

        first = worker(url, tmp_path, SIYU_JOB_LEASE_SECONDS=LEASE)
        try:
            _wait(engine, job_id, lambda job: job.params.get("resume", {}).get("written", 0) >= 2000, 90,
                  "two batches written")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        with Session(engine) as session:
            job = session.get(Job, job_id)
            assert job is not None and job.status == JobStatus.running  # as the dead worker left it
            written = session.scalar(select(func.count()).select_from(Customer))
            assert written == job.params["resume"]["written"] < ROWS  # exactly the committed batches

        time.sleep(float(LEASE) + 0.5)  # the lease runs out; the next worker's sweep takes the job over
        second = worker(url, tmp_path, SIYU_JOB_LEASE_SECONDS=LEASE)
        try:
            job = _wait(engine, job_id, lambda job: job.finished, 120, "the import to finish")
            result = httpx.get(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=20)
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=10)

    assert job.status == JobStatus.succeeded, job.error
    assert job.attempts == 2 and job.error == ""
    assert result["status"] == "succeeded" and result["result"]["created"] == ROWS
    assert (result["result"]["updated"], result["result"]["skipped"]) == (0, 0)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == ROWS
        assert session.scalar(select(func.count(func.distinct(Phone.number)))) == ROWS
        assert session.scalar(select(func.count()).select_from(Phone)) == ROWS
        assert session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "import")) == 1
    engine.dispose()
