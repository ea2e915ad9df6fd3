"""SQLite's write-ahead log is copied back by the engine's own checkpoint thread, not by a writer's commit."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, text

from siyu.core import db


def _wait_for(predicate, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _blob_engine(path: Path) -> Engine:
    """An engine on a new file whose writers never checkpoint (only the engine's thread does)."""
    engine = db.make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        conn.execute(text("CREATE TABLE blob (id INTEGER PRIMARY KEY, data BLOB)"))
    return engine


def _write_blobs(engine: Engine, count: int) -> None:
    with engine.begin() as conn:  # a page (4 KB) or so each, committed to the log
        conn.execute(text("INSERT INTO blob (data) VALUES (:data)"), [{"data": os.urandom(4000)} for _ in range(count)])


def test_the_checkpoint_thread_copies_committed_pages_into_the_database_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(db, "CHECKPOINT_INTERVAL_S", 0.1)
    monkeypatch.setattr(db, "CHECKPOINT_MIN_FRAMES", 100)
    path = tmp_path / "wal.db"
    engine = _blob_engine(path)
    try:
        before = os.path.getsize(path)
        _write_blobs(engine, 500)
        # Committed to the log; the database file grows only when a checkpoint copies the pages back.
        assert _wait_for(lambda: os.path.getsize(path) > before + 1_500_000)
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT count(*) FROM blob").fetchone()[0] == 500
    finally:
        engine.dispose()


def test_the_checkpoint_thread_stops_with_its_engine(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(db, "CHECKPOINT_INTERVAL_S", 0.05)
    path = tmp_path / "stop.db"
    engine = db.make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    running = [t for t in threading.enumerate() if t.name == f"siyu-checkpoint:{path}"]
    assert len(running) == 1
    engine.dispose()
    running[0].join(timeout=5)
    assert not running[0].is_alive()


def test_no_checkpoint_thread_for_an_in_memory_database() -> None:
    assert db._sqlite_file("sqlite://") is None
    assert db._sqlite_file("sqlite:///:memory:") is None
    assert db._sqlite_file("sqlite:///relative.db") == os.path.abspath("relative.db")


def test_a_few_waiting_pages_are_left_in_the_log_until_enough_wait(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(db, "CHECKPOINT_INTERVAL_S", 0.05)
    monkeypatch.setattr(db, "CHECKPOINT_MIN_FRAMES", 1000)
    path = tmp_path / "few.db"
    engine = _blob_engine(path)
    try:
        _write_blobs(engine, 50)
        checkpointer = db.Checkpointer(str(path))
        waiting = checkpointer.waiting_frames()
        assert 50 <= waiting < 1000  # read from the wal-index: each row's page, not yet copied back
        size = os.path.getsize(path)
        time.sleep(0.5)
        assert os.path.getsize(path) == size  # too few to be worth a sync of the log and the file
        _write_blobs(engine, 1000)
        assert _wait_for(lambda: os.path.getsize(path) > size + 3_000_000)
        assert _wait_for(lambda: checkpointer.waiting_frames() == 0)
    finally:
        engine.dispose()
