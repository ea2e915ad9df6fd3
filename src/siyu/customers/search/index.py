"""Full-text search over names, remark names and descriptions, fast at a million customers.

Why n-grams: Chinese has no spaces, and operators search by fragments — two characters
of a name ("王芳"), a product ("白茶"), a phrase from a remark. Every run of letters or
digits is cut into overlapping two- and three-character terms ("白茶礼盒" → 白茶 茶礼 礼盒
白茶礼 茶礼盒), and a query matches customers holding all of its terms — its triples when
it has three characters or more, which few customers hold by chance ("送礼盒" is in no
remark even where 送礼 and 礼盒 are everywhere) — so the exact substring test then runs
on few candidates. The same terms feed SQLite's FTS5 (``detail=none``: no
positions, a small index) and a PostgreSQL ``text[]`` column with a GIN index, so both
databases answer the same way without depending on a language parser or locale.

Phone numbers are in the index too, as digit triples marked ``t`` ("t138" "t380" …): a
fragment of a number finds its few customers without scanning every phone, and the marked
terms never meet the text's terms, so a viewer who may not see phones simply never asks for
them (see ``customers.service._text_match``).

The index is kept current in the same transaction as the change: a session hook collects
the customers whose name or remarks changed and rewrites their entries before commit.
Bulk SQL that bypasses the ORM (imports, merges) calls ``mark_dirty``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Integer, TextualSelect, bindparam, column, event, inspect, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Text

from siyu.core.viewer import MASK, PHONE_LIKE_POSTGRES
from siyu.customers.models import Customer, Friendship, Phone

TABLE = "customer_search"
# A query term must be at least two characters; shorter queries use a plain scan.
MIN_QUERY_LENGTH = 2
_RUNS = re.compile(r"\w+", re.UNICODE)
_DIRTY_KEY = "siyu_search_dirty"


def _normalise(value: str) -> str:
    return unicodedata.normalize("NFKC", value).casefold()


def terms_of(*values: str) -> list[str]:
    """The searchable terms of some text: overlapping character pairs and triples of each word."""
    found: dict[str, None] = {}
    for value in values:
        for run in _RUNS.findall(_normalise(value or "")):
            run = run.replace("_", "")
            if len(run) == 1:
                found.setdefault(run, None)
            for size in (2, 3):
                for i in range(len(run) - size + 1):
                    found.setdefault(run[i:i + size], None)
    return list(found)


def _query_run_terms(run: str) -> list[str]:
    """A query word's terms: its triples (far fewer customers hold a triple than a pair), else its pair."""
    size = 3 if len(run) >= 3 else 2
    return [run[i:i + size] for i in range(len(run) - size + 1)]


# Phone terms: "t" and three digits, so they never equal a text term (at most three characters).
PHONE_TERM_MARK = "t"
PHONE_TERM_LENGTH = 3


def phone_terms(*numbers: str) -> list[str]:
    """The index terms of phone numbers (and of the digits of a query that looks for one)."""
    found: dict[str, None] = {}
    for number in numbers:
        digits = "".join(ch for ch in number if ch.isdigit())
        for i in range(len(digits) - PHONE_TERM_LENGTH + 1):
            found.setdefault(PHONE_TERM_MARK + digits[i:i + PHONE_TERM_LENGTH], None)
    return list(found)


def query_terms(query: str) -> list[str] | None:
    """Terms a query must all match, or None when the query is too short for the index."""
    runs = [r.replace("_", "") for r in _RUNS.findall(_normalise(query))]
    runs = [r for r in runs if r]
    if not runs or any(len(r) < MIN_QUERY_LENGTH for r in runs):
        return None
    return list(dict.fromkeys(term for run in runs for term in _query_run_terms(run)))


# ---------------------------------------------------------------- matching


