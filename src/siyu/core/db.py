"""Engine, sessions and the declarative base shared by every domain.

Services take a ``Session`` and never commit; the caller (a route, a CLI command,
a job) owns the transaction so that several changes commit or fail together.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from sqlalchemy import (
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from siyu.core.settings import get_settings
from siyu.core.viewer import hide_phones_in

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not UTC:  # already UTC (nearly every value): no conversion (floods bind millions)
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite has no time zone type; a naive UTC value keeps string ordering correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


WAL_AUTOCHECKPOINT_PAGES = 20_000  # SQLite's default is 1,000 (https://www.sqlite.org/pragma.html#pragma_wal_autocheckpoint)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # SQLite's default page cache is 2 MB: a flood's index pages would be evicted and read back
    # over and over. 64 MB each (grown only as used) and memory-mapped reads keep them at hand.
    cursor.execute("PRAGMA cache_size=-65536")
    # Mapped pages count in the process's RSS: 128 MB (was 256) cut a 500,000-order import's peak RSS
    # by 128 MB at no measured cost in time (153 s both, load 3-5).
    cursor.execute("PRAGMA mmap_size=134217728")
    cursor.execute("PRAGMA temp_store=MEMORY")
    # A batch of a large import dirties thousands of index pages (orders, lines and timeline entries
    # are indexed by customer and by time, keys spread over the whole index). With SQLite's default
    # checkpoint every 1,000 WAL pages, every such commit also copied its pages back into the database
    # and synced it; the pages one batch touches are mostly touched again by the next ones, so
    # checkpointing less often writes each of them back once for many commits (500,000 imported
    # orders: about a fifth less wall time). The WAL may grow to about 80 MB between checkpoints.
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()
    # What a search may match for a viewer who may not see phones (PostgreSQL: regexp_replace).
    dbapi_connection.create_function("siyu_hide_phones", 1, hide_phones_in, deterministic=True)


CHECKPOINT_INTERVAL_S = 0.25  # how often the thread looks at the log
# Frames (pages) waiting in the log before the thread copies them back. Each checkpoint syncs the log and
# the file: doing it for every few frames a trickle of small commits writes made their commits wait on
# the disk (公众号 callbacks' p99 15 → 33 ms when it ran every second regardless).
CHECKPOINT_MIN_FRAMES = 4000
# The wal-index (the "-shm" file), https://www.sqlite.org/walformat.html#the_wal_index_file_format: its
# header (native byte order) holds mxFrame, the last valid frame, at byte 16; the checkpoint information
# after the header's two 48-byte copies holds nBackfill, the frames already copied back, at byte 96.
_SHM_MX_FRAME = 16
_SHM_BACKFILL = 96


class Checkpointer:
    """Copies a SQLite database's write-ahead log back into the database file from a thread of its own.

    With only ``wal_autocheckpoint``, the commit that crosses the threshold copies the log itself: under a
    flood that is one commit in ten stalling for 150–400 ms while the transaction's own work is done
    (measured: 16 such commits, ~3 s of a 170,000-message flood). SQLite's documentation suggests this
    (https://www.sqlite.org/wal.html#application_initiated_checkpoints): a PASSIVE checkpoint every
    ``CHECKPOINT_INTERVAL_S`` from another connection, which never waits for readers or writers; the
    writers' ``wal_autocheckpoint`` stays as the backstop should this thread fall behind. It copies once
    ``CHECKPOINT_MIN_FRAMES`` wait (read from the wal-index, or at every look when that cannot be read).
    It stops when its engine is disposed or collected.
    """

    def __init__(self, path: str, interval: float | None = None) -> None:
        self.path = path
        self.interval = CHECKPOINT_INTERVAL_S if interval is None else interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"siyu-checkpoint:{path}", daemon=True)

    def start(self) -> Checkpointer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def waiting_frames(self) -> int:
        """Frames in the log not yet copied back (large when the wal-index cannot be read: copy then)."""
        try:
            with open(self.path + "-shm", "rb") as shm:
                header = shm.read(_SHM_BACKFILL + 4)
        except OSError:
            return CHECKPOINT_MIN_FRAMES
        if len(header) < _SHM_BACKFILL + 4:
            return CHECKPOINT_MIN_FRAMES
        (last,) = struct.unpack_from("=I", header, _SHM_MX_FRAME)
        (copied,) = struct.unpack_from("=I", header, _SHM_BACKFILL)
        return max(int(last) - int(copied), 0)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while not self.stopped.wait(self.interval):
                if not os.path.exists(self.path + "-wal") or self.waiting_frames() < CHECKPOINT_MIN_FRAMES:
                    continue
                if connection is None:
                    connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                    connection.execute("PRAGMA busy_timeout=0")
                    connection.execute("PRAGMA synchronous=NORMAL")  # as the writers: the log synced, then the file
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or the file gone: the writers' autocheckpoint remains
                    log.debug("checkpoint of %s skipped: %s", self.path, exc)
        finally:
            if connection is not None:
                connection.close()


def _sqlite_file(url: str) -> str | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        path = _sqlite_file(url)
        if path is not None:
            checkpointer = Checkpointer(path).start()
            weakref.finalize(engine, checkpointer.stop)
            event.listen(engine, "engine_disposed", lambda _engine: checkpointer.stop())
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def reset_engine() -> None:
    """Forget the cached engine (tests and the CLI switch databases)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    _COMMITTED.clear()


def among(session: Session, column: Any, values: Iterable[Any]) -> Any:
    """``column IN values`` as one bound parameter, for lists of hundreds or thousands (a flood page).

    ``column.in_(list)`` renders one placeholder per value and SQLAlchemy builds them on every call
    (≈ 2 ms per 1,000); here the list travels whole: a JSON array read by ``json_each`` on SQLite,
    an array compared with ``= ANY`` on PostgreSQL. Both use the column's index.
    """
    wanted = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, wanted, type_=postgresql.ARRAY(column.type)))
    if any(isinstance(value, str) and "\x00" in value for value in wanted):
        return column.in_(wanted)  # json_each's text ends at a NUL: such a key would never match
    return column.in_(select(literal_column("value")).select_from(
        func.json_each(bindparam(None, json.dumps(wanted, default=str), type_=String()))))


