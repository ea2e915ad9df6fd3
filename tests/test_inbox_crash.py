"""The app killed with SIGKILL mid-flood: every acknowledged message is there exactly once afterwards.

A real uvicorn process serves the inbox API; a client floods it with batches, the process
is killed without warning, restarted, and the client sends everything again (as a
connector that never got an answer would). Nothing acknowledged may be missing, nothing
may be stored twice, and each conversation's unanswered count must equal its messages.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from siyu.core.migrate import upgrade
from siyu.inbox.models import Conversation, Message
from tests.conftest import POSTGRES_URL, TEST_PASSWORD, Factory
from tests.processes import free_port, serve

BATCHES = 60
PER_BATCH = 50




@pytest.mark.skipif(bool(POSTGRES_URL), reason="runs on its own SQLite file; the PostgreSQL run covers the rest")
def test_sigkill_mid_flood_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    upgrade(url)
    engine = create_engine(url)
    with Session(engine) as session:
        make = Factory(session)
        make.user("admin", username="boss")
        account = make.account()
        customers = [make.customer(account).id for _ in range(40)]
        account_id = account.id
    start = datetime.now(UTC) - timedelta(hours=1)
    batches = [[{"source": "simulator", "platform_msgid": f"k{b}-{i}", "account_id": account_id,
                 "customer_id": customers[(b * PER_BATCH + i) % len(customers)],
                 "sent_at": (start + timedelta(seconds=b * PER_BATCH + i)).isoformat(), "text": f"消息{b}-{i}"}
                for i in range(PER_BATCH)] for b in range(BATCHES)]
    acknowledged: list[int] = []
    port = free_port()
    server = serve(url, port, tmp_path)

    def flood(token: str) -> None:
        for number, batch in enumerate(batches):
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/api/v1/inbox/messages", json=batch, timeout=5,
                                      headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 202:
                acknowledged.append(number)

    token = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token",
                       data={"username": "boss", "password": TEST_PASSWORD}).json()["access_token"]
    sender = threading.Thread(target=flood, args=(token,))
    sender.start()
    while len(acknowledged) < BATCHES // 3 and sender.is_alive():
        time.sleep(0.01)
    server.send_signal(signal.SIGKILL)
    server.wait()
    sender.join()
    assert 0 < len(acknowledged) < BATCHES, "the kill must land mid-flood"

    with Session(engine) as session:  # every acknowledged batch is there, whole
        stored = set(session.scalars(select(Message.platform_msgid)))
    assert all(f"k{b}-{i}" in stored for b in acknowledged for i in range(PER_BATCH))

    server = serve(url, port, tmp_path)
    try:
        acknowledged.clear()
        flood(token)  # the connector sends everything again
        assert len(acknowledged) == BATCHES
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)

    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(Message))
        distinct = session.scalar(select(func.count(func.distinct(Message.platform_msgid))))
        per_conversation: dict[Any, Any] = dict(session.execute(
            select(Message.conversation_id, func.count()).group_by(Message.conversation_id)).all())
        unanswered = dict(session.execute(select(Conversation.id, Conversation.unanswered)).all())
    engine.dispose()
    assert total == distinct == BATCHES * PER_BATCH
    assert per_conversation == unanswered  # the queue counts match what is stored
