"""Group commit: callbacks arriving together share one transaction, and each still gets its own answer."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.group_commit import GroupCommitter
from siyu.wecom import callback
from siyu.wecom.callback import CallbackRefused, Query
from siyu.wecom.models import WecomEvent
from tests.test_wecom_callback import envelope, event_xml, wecom_settings  # noqa: F401 - the settings fixture


def received(inner_xml: str, **kwargs: Any) -> tuple[Query, bytes]:
    params, body = envelope(inner_xml, **kwargs)
    return Query(msg_signature=params["msg_signature"], timestamp=params["timestamp"], nonce=params["nonce"]), \
        body.encode()


def test_one_batch_answers_each_callback_on_its_own(db: Session) -> None:
    add = event_xml("add_external_contact", UserID="m1", ExternalUserID="wmGROUP1")
    first = received(add, nonce="nonce-a")
    resent = first  # the very same request twice in one batch: WeCom resent it when an answer was lost
    reused = received(event_xml("add_external_contact", UserID="m1", ExternalUserID="wmGROUP3"), nonce="nonce-a")
    platform_retry = received(add, nonce="nonce-b")  # the same event again, as WeCom retries it
    other = received(event_xml("add_external_contact", UserID="m1", ExternalUserID="wmGROUP2"), nonce="nonce-c")
    forged = (Query(msg_signature="0" * 40, timestamp=first[0].timestamp, nonce="nonce-d"), first[1])
    answers = callback.accept_many(db, [first, resent, platform_retry, forged, other, reused])
    db.commit()

    assert isinstance(answers[0], int) and isinstance(answers[4], int) and answers[0] != answers[4]
    assert answers[1] is None  # the identical resend: acknowledged, not stored again
    assert answers[2] is None  # acknowledged, not stored again
    assert isinstance(answers[3], CallbackRefused) and answers[3].status == 403
    assert isinstance(answers[5], CallbackRefused) and answers[5].status == 409  # a nonce reused for other content
    assert db.scalar(select(func.count()).select_from(WecomEvent)) == 2
    # A later batch sees what this one stored.
    again = callback.accept_many(db, [received(add, nonce="nonce-e"), first, reused])
    assert again[0] is None and again[1] is None
    assert isinstance(again[2], CallbackRefused) and again[2].status == 409


def test_concurrent_requests_share_flushes_and_all_get_the_failure_when_one_fails() -> None:
    flushed: list[list[int]] = []
    gate = threading.Event()

    def flush(items: list[int]) -> list[int]:
        gate.wait(5)  # the first flush is slow, so the others queue up behind it
        if 13 in items:
            raise RuntimeError("disk full")
        flushed.append(items)
        return [item * 10 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(flush, max_batch=8)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(committer.submit(1))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(committer.submit(n)) for n in range(2, 20)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    # A thread of its own: the browser tests' Playwright may keep an event loop running in this one.
    outcome: list[list[Any]] = []
    runner = threading.Thread(target=lambda: outcome.append(asyncio.run(scenario())))
    runner.start()
    runner.join(30)
    answers = outcome[0]
    assert answers[0] == 10 and len(flushed[0]) == 1
    # Batches: [1] alone, then 2–9, 10–17 (holding 13) and 18–19 queued behind it.
    failed = [n for n, answer in zip(range(1, 20), answers, strict=True) if isinstance(answer, RuntimeError)]
    assert failed == list(range(10, 18))  # the whole batch of 13, and only it
    assert all(answer == n * 10 for n, answer in zip(range(1, 20), answers, strict=True) if n not in failed)
    assert len(flushed) == 3  # 19 requests, 4 transactions (one of them rolled back)


def test_a_batch_that_cannot_be_stored_is_answered_503_so_the_platform_retries(
        client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_session: Session, _received: list[Any]) -> list[Any]:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(callback, "accept_many", broken)
    params, body = envelope(event_xml("add_external_contact", UserID="m1", ExternalUserID="wmLOCKED"))
    answer = client.post("/wecom/callback", params=params, content=body.encode())
    assert answer.status_code == 503 and answer.text != "success" and "Traceback" not in answer.text
    assert db.scalar(select(func.count()).select_from(WecomEvent)) == 0