def integers_of(session: Session, values: Iterable[int]) -> Any:
    """A one-column subquery (``value``) of these integers, the whole list one bound parameter (as in
    ``among``): for ``INSERT … SELECT`` of 100,000s of rows that differ only in one id, one statement
    instead of an executemany whose per-row parameter handling costs more than the insert."""
    wanted = [int(v) for v in values]
    if session.get_bind().dialect.name == "postgresql":
        return select(func.unnest(bindparam(None, wanted, type_=postgresql.ARRAY(Integer()))).label("value")
                      ).subquery()
    return select(literal_column("value").label("value")).select_from(
        func.json_each(bindparam(None, json.dumps(wanted), type_=String()))).subquery()


def dialect_insert(session: Session, table: Any) -> Any:
    """The database's own INSERT for a table (SQLite's or PostgreSQL's): it has ON CONFLICT clauses."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


@contextmanager
def transaction() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_session() -> Iterator[Session]:
    """FastAPI dependency: a session per request; routes commit what they change."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def missing_ids(session: Session, table: str, ids: Iterable[int]) -> list[int]:
    """The ids among ``ids`` that ``table`` does not hold, in order: services name them in a 422
    before a write that references them, instead of letting the foreign key fail."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    column = Base.metadata.tables[table].c.id
    found = set(session.scalars(select(column).where(column.in_(wanted))))
    return [i for i in wanted if i not in found]


@contextmanager
def sqlite_writer_turn() -> Iterator[None]:
    """Take turns with the other SQLite writers that use this (on PostgreSQL: nothing to do).

    SQLite has one writer; one that finds the database locked polls, sleeping 1, 2, 5 … up to
    100 ms between tries, so a latency-sensitive writer (the 公众号 callback's group commit)
    beside a busy job would wait up to a whole sleep longer than the lock was held. Writers that
    both hold an OS lock on a file beside the database while they write are woken the moment
    the other is done. The lock goes with its process, should that die.
    """
    url = get_settings().database_url
    path = url.split(":///", 1)[1].split("?", 1)[0] if url.startswith("sqlite") and ":///" in url else ""
    if not path or path == ":memory:":
        yield
        return
    import fcntl

    with open(f"{path}.writer-turn", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---- what is known to be in the database, kept per engine after a commit (floods ask the same again)

_COMMITTED: WeakKeyDictionary[Any, dict[str, set[Any]]] = WeakKeyDictionary()
COMMITTED_MAX = 1_000_000  # per kind: past it the memory starts again empty


def committed(session: Session, kind: str) -> set[Any]:
    """Keys of ``kind`` that a committed transaction of this engine wrote or read as present.

    Only for facts that stay true once committed (a row with a unique key that is never deleted
    while its owner lives): a flood skips the query that would find them again. Read-only.
    """
    return _COMMITTED.get(session.get_bind(), {}).get(kind, set())


def remember_after_commit(session: Session, kind: str, keys: Iterable[Any]) -> None:
    """Keys of ``kind`` present once this transaction commits (forgotten if it rolls back)."""
    pending: dict[str, set[Any]] | None = session.info.get("committed_pending")
    if pending is None:
        pending = session.info["committed_pending"] = {}
        event.listen(session, "after_commit", _keep_committed)
        event.listen(session, "after_rollback", _drop_committed)
    pending.setdefault(kind, set()).update(keys)


def _keep_committed(session: Session) -> None:
    pending = session.info.get("committed_pending") or {}
    known = _COMMITTED.setdefault(session.get_bind(), {})
    for kind, keys in pending.items():
        kept = known.setdefault(kind, set())
        if len(kept) + len(keys) > COMMITTED_MAX:
            kept.clear()
        kept.update(keys)
    pending.clear()


def _drop_committed(session: Session) -> None:
    (session.info.get("committed_pending") or {}).clear()


def insert_ids(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows in one statement per batch and return their new ids, in the rows' order."""
    if session.get_bind().dialect.name != "sqlite":
        return list(session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows))
    # SQLite runs an INSERT … RETURNING that must keep the rows' order one row per statement. The
    # first row's id is max + 1, and this INSERT holds the database's write lock until commit, so
    # the next ids are free: the rest go in with them, in one executemany.
    first = int(session.execute(insert(table).returning(table.c.id), rows[0]).scalar_one())
    ids = list(range(first, first + len(rows)))
    if len(rows) > 1:
        session.execute(insert(table), [row | {"id": new_id} for row, new_id in zip(rows[1:], ids[1:], strict=True)])
    return ids


