"""Files that every host can read: uploads waiting to be imported, exports waiting to be downloaded.

Why the database: with several app hosts and workers, a file written to one host's data
folder is not there for the worker that imports it or the app host that serves the
download. Every Siyu process already shares one database, so the files live there — no
second service to run, back up, secure and test, and a file is written or not in one
transaction like every other row. The files are short-lived (an upload for a day, an export
for a day) and bounded (``imports.MAX_UPLOAD_BYTES``), which is what a database holds well;
materials that grow without bound would call for an object store behind this same interface.

Kept files: the library's images, files and covers (``library/…``) are kept until their owner
deletes them. Their areas are listed in ``KEPT_AREAS`` — ``sweep`` refuses them — and
``put_kept`` stores one under a fresh unguessable key, at most ``KEPT_MAX_BYTES`` each. A kept
file belongs to a row (a library item), so it may be written and deleted in that row's own
transaction (``session=``): the row and its file are saved, or refused, together.

How: a ``stored_file`` row (size, owner's metadata) and its bytes in ``stored_file_chunk``
rows of ``CHUNK_BYTES`` each. Writing streams chunk by chunk (a 100 MB file never sits in
memory); ``open`` gives a seekable, read-only file object that fetches one chunk at a time
(CSV readers stream it, openpyxl's zip reader seeks in it), and ``iter_chunks`` streams a
download. Keys are ``<area>/<random token>``: nobody can guess one, and callers check the
owner in the metadata before they hand a file out.

The storage commits its own writes, like a file system: a stored file does not depend on the
caller's transaction, and a long validation after an upload holds no write lock.
"""

from __future__ import annotations

import io
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from siyu.core.db import transaction, utcnow
from siyu.core.errors import DomainError, NotFound
from siyu.core.models import StoredChunk, StoredFile

CHUNK_BYTES = 1024 * 1024  # one row per MiB: small enough for any driver, few rows for a large file
READ_CACHE_CHUNKS = 4  # chunks an open file keeps, so a zip reader's back-and-forth seeks stay cheap
# Areas whose files stay until deleted (never swept), and the most one such file may hold: the
# largest material the platform takes, a 20 MB file (上传临时素材 W:90253: 普通文件 20MB).
KEPT_AREAS = frozenset({"library"})
KEPT_MAX_BYTES = 20 * 1024 * 1024
_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,31}/[A-Za-z0-9_.-]{1,160}$")


class FileTooLarge(DomainError):
    status_code = 413


@dataclass(frozen=True)
class StoredInfo:
    key: str
    size: int
    meta: dict[str, Any]
    created_at: datetime


def _check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


def put(key: str, stream: IO[bytes], *, meta: dict[str, Any] | None = None, max_bytes: int | None = None,
        too_large: str = "The file is larger than {mb} MB; split it into smaller files") -> StoredInfo:
    """Store everything ``stream`` gives under ``key`` (replacing a file of that key), chunk by chunk.

    Over ``max_bytes`` nothing is stored and ``FileTooLarge`` says so (``too_large`` with ``mb``).
    """
    _check_key(key)
    with transaction() as session:
        return _write(session, key, stream, meta=meta, max_bytes=max_bytes, too_large=too_large)


