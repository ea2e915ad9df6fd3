"""The 公众号 callbacks' group commit: its transaction, on a connection it keeps (PostgreSQL).

Why: on PostgreSQL a group commit is a few milliseconds of work and a handful of round trips to
the database, and each round trip waits its turn for a core on a loaded machine. The engine's
pool checks every connection it hands out with a ``SELECT 1`` (``pool_pre_ping``) — one round
trip of every batch spent on a connection that was fine a millisecond ago. The callbacks' one
writer thread therefore keeps a connection of its own between batches and checks it by using it:
when the database dropped it (a restart, an idle timeout), the batch fails with the connection
invalidated, the connection is replaced and the batch is written once more. Writing a batch twice
is safe by construction: the pushes are inserted ``ON CONFLICT DO NOTHING`` on their dedup key, so
rows that an ambiguous commit did store come back as the platform's retries do — answered with
what they were answered before.

The kept connection runs in autocommit: most batches write one statement — the multi-row
``INSERT … ON CONFLICT DO NOTHING RETURNING`` of their pushes, atomic and durable on its own (it
returns after its commit is flushed, as a ``COMMIT`` would) — so the ``BEGIN`` and ``COMMIT``
round trips of a transaction around it bought nothing. A batch that writes more than that (a follow
ingested for its welcome, a rule paused at its cap) calls ``begin`` first and is one transaction
from there, committed as before.

Only one thread holds the connection (a lock taken without waiting); another event loop's writer
(tests start several) uses an ordinary transaction. On SQLite nothing changes: no ping there, and
its writers take turns through ``sqlite_writer_turn``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from siyu.core.db import get_engine, sqlite_writer_turn, transaction

log = logging.getLogger(__name__)

Result = TypeVar("Result")

_lock = threading.Lock()  # whoever holds it may use the kept connection
_kept: dict[str, Connection | None] = {"connection": None}


def _drop() -> None:
    connection = _kept["connection"]
    _kept["connection"] = None
    if connection is not None:
        try:
            connection.invalidate()
            connection.close()
        except Exception:  # already gone: nothing to give back
            log.debug("the kept connection could not be closed", exc_info=True)


AUTOCOMMIT = "mp_writer_autocommit"  # Session.info: the session is on the kept, autocommitting connection


def begin(session: Session) -> None:
    """What this batch writes from here on is one transaction (on the kept connection: an explicit ``BEGIN``)."""
    if not session.info.get(AUTOCOMMIT):
        return
    dbapi = session.connection().connection.dbapi_connection
    if dbapi is not None and getattr(dbapi.info, "transaction_status", 0) == 0:  # idle: no transaction yet
        session.connection().exec_driver_sql("BEGIN")


def _connection(engine: Engine) -> Connection:
    connection = _kept["connection"]
    if connection is not None and (connection.engine is not engine or connection.closed or connection.invalidated):
        _drop()  # another database (tests switch them) or a connection already lost
        connection = None
    if connection is None:
        connection = _kept["connection"] = engine.connect()
        connection.execution_options(isolation_level="AUTOCOMMIT")  # not given back to the pool: see _drop
    return connection


def _on_kept(engine: Engine, work: Callable[[Session], Result]) -> Result:
    connection = _connection(engine)
    session = Session(bind=connection, expire_on_commit=False, info={AUTOCOMMIT: True})
    try:
        result = work(session)
        session.commit()
        return result
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def write(work: Callable[[Session], Result]) -> Result:
    """Run ``work`` in one transaction and commit it: on the kept connection on PostgreSQL."""
    engine = get_engine()
    if engine.dialect.name != "postgresql" or not _lock.acquire(blocking=False):
        with sqlite_writer_turn(), transaction() as session:
            return work(session)
    try:
        try:
            return _on_kept(engine, work)
        except DBAPIError as exc:
            _drop()
            if not exc.connection_invalidated:
                raise
            log.warning("the 公众号 callbacks' connection was lost; the batch is written again on a new one")
            return _on_kept(engine, work)
    finally:
        _lock.release()
