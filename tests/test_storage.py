"""The shared file storage: files in the database, streamed in chunks, readable from any process."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import storage
from siyu.core.db import utcnow
from siyu.core.models import StoredChunk


def test_a_file_of_several_chunks_reads_back_whole_and_by_seeking(db: Session) -> None:
    data = os.urandom(storage.CHUNK_BYTES * 2 + 12345)
    stored = storage.put("uploads/abc", io.BytesIO(data), meta={"user_id": 7})
    assert stored.size == len(data)
    assert db.scalar(select(func.count()).select_from(StoredChunk)) == 3
    assert storage.get("uploads/abc") == data
    assert b"".join(storage.iter_chunks("uploads/abc")) == data
    with storage.open_file("uploads/abc") as handle:
        handle.seek(storage.CHUNK_BYTES - 5)
        assert handle.read(10) == data[storage.CHUNK_BYTES - 5:storage.CHUNK_BYTES + 5]  # across a chunk border
        handle.seek(-3, io.SEEK_END)
        assert handle.read() == data[-3:]
        handle.seek(0)
        assert handle.read(4) == data[:4]
    found = storage.info("uploads/abc")
    assert found is not None and found.meta == {"user_id": 7} and storage.exists("uploads/abc")


def test_a_zip_opens_straight_from_the_storage(db: Session) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>" * 1000)
    storage.put_bytes("uploads/zip", buffer.getvalue())
    with storage.open_file("uploads/zip") as handle, zipfile.ZipFile(handle) as archive:
        assert archive.read("xl/workbook.xml").startswith(b"<workbook/>")


def test_a_file_over_the_limit_stores_nothing(db: Session) -> None:
    with pytest.raises(storage.FileTooLarge):
        storage.put("uploads/big", io.BytesIO(b"x" * (storage.CHUNK_BYTES + 1)), max_bytes=storage.CHUNK_BYTES)
    assert not storage.exists("uploads/big")
    assert db.scalar(select(func.count()).select_from(StoredChunk)) == 0


def test_delete_and_sweep_by_area_and_age(db: Session) -> None:
    storage.put_bytes("uploads/old", b"a")
    storage.put_bytes("exports/old", b"b")
    assert storage.sweep("uploads", older_than=utcnow() - timedelta(hours=1)) == 0
    assert storage.sweep("uploads", older_than=utcnow() + timedelta(seconds=1)) == 1
    assert not storage.exists("uploads/old") and storage.exists("exports/old")
    storage.delete_file("exports/old")
    storage.delete_file("exports/old")  # twice: nothing to do
    assert not storage.exists("exports/old")
    assert db.scalar(select(func.count()).select_from(StoredChunk)) == 0
    with pytest.raises(FileNotFoundError):
        storage.open_file("exports/old")
    with pytest.raises(ValueError):
        storage.put_bytes("../etc/passwd", b"")