def _write(session: Session, key: str, stream: IO[bytes], *, meta: dict[str, Any] | None, max_bytes: int | None,
           too_large: str) -> StoredInfo:
    size = 0
    session.execute(delete(StoredChunk).where(StoredChunk.file_key == key))
    session.execute(delete(StoredFile).where(StoredFile.key == key))
    created = utcnow()
    session.execute(insert(StoredFile), {"key": key, "size": 0, "chunk_size": CHUNK_BYTES,
                                         "meta": meta or {}, "created_at": created})
    seq = 0
    while True:
        chunk = _read_full(stream, CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise FileTooLarge(too_large, mb=max_bytes // (1024 * 1024))  # rolls back every chunk
        session.execute(insert(StoredChunk), {"file_key": key, "seq": seq, "data": chunk})
        seq += 1
    session.execute(update(StoredFile).where(StoredFile.key == key).values(size=size))
    return StoredInfo(key=key, size=size, meta=meta or {}, created_at=created)


def put_bytes(key: str, data: bytes, *, meta: dict[str, Any] | None = None) -> StoredInfo:
    return put(key, io.BytesIO(data), meta=meta)


def put_kept(area: str, stream: IO[bytes], *, meta: dict[str, Any] | None = None,
             max_bytes: int = KEPT_MAX_BYTES, too_large: str = "The file is larger than {mb} MB",
             session: Session | None = None) -> StoredInfo:
    """Store a file to keep (no expiry) in one of ``KEPT_AREAS`` under a new key; at most ``max_bytes``.

    With ``session`` the file is written in the caller's transaction instead of its own (demo data and
    seeding, where everything commits together); an oversize file then leaves the rollback to the caller.
    """
    if area not in KEPT_AREAS:
        raise ValueError(f"not an area whose files are kept: {area!r}")
    key = f"{area}/{secrets.token_urlsafe(24)}"
    limit = min(max_bytes, KEPT_MAX_BYTES)
    if session is not None:
        return _write(session, key, stream, meta=meta, max_bytes=limit, too_large=too_large)
    return put(key, stream, meta=meta, max_bytes=limit, too_large=too_large)


def _read_full(stream: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes: a socket or spooled file may hand back less than asked per read."""
    parts: list[bytes] = []
    wanted = size
    while wanted:
        part = stream.read(wanted)
        if not part:
            break
        parts.append(part)
        wanted -= len(part)
    return b"".join(parts)


def info(key: str) -> StoredInfo | None:
    """What is known about a stored file, or None when there is none under ``key``."""
    _check_key(key)
    with transaction() as session:
        row = session.get(StoredFile, key)
        if row is None:
            return None
        return StoredInfo(key=row.key, size=row.size, meta=dict(row.meta or {}), created_at=row.created_at)


def exists(key: str) -> bool:
    return info(key) is not None


def update_meta(key: str, meta: dict[str, Any]) -> None:
    with transaction() as session:
        session.execute(update(StoredFile).where(StoredFile.key == _check_key(key)).values(meta=meta))


def delete_file(key: str, *, session: Session | None = None) -> None:
    """Forget a file (nothing happens when there is none); with ``session``, in the caller's transaction."""
    _check_key(key)
    if session is not None:
        session.execute(delete(StoredChunk).where(StoredChunk.file_key == key))
        session.execute(delete(StoredFile).where(StoredFile.key == key))
        return
    with transaction() as own:
        delete_file(key, session=own)


def sweep(area: str, *, older_than: datetime) -> int:
    """Delete the files of ``area`` (``uploads``, ``exports`` …) stored before ``older_than``; how many."""
    if area in KEPT_AREAS:
        raise ValueError(f"the files of {area!r} are kept until deleted, never swept")
    with transaction() as session:
        keys = list(session.scalars(select(StoredFile.key).where(
            StoredFile.key.like(f"{area}/%"), StoredFile.created_at < older_than)))
    for key in keys:
        delete_file(key)
    return len(keys)


def _chunk(key: str, seq: int) -> bytes:
    with transaction() as session:
        data = session.scalar(select(StoredChunk.data).where(StoredChunk.file_key == key, StoredChunk.seq == seq))
    if data is None:
        raise FileNotFoundError(f"{key}: chunk {seq} is gone")
    return bytes(data)


def iter_chunks(key: str) -> Iterator[bytes]:
    """The file's bytes, one chunk (and one short query) at a time: for streaming a download."""
    found = info(key)
    if found is None:
        raise NotFound("This file is gone")
    for seq in range((found.size + CHUNK_BYTES - 1) // CHUNK_BYTES if found.size else 0):
        yield _chunk(key, seq)


def get(key: str) -> bytes:
    """The whole file (for small files; stream large ones with ``open`` or ``iter_chunks``)."""
    return b"".join(iter_chunks(key))


class _ChunkReader(io.RawIOBase):
    """A seekable, read-only view of a stored file that fetches its chunks on demand."""

    def __init__(self, key: str, size: int, chunk_size: int) -> None:
        super().__init__()
        self._key, self._size, self._chunk_size = key, size, chunk_size
        self._position = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def _chunk(self, seq: int) -> bytes:
        data = self._cache.get(seq)
        if data is None:
            data = _chunk(self._key, seq)
            self._cache[seq] = data
            if len(self._cache) > READ_CACHE_CHUNKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(seq)
        return data

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size:
            return 0
        seq, offset = divmod(self._position, self._chunk_size)
        data = self._chunk(seq)
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(data) - offset)
        view[:count] = data[offset:offset + count]
        self._position += count
        return count


def open_file(key: str) -> IO[bytes]:
    """A binary, seekable file object over a stored file (``FileNotFoundError`` when there is none)."""
    with transaction() as session:
        row = session.get(StoredFile, _check_key(key))
        if row is None:
            raise FileNotFoundError(key)
        size, chunk_size = row.size, row.chunk_size
    return io.BufferedReader(_ChunkReader(key, size, chunk_size), buffer_size=64 * 1024)