def candidate_ids(terms: list[str] | tuple[str, ...], *, postgres: bool,
                  phones: list[str] | tuple[str, ...] = ()) -> TextualSelect:
    """Ids of customers whose index entry holds every term (or, given phone terms, every one of those)."""
    alternatives = [list(group) for group in (terms, phones) if group]
    if postgres:
        from sqlalchemy.dialects.postgresql import ARRAY

        where = " OR ".join(f"terms @> :terms{n}" for n in range(len(alternatives)))
        statement = text(f"SELECT customer_id AS id FROM {TABLE} WHERE {where}").bindparams(  # noqa: S608
            *[bindparam(f"terms{n}", value=group, type_=ARRAY(Text())) for n, group in enumerate(alternatives)])
    else:
        # Terms are letters and digits only (see terms_of), quoted as FTS5 strings.
        expression = " OR ".join("(" + " AND ".join(f'"{term}"' for term in group) + ")" for group in alternatives)
        statement = text(f"SELECT rowid AS id FROM {TABLE} WHERE {TABLE} MATCH :expression").bindparams(  # noqa: S608
            expression=expression)
    return statement.columns(column("id", Integer))


class hide_phones(FunctionElement[str]):
    """The text with phone-like runs hidden (``core.viewer.hide_phones_in``), inside the database."""

    type = Text()
    inherit_cache = True


@compiles(hide_phones)
def _hide_phones_sqlite(element: hide_phones, compiler: Any, **kw: Any) -> str:
    # A function each SQLite connection gets from core.db (the same Python code as the pages use).
    return f"siyu_hide_phones({compiler.process(element.clauses, **kw)})"


@compiles(hide_phones, "postgresql")
def _hide_phones_postgres(element: hide_phones, compiler: Any, **kw: Any) -> str:
    pattern = PHONE_LIKE_POSTGRES.replace("'", "''")
    return f"regexp_replace({compiler.process(element.clauses, **kw)}, '{pattern}', '{MASK}', 'g')"


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# ---------------------------------------------------------------- keeping the index current


def mark_dirty(session: Session, customer_ids: Iterable[int]) -> None:
    """Re-index these customers when the session commits."""
    session.info.setdefault(_DIRTY_KEY, set()).update(customer_ids)


def index_created(session: Session, names: Mapping[int, str]) -> None:
    """Entries for customers this transaction has just inserted with plain SQL and nothing else yet (no
    friendship, phone or WeChat id): written at once from the name the caller inserted, where
    ``mark_dirty`` would read each back at commit (three reads, a delete and the insert; a 微信客服
    flood's first pages meet 1,000 new customers each). A later change in the transaction marks
    them dirty as usual and rewrites the entry."""
    _insert_entries(session, {cid: terms_of(name) for cid, name in names.items()})


def reindex(session: Session, customer_ids: Iterable[int]) -> int:
    ids = sorted(set(customer_ids))
    for start in range(0, len(ids), 500):
        _reindex_chunk(session, ids[start:start + 500])
    return len(ids)


def _documents(session: Session, ids: list[int]) -> dict[int, list[str]]:
    parts: dict[int, list[str]] = {}
    for customer_id, name, wechat_id in session.execute(
            select(Customer.id, Customer.name, Customer.wechat_id).where(Customer.id.in_(ids))):
        parts[customer_id] = [name, wechat_id]
    for customer_id, remark, description in session.execute(
            select(Friendship.customer_id, Friendship.remark_name, Friendship.description)
            .where(Friendship.customer_id.in_(ids))):
        if customer_id in parts:
            parts[customer_id] += [remark, description]
    numbers: dict[int, list[str]] = {}
    phones = select(Phone.customer_id, Phone.number).where(Phone.customer_id.in_(ids))
    for customer_id, number in session.execute(phones):
        numbers.setdefault(customer_id, []).append(number)
    return {customer_id: terms_of(*values) + phone_terms(*numbers.get(customer_id, ()))
            for customer_id, values in parts.items()}


