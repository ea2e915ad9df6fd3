"""Group commit: many concurrent requests share one database transaction.

A request that must not answer before its row is committed (a WeCom callback: ``success``
means "stored") would otherwise pay a whole transaction — begin, statements, commit, the
after-commit job enqueue — on its own. Here each request hands its item to the committer of
its event loop and waits; the committer writes everything that arrived meanwhile in one
transaction in its writer thread, then answers every waiting request with its own result. One
writer per process and loop also suits SQLite, which has a single writer anyway.

The flush function sees the whole batch and returns one result per item, in order. When it
raises, every request of the batch gets the exception: nothing in it was committed.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommitter(Generic[Item, Result]):
    def __init__(self, flush: Callable[[list[Item]], list[Result]], *, max_batch: int = 200) -> None:
        self._flush = flush
        self._max_batch = max_batch
        # Futures belong to one event loop (tests start several), so each loop has its own queue.
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue[Item, Result]] = (
            weakref.WeakKeyDictionary())

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue(self._flush, self._max_batch)
        return await queue.submit(item)


class _LoopQueue(Generic[Item, Result]):
    def __init__(self, flush: Callable[[list[Item]], list[Result]], max_batch: int) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._drainer: asyncio.Task[None] | None = None
        # One writer thread of its own: lighter than anyio's shared pool, and one writer suits SQLite.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siyu-group-commit")

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        # Shielded: a client hanging up must not cancel the write other requests share.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:self._max_batch], self._waiting[self._max_batch:]
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._writer, self._flush, [item for item, _ in batch])
            except Exception as exc:  # handed to every waiting request; the drainer itself goes on
                for _item, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_item, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
