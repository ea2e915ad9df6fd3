"""What every benchmark prints beside its figures: when, on what, under which load.

Also the one way benchmarks time a product against its baseline: interleaved runs (A, B,
A, B, …) so that load on a shared machine hits both alike, reported as medians.
"""

from __future__ import annotations

import csv
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """``2026-12-05 04:20 UTC · 2 cores (AMD EPYC) · load 3.1 2.9 1.6 · Python 3.11.7``."""
    try:
        load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        load = "?"
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} cores ({cpu_model()}) · "
            f"load {load} · Python {platform.python_version()}")


def print_header(title: str) -> None:
    print(f"{title}\n  {describe()}", flush=True)


def interleaved(runs: int, actions: dict[str, Callable[[], Any]], *, warmup: int = 0) -> dict[str, list[float]]:
    """Seconds of each action over ``runs`` rounds, the actions taking turns within each round."""
    for _ in range(warmup):
        for action in actions.values():
            action()
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            samples[name].append(time.perf_counter() - started)
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def cpu_seconds() -> float:
    """CPU time this process used (user + system): what the work costs, whatever else the machine runs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def csv_read_baseline(path: Path, *, encoding: str) -> dict[str, float]:
    """A bare ``csv`` read of the file (in a child process of its own): the import benchmarks' baseline."""
    started = time.perf_counter()
    count = 0
    with path.open(encoding=encoding, newline="") as handle:
        for _row in csv.reader(handle):
            count += 1
    return {"seconds": time.perf_counter() - started, "rss_mb": peak_rss_mb(), "rows": count - 1,
            "cpu": cpu_seconds()}


def forget_sqlite(url: str) -> None:
    """Delete a SQLite benchmark database and its WAL files (nothing for other databases)."""
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)


def database_url(database: str, default_path: Path, *, rebuild: bool) -> str:
    """The benchmark's database: ``--database`` or a reused SQLite file, deleted first on ``--rebuild``."""
    url = database or f"sqlite:///{default_path}"
    if rebuild:
        forget_sqlite(url)
    return url
