"""A worker killed with SIGKILL in the middle of pulling a 微信客服 backlog from the simulator, then
pulled again: every message is stored exactly once and the cursor ends where WeCom's log ends —
the cursor only moves in the transaction that stores its page."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from siyu.core import db as core_db
from siyu.core import jobs
from siyu.core.migrate import upgrade
from siyu.core.settings import get_settings
from siyu.inbox.models import Message
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom import kf, kf_jobs
from siyu.wecom.models import KfCursor
from tests.conftest import POSTGRES_URL

CORP_ID = "wwSIYUKFCRASH001"
SECRET = "kf-crash-secret-0123456789"
MESSAGES = 6000
PULL = "from siyu.core import jobs; jobs.set_immediate(True); from siyu.wecom import kf_jobs; " \
       "import sys; kf_jobs.pull_messages.call_local(sys.argv[1])"


@pytest.mark.skipif(bool(POSTGRES_URL), reason="runs on its own SQLite file; the PostgreSQL run covers the rest")
def test_sigkill_mid_pull_loses_and_doubles_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'kf.db'}"
    upgrade(url)
    engine = create_engine(url)
    corp = VirtualCorp.seeded(2, corp_id=CORP_ID, contacts_per_member=1, groups_per_member=0, salt=0)
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    open_kfid = corp.kf.state.accounts[0].open_kfid
    customers = [corp.kf.customer_message(open_kfid=open_kfid, content="在吗")["external_userid"] for _ in range(50)]
    for n in range(MESSAGES - len(customers)):
        corp.kf.customer_message(open_kfid=open_kfid, external_userid=customers[n % 50], content=f"第{n}条")
    token = corp.kf.callback(open_kfid)["token"]
    env = {"SIYU_DATABASE_URL": url, "SIYU_SECRET_KEY": "kf-crash-test", "SIYU_WORKER_IN_PROCESS": "0",
           "SIYU_DATA_DIR": str(tmp_path / "data"), "SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET,
           "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    core_db.reset_engine()
    try:
        with core_db.transaction() as session:
            kf.note_callback(session, open_kfid=open_kfid, token=token)  # the kf_msg_or_event came
        # Each page takes a while to come, so the kill lands between pages or in the middle of one.
        httpx.post(f"{server.url}/_simulator/faults", json={"path": "kf/sync_msg", "times": 100, "latency": 0.3})
        worker = subprocess.Popen([sys.executable, "-c", PULL, open_kfid],  # noqa: S603 - our own interpreter
                                  env={**os.environ, **env}, cwd=tmp_path)
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline and stored < 2000 and worker.poll() is None:
            time.sleep(0.05)
            with Session(engine) as session:
                stored = int(session.scalar(select(func.count()).select_from(Message)) or 0)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        with Session(engine) as session:
            stored = int(session.scalar(select(func.count()).select_from(Message)) or 0)
            cursor = session.scalar(select(KfCursor.cursor))
        assert 0 < stored < MESSAGES, "the kill should land in the middle of the backlog"
        assert stored % 1000 == 0  # whole pages only: a page and its cursor commit together
        httpx.delete(f"{server.url}/_simulator/faults")

        assert jobs.inbound_queue.immediate
        kf_jobs.pull_messages.call_local(open_kfid)  # the restarted worker (the sweep or the next callback)
        with Session(engine) as session:
            total = session.scalar(select(func.count()).select_from(Message))
            distinct = session.scalar(select(func.count(func.distinct(Message.platform_msgid))))
            final = session.scalar(select(KfCursor.cursor))
        assert total == distinct == MESSAGES
        assert final and final != cursor
    finally:
        server.stop()
        engine.dispose()
        core_db.reset_engine()
        get_settings.cache_clear()
