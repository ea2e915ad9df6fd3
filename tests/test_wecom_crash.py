"""The app killed with SIGKILL mid-flood of WeCom callbacks, then restarted: every event it answered
``success`` for is stored exactly once and gets processed (the sweep picks up what was never enqueued)."""

from __future__ import annotations

import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.migrate import upgrade
from siyu.customers.models import Customer
from siyu.wecom.models import WecomEvent
from tests.conftest import POSTGRES_URL, Factory
from tests.processes import free_port, serve
from tests.test_wecom_callback import AES_KEY, CORP_ID, TOKEN, envelope, event_xml

EVENTS = 300




@pytest.mark.skipif(bool(POSTGRES_URL), reason="runs on its own SQLite file; the PostgreSQL run covers the rest")
def test_sigkill_mid_callback_flood(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'callbacks.db'}"
    upgrade(url)
    engine = create_engine(url)
    with Session(engine) as session:
        Factory(session).account(wecom_userid="flood")
    # Built once: a retried event is the same XML (same CreateTime), in a fresh envelope.
    events = [event_xml("add_external_contact", UserID="flood", ExternalUserID=f"wmFLOOD{n:05d}")
              for n in range(EVENTS)]
    acknowledged: set[int] = set()
    port = free_port()
    server = serve(url, port, tmp_path, SIYU_WECOM_CORP_ID=CORP_ID, SIYU_WECOM_TOKEN=TOKEN, SIYU_WECOM_AES_KEY=AES_KEY)

    def flood(numbers: range) -> None:
        for n in numbers:
            params, body = envelope(events[n])
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/wecom/callback", params=params, content=body.encode(),
                                    timeout=5)
            except httpx.HTTPError:
                return
            if answer.text == "success":
                acknowledged.add(n)

    sender = threading.Thread(target=flood, args=(range(EVENTS),))
    sender.start()
    while len(acknowledged) < EVENTS // 3 and sender.is_alive():
        time.sleep(0.005)
    server.send_signal(signal.SIGKILL)
    server.wait()
    sender.join()
    assert 0 < len(acknowledged) < EVENTS

    # Restart with a worker, as `siyu serve` runs by default, and let the platform retry the rest.
    server = serve(url, port, tmp_path, SIYU_WECOM_CORP_ID=CORP_ID, SIYU_WECOM_TOKEN=TOKEN, SIYU_WECOM_AES_KEY=AES_KEY)
    try:
        flood(range(EVENTS))  # every event again: the ones already stored are acknowledged, not stored twice
        from siyu.core import jobs
        from siyu.wecom.jobs import sweep_events

        with Session(engine) as session:
            pending = session.scalar(select(func.count()).select_from(WecomEvent).where(
                WecomEvent.status == "received"))
        assert pending  # nobody processed them: the app ran without a worker
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)

    # A worker comes up: the sweep finds every stored-but-unprocessed event (immediate mode runs them here).
    monkeypatch.setenv("SIYU_DATABASE_URL", url)
    from siyu.core import db as core_db
    from siyu.core.settings import get_settings

    get_settings.cache_clear()
    core_db.reset_engine()
    with Session(engine) as session:
        session.execute(update(WecomEvent).values(received_at=utcnow() - timedelta(hours=1)))
        session.commit()
    assert jobs.inbound_queue.immediate
    sweep_events.call_local()
    with Session(engine) as session:
        stored = session.scalar(select(func.count()).select_from(WecomEvent))
        processed = session.scalar(select(func.count()).select_from(WecomEvent).where(
            WecomEvent.status == "processed"))
        customers = session.scalar(select(func.count()).select_from(Customer))
    engine.dispose()
    core_db.reset_engine()
    get_settings.cache_clear()
    assert stored == processed == customers == EVENTS
