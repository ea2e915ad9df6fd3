"""Several hosts for real: two app processes and one worker, each with its OWN data folder, sharing
only PostgreSQL and Redis (the README's scale-out recipe). A file uploaded to app A is imported by the
worker; the export the worker writes is downloaded from app B. Nothing lands in any data folder."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from siyu.core.migrate import upgrade
from siyu.core.models import StoredFile
from siyu.customers import service as customers_service
from siyu.customers.models import Customer
from tests.conftest import POSTGRES_URL, TEST_PASSWORD, Factory
from tests.processes import api_token, free_port, start_serving, wait_until_serving, worker

SERVER_URL = POSTGRES_URL or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = os.environ.get("SIYU_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROWS = 5100  # more than imports.BACKGROUND_ROWS and exports.DIRECT_ROWS: both run on the worker


def _unreachable() -> str:
    import redis

    try:
        engine = create_engine(SERVER_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {make_url(SERVER_URL).render_as_string()} does not answer ({type(exc).__name__})"
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        return f"Redis at {REDIS_URL} does not answer ({type(exc).__name__})"
    return ""


def _poll(port: int, headers: dict[str, str], job_id: int, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["status"] in ("succeeded", "failed"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.skipif(bool(POSTGRES_URL), reason="ran in the SQLite pass (it brings its own PostgreSQL database)")
def test_upload_on_app_a_import_and_export_on_the_worker_download_on_app_b(tmp_path: Path) -> None:
    problem = _unreachable()
    if problem:
        pytest.skip(f"MULTI-HOST TEST NOT RUN: {problem}; start them with scripts/services.sh")
    import redis

    name = f"siyu_hosts_{uuid.uuid4().hex[:10]}"
    prefix = f"siyu-test-{uuid.uuid4().hex[:10]}"  # this run's queues in the shared Redis
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    processes: list[subprocess.Popen[bytes]] = []
    hosts = {host: tmp_path / host for host in ("app-a", "app-b", "worker")}
    try:
        upgrade(url)
        with Session(engine) as session:
            customers_service.ensure_default_tag_groups(session)
            make = Factory(session)
            account_id, username = make.account().id, make.user("admin").username
        for folder in hosts.values():
            folder.mkdir()
        env = {"SIYU_REDIS_URL": REDIS_URL, "SIYU_QUEUE_PREFIX": prefix}
        processes.append(worker(url, hosts["worker"], **env))
        port_a, port_b = free_port(), free_port()
        for port, host in ((port_a, "app-a"), (port_b, "app-b")):
            processes.append(start_serving(url, port, hosts[host], **env))
        for process, port in zip(processes[1:], (port_a, port_b), strict=True):
            wait_until_serving(process, port)
        headers = api_token(port_a, username, TEST_PASSWORD)

        lines = "".join(f"顾客{n},{13_100_000_000 + n}\n" for n in range(ROWS))
        answer = httpx.post(f"http://127.0.0.1:{port_a}/api/v1/customers/import", headers=headers,
                            data={"account_id": str(account_id)},
                            files={"file": ("好友.csv", ("备注名,手机号\n" + lines).encode("gbk"), "text/csv")},
                            timeout=60)
        assert answer.status_code == 202, answer.text
        imported = _poll(port_b, headers, int(answer.json()["job_id"]))  # app B sees the worker's job
        assert imported["status"] == "succeeded", imported["error"]
        assert imported["result"]["created"] == ROWS

        answer = httpx.get(f"http://127.0.0.1:{port_a}/api/v1/customers/export", params={"format": "csv"},
                           headers=headers, timeout=60)
        assert answer.status_code == 202, answer.text
        exported = _poll(port_a, headers, int(answer.json()["job_id"]))
        assert exported["status"] == "succeeded", exported["error"]
        download = httpx.get(f"http://127.0.0.1:{port_b}{exported['result']['api_download_url']}",
                             headers=headers, timeout=60)
        assert download.status_code == 200, download.text
        rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
        assert len(rows) == ROWS + 1 and rows[0][0] == "备注名"
        assert {row[0] for row in rows[1:]} == {f"顾客{n}" for n in range(ROWS)}

        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(Customer)) == ROWS
            keys = list(session.scalars(select(StoredFile.key)))
        assert [k.split("/")[0] for k in keys] == ["exports"]  # the upload went once imported
        # Every file went through the shared storage: no host kept one in its own data folder.
        assert [p for folder in hosts.values() for p in folder.glob("data/**/*") if p.is_file()] == []
    finally:
        for process in processes:
            _stop(process)
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        client = redis.Redis.from_url(REDIS_URL)
        stale = list(client.scan_iter(match=f"*{prefix}*"))
        if stale:
            client.delete(*stale)
