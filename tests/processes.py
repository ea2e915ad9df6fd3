"""A real Siyu app process for crash tests: started, killed, restarted like production would be."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(url: str, port: int, workdir: Path, **env: str) -> subprocess.Popen[bytes]:
    """uvicorn with Siyu's app factory on ``port``, against ``url``, without in-process workers; once it answers.

    Its data folder is ``workdir/data``: give each "host" its own ``workdir``."""
    process = start_serving(url, port, workdir, **env)
    wait_until_serving(process, port)
    return process


def start_serving(url: str, port: int, workdir: Path, **env: str) -> subprocess.Popen[bytes]:
    """Like ``serve`` without waiting (start several, then ``wait_until_serving`` each)."""
    environment = {**os.environ, "SIYU_DATABASE_URL": url, "SIYU_SECRET_KEY": "crash-test-secret",
                   "SIYU_WORKER_IN_PROCESS": "0", "SIYU_DATA_DIR": str(workdir / "data"), **env}
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "uvicorn", "siyu.app:create_app", "--factory", "--port", str(port),
         "--log-level", "error"], env=environment, cwd=workdir)


def wait_until_serving(process: subprocess.Popen[bytes], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("uvicorn did not start")


def worker(url: str, workdir: Path, *, data_dir: Path | None = None, **env: str) -> subprocess.Popen[bytes]:
    """``siyu worker --queue bulk`` against ``url``, as its own process (started, killed, restarted)."""
    environment = {**os.environ, "SIYU_DATABASE_URL": url, "SIYU_SECRET_KEY": "crash-test-secret",
                   "SIYU_WORKER_IN_PROCESS": "0", "SIYU_DATA_DIR": str(data_dir or workdir / "data"), **env}
    log = (workdir / "worker.log").open("ab")  # read it when a test fails; a pipe nobody reads would block
    try:
        return subprocess.Popen([sys.executable, "-m", "siyu.cli", "worker", "--queue", "bulk"], env=environment,
                                cwd=workdir, stdout=log, stderr=log)
    finally:
        log.close()


def api_token(port: int, username: str, password: str) -> dict[str, str]:
    answer = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token", data={"username": username,
                                                                           "password": password}, timeout=10)
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}