VALUES_CHUNK = 1000  # rows per statement of ``update_from_values``: SQLite allows 32,766 variables


_JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS


def _as_text(value: Any) -> str:
    return str(value)  # Decimal and the like: json_to_recordset reads numbers given as text


def json_document(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """``rows`` as one JSON array for PostgreSQL's ``json_to_recordset`` (which ignores keys it is not
    asked for): dates as ISO 8601 with their offset (a naive one is UTC), enums by value.

    orjson writes the rows as they are (a flood page's 1,000 messages with their payloads: the json
    module's encoder and a per-value conversion were a sixth of the page). A row orjson refuses (a
    lone surrogate in a payload, a key it cannot write) is written as before: each named value
    converted here, then the json module.
    """
    try:
        return orjson.dumps(rows if isinstance(rows, list) else list(rows), default=_as_text,
                            option=_JSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        pass

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()
        return value.value if isinstance(value, Enum) else value

    return json.dumps([{name: plain(row[name]) for name in names} for row in rows], ensure_ascii=False,
                      default=str)


def update_from_values(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                       figures: Sequence[tuple[str, str]], sets: Mapping[str, str], key: str = "id",
                       returning: Sequence[str] = ()) -> list[Any]:
    """Many rows of ``table`` changed by one computed statement per ``VALUES_CHUNK``, nothing read first.

    ``figures`` name the values each row brings and their SQL type (``INTEGER``, ``TEXT``,
    ``TIMESTAMP``); ``sets`` give each changed column an expression over ``c`` (the row as it is) and
    ``v`` (its figures); ``v.<key>`` finds the row. SQLite: ``WITH v(…) AS (VALUES …) UPDATE … FROM v``
    (3.35+), dates bound as the table's date columns bind them, so they compare and are stored as
    every other write stores them. PostgreSQL: ``v`` read from one JSON document (one parameter where
    VALUES had thousands of placeholders for the driver to parse), dates as ISO 8601 with their
    offset. Only the fixed names, types and expressions the caller gives are put into the text;
    every value is bound. Returns the ``returning`` columns of the changed rows.
    """
    connection = session.connection()
    dialect = connection.dialect
    assignments = ", ".join(f"{name} = {expression}" for name, expression in sets.items())
    # SQLite's RETURNING names the table's columns bare; PostgreSQL's must say which of c and v.
    prefix = "c." if dialect.name == "postgresql" else ""
    back = f" RETURNING {', '.join(prefix + name for name in returning)}" if returning else ""
    names = [name for name, _kind in figures]
    out: list[Any] = []
    if dialect.name == "postgresql":
        record = ", ".join(f"{name} {'TIMESTAMP WITH TIME ZONE' if kind == 'TIMESTAMP' else kind}"
                           for name, kind in figures)
        sql = (f"WITH v AS (SELECT * FROM json_to_recordset(%s::json) AS v({record})) "  # noqa: S608
               f"UPDATE {table.name} AS c SET {assignments} FROM v WHERE c.{key} = v.{key}{back}")
        for start in range(0, len(rows), VALUES_CHUNK):
            document = json_document(rows[start:start + VALUES_CHUNK], names)
            result = connection.exec_driver_sql(sql, (document,))
            if returning:
                out += result.all()
        return out
    date = UTCDateTime().bind_processor(dialect)
    dates: dict[datetime, Any] = {}  # a flood's rows share a handful of times: each bound once
    timestamps = {name for name, kind in figures if kind == "TIMESTAMP"}
    row_sql = "(" + ", ".join("?" for _name in names) + ")"
    for start in range(0, len(rows), VALUES_CHUNK):
        chunk = rows[start:start + VALUES_CHUNK]
        params: list[Any] = []
        for row in chunk:
            for name in names:
                value = row[name]
                if name in timestamps and value is not None and date is not None:
                    bound = dates.get(value)
                    if bound is None:
                        bound = dates[value] = date(value)
                    value = bound
                params.append(value)
        sql = (f"WITH v({', '.join(names)}) AS (VALUES {', '.join([row_sql] * len(chunk))}) "  # noqa: S608
               f"UPDATE {table.name} AS c SET {assignments} FROM v WHERE c.{key} = v.{key}{back}")
        result = connection.exec_driver_sql(sql, tuple(params))
        if returning:
            out += result.all()
    return out


def insert_records(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                   conflict: Sequence[str] = (), returning: Sequence[str] = ()) -> list[Any]:
    """Many rows into ``table`` in one statement, ``ON CONFLICT (conflict) DO NOTHING`` when given;
    answers the ``returning`` columns of the rows written (not of the ones the conflict skipped).

    PostgreSQL: ``INSERT … SELECT … FROM json_to_recordset(%s)`` — the rows as one JSON document
    (``json_document``), one parameter. SQLAlchemy's executemany sends a multi-row VALUES of
    thousands of placeholders whose text is too long for the driver's cache, so psycopg re-parsed it
    on every call (most of a flood page's new customers' insert). The columns' Python-side defaults
    the rows leave out are filled once per call, as SQLAlchemy would fill them. Other databases: the
    dialect's own INSERT through SQLAlchemy. Every row must have the same keys.
    """
    if not rows:
        return []
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        statement = dialect_insert(session, table)
        if conflict:
            statement = statement.on_conflict_do_nothing(index_elements=list(conflict))
        if returning:
            statement = statement.returning(*[table.c[name] for name in returning])
        result = connection.execute(statement, [dict(row) for row in rows])
        return list(result.all()) if returning else []
    given = list(rows[0].keys())
    defaults: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column.name in given or default is None or column.server_default is not None:
            continue
        if getattr(default, "is_scalar", False):
            defaults[column.name] = default.arg  # type: ignore[attr-defined]
        elif getattr(default, "is_callable", False):
            defaults[column.name] = default.arg(None)  # type: ignore[attr-defined]
    names = given + list(defaults)
    fixed = {name: value.value if isinstance(value, Enum) else value for name, value in defaults.items()}
    document = json_document([{**row, **fixed} for row in rows] if fixed else rows, names)
    quote = dialect.identifier_preparer.quote
    record = ", ".join(f"{quote(name)} {table.c[name].type.compile(dialect=dialect)}" for name in names)
    columns = ", ".join(quote(name) for name in names)
    # Only the table's own column names and types are put into the text; the rows travel as one bound value.
    sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({columns}) "  # noqa: S608
           f"SELECT {columns} FROM json_to_recordset(%s::json) AS v({record})")
    if conflict:
        sql += f" ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(quote(name) for name in returning)}"
    result = connection.exec_driver_sql(sql, (document,))
    return list(result.all()) if returning else []
