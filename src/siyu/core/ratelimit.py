"""Calls per user in a sliding window, counted in this process.

Used where repeated calls are themselves the attack (trying numbers in the search box).
Each app process counts its own calls: with several processes a user gets at most the
limit per process, still far below what guessing needs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Hashable


class SlidingWindow:
    def __init__(self, *, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._calls: dict[Hashable, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: Hashable, limit: int) -> bool:
        """Count one call for ``key``; False when it would exceed ``limit`` within the window."""
        now = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(key, deque())
            while calls and calls[0] <= now - self.seconds:
                calls.popleft()
            if len(calls) >= limit:
                return False
            calls.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
