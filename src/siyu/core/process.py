"""Process-wide tuning done once a long-running process (web app, worker) has started."""

from __future__ import annotations

import gc

# Python's default (700, 10, 10) runs a young-generation pass every 700 net allocations: a page of a
# flood (1,000 messages, their dicts and rows) is walked dozens of times while alive and promoted to
# the old generation, whose full passes then walk it again. Larger is not free: a pass walks whatever
# young objects are alive, and that pause lands on some request. Measured one after the other on the
# quiet machine (2026-12-05 18:10–18:17 UTC, benchmarks/flood.py ratio and benchmarks/mp_callbacks.py
# p99): 700 → p99 14.6 ms; 10,000 → 4.94× and 12.3 ms; 25,000 → 4.66× and 19.0 ms; 50,000 →
# 4.68× and 33.7 ms (target ≤ 50 ms).
GC_THRESHOLDS = (25_000, 10, 10)


def freeze_startup_objects() -> None:
    """Keep the objects loaded at start-up out of the garbage collector's full passes.

    The app holds ~180,000 long-lived objects (FastAPI, SQLAlchemy, templates, catalogues);
    every full collection walked them all — ~80 ms on a 2-core VM, paid by whichever request
    triggered it. Frozen, a full pass only walks what was allocated since.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