def _reindex_chunk(session: Session, ids: list[int]) -> None:
    documents = _documents(session, ids)
    postgres = is_postgres(session)
    delete_sql = (f"DELETE FROM {TABLE} WHERE customer_id IN :ids" if postgres  # noqa: S608
                  else f"DELETE FROM {TABLE} WHERE rowid IN :ids")  # noqa: S608
    session.execute(text(delete_sql).bindparams(bindparam("ids", expanding=True)), {"ids": ids})
    _insert_entries(session, documents)


def _insert_entries(session: Session, documents: Mapping[int, list[str]]) -> None:
    postgres = is_postgres(session)
    rows: list[dict[str, Any]] = [{"id": cid, "terms": terms if postgres else " ".join(terms)}
                                  for cid, terms in documents.items() if terms]
    if not rows:
        return
    insert_sql = (f"INSERT INTO {TABLE} (customer_id, terms) VALUES (:id, :terms)" if postgres  # noqa: S608
                  else f"INSERT INTO {TABLE} (rowid, terms) VALUES (:id, :terms)")  # noqa: S608
    session.execute(text(insert_sql), rows)


def rebuild(session: Session, *, batch_size: int = 5000) -> int:
    """Re-index every customer (after a bulk load or to repair)."""
    last_id, total = 0, 0
    while True:
        ids = list(session.scalars(select(Customer.id).where(Customer.id > last_id).order_by(Customer.id)
                                   .limit(batch_size)))
        if not ids:
            return total
        _reindex_chunk(session, ids)
        total += len(ids)
        last_id = ids[-1]


# Only these columns feed the index; other changes (computed facts) never re-index.
def ensure_built(session: Session) -> int:
    """Fill the index when customers exist but it is empty (a database that predates it)."""
    has_customers = session.scalar(select(Customer.id).limit(1)) is not None
    indexed = session.execute(text(f"SELECT 1 FROM {TABLE} LIMIT 1")).first() is not None  # noqa: S608
    return rebuild(session) if has_customers and not indexed else 0


_WATCHED = {Customer: ("name", "wechat_id", "merged_into_id"),
            Friendship: ("remark_name", "description", "customer_id"),
            Phone: ("number", "customer_id")}


def _changed(obj: Any, names: tuple[str, ...]) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def _collect(session: Session, _context: Any, _instances: Any) -> None:
    dirty: set[int] = session.info.setdefault(_DIRTY_KEY, set())
    changed = [o for o in session.dirty if type(o) in _WATCHED and _changed(o, _WATCHED[type(o)])]
    for obj in [*session.new, *changed, *session.deleted]:
        if isinstance(obj, Customer):
            if obj.id is not None:
                dirty.add(obj.id)
            else:
                session.info.setdefault("siyu_search_new", []).append(obj)
        elif isinstance(obj, Friendship | Phone):
            for value in (obj.customer_id, *_old_customer_id(obj)):
                if value is not None:
                    dirty.add(value)


def _old_customer_id(row: Friendship | Phone) -> list[int]:
    state: Any = inspect(row)
    history = state.attrs.customer_id.history
    return [v for v in history.deleted or () if isinstance(v, int)]


def _flush_index(session: Session) -> None:
    new = session.info.pop("siyu_search_new", [])
    dirty: set[int] = session.info.pop(_DIRTY_KEY, set())
    dirty.update(obj.id for obj in new if obj.id is not None)
    if dirty:
        session.flush()
        reindex(session, dirty)


def _forget(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.nested or previous_transaction.parent is not None:
        return  # a savepoint: what it undid is re-indexed from the rows as they are, harmlessly
    session.info.pop(_DIRTY_KEY, None)
    session.info.pop("siyu_search_new", None)


def _before_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: the index is written once, at the real commit
    session.flush()
    _flush_index(session)


event.listen(Session, "before_flush", _collect)
event.listen(Session, "before_commit", _before_commit)
event.listen(Session, "after_soft_rollback", _forget)
