"""Test fixtures: a fresh database per test, role fixtures and factories.

SQLite (default): the migrated schema (with the default tag groups every test starts
from) is built once per run into a template file and copied for each test. PostgreSQL
(``SIYU_TEST_DATABASE_URL=postgresql+psycopg://…``): one uniquely named database per run,
migrated once, emptied before each test (see ``_empty_postgres``), dropped at the end.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Queue files and uploads of the test run stay out of the working tree, and go with it.
if "SIYU_DATA_DIR" not in os.environ:
    _data_dir = tempfile.mkdtemp(prefix="siyu-test-data-")
    os.environ["SIYU_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)

from siyu.core import db as core_db
from siyu.core import jobs, security
from siyu.core.db import Base, make_engine
from siyu.core.migrate import upgrade
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.demo import DemoSummary, build_demo
from siyu.team import service as team_service

# Tasks run synchronously when enqueued (after their transaction commits), through Huey itself.
jobs.set_immediate(True)

# Passwords are still argon2id-hashed and verified for real, but at the library's lowest cost:
# the production parameters (64 MiB, 3 passes) cost about 0.1 s per hash on an idle core and
# seconds on a loaded CI machine, and nearly every test creates a user or logs one in. Servers
# the tests start as subprocesses keep the production hasher (they verify these hashes fine:
# the parameters travel inside each hash).
security._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

TEST_PASSWORD = "correct-horse-battery"
POSTGRES_URL = os.environ.get("SIYU_TEST_DATABASE_URL", "")


@pytest.fixture(scope="session")
def database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if POSTGRES_URL:
        base = make_url(POSTGRES_URL)
        name = f"siyu_test_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        global _postgres_engine
        _postgres_engine = create_engine(url)
        yield url
        _postgres_engine.dispose()
        _postgres_engine = None
        core_db.reset_engine()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        upgrade(f"sqlite:///{path}")
        engine = create_engine(f"sqlite:///{path}")
        with Session(engine) as session:  # what the db fixture would otherwise insert for every test
            customers_service.ensure_default_tag_groups(session)
            session.commit()
        engine.dispose()
        yield str(path)


_postgres_engine: Engine | None = None
# A table's rows, capped: enough to tell an empty table, a small one and a large one apart.
_LARGE_TABLE = 2000


def _empty_postgres(engine: Engine) -> None:
    """Leave every table empty and every id sequence restarted, as after TRUNCATE … RESTART IDENTITY.

    Truncating all ~120 tables costs seconds per test on a loaded machine (each table and index
    gets new files). A test only writes to a few, so only those are emptied: small ones with
    DELETE (children before parents), and when one holds many rows (a volume test) the used
    tables with TRUNCATE. Sequences that handed out an id since their last restart are restarted.
    """
    tables = Base.metadata.sorted_tables  # names from our own models, never from input
    probe = " UNION ALL ".join(
        f'SELECT {i}, (SELECT count(*) FROM (SELECT 1 FROM "{t.name}" LIMIT {_LARGE_TABLE}) AS s)'  # noqa: S608
        for i, t in enumerate(tables))
    with engine.begin() as conn:
        counts = {i: n for i, n in conn.execute(text(probe)) if n}
        used = [tables[i] for i in sorted(counts, reverse=True)]  # children before parents
        if any(n >= _LARGE_TABLE for n in counts.values()):
            conn.execute(text(f"TRUNCATE {_names(used)} RESTART IDENTITY CASCADE"))
        else:
            try:
                with conn.begin_nested():
                    for table in used:
                        conn.execute(text(f'DELETE FROM "{table.name}"'))  # noqa: S608
            except Exception:  # a reference the dependency order cannot see: empty them all at once
                conn.execute(text(f"TRUNCATE {_names(tables)} RESTART IDENTITY CASCADE"))
        _restart_used_sequences(conn, {t.name for t in tables})


def _names(tables: list[Any]) -> str:
    return ", ".join(f'"{t.name}"' for t in tables)


def _restart_used_sequences(conn: Connection, tables: set[str]) -> None:
    owned = conn.execute(text(
        "SELECT t.relname, quote_ident(n.nspname) || '.' || quote_ident(s.relname) FROM pg_sequences ps"
        " JOIN pg_namespace n ON n.nspname = ps.schemaname"
        " JOIN pg_class s ON s.relname = ps.sequencename AND s.relnamespace = n.oid"
        " JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass"
        "  AND d.refclassid = 'pg_class'::regclass"
        " JOIN pg_class t ON t.oid = d.refobjid"
        " WHERE ps.last_value IS NOT NULL AND n.nspname = current_schema()")).all()
    for table, sequence in owned:
        if table in tables:
            conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))


@pytest.fixture
def database_url(database_template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if POSTGRES_URL:
        url = database_template
        assert _postgres_engine is not None
        _empty_postgres(_postgres_engine)
    else:
        path = tmp_path / "siyu.db"
        shutil.copy(database_template, path)
        url = f"sqlite:///{path}"
    monkeypatch.setenv("SIYU_DATABASE_URL", url)
    monkeypatch.setenv("SIYU_SECRET_KEY", "test-secret-key-not-for-production")
    # CLI commands set this for the process; restored (removed) after each test.
    monkeypatch.setenv("SIYU_WORKER_IN_PROCESS", "0")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    core_db.reset_engine()
    customers_service.SEARCH_RATE.reset()  # user ids repeat from test to test
    yield url
    core_db.reset_engine()
    get_settings.cache_clear()


@pytest.fixture
def db(database_url: str) -> Iterator[Session]:
    session = core_db.get_sessionmaker()()
    customers_service.ensure_default_tag_groups(session)
    session.commit()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@pytest.fixture
def app(db: Session) -> Any:
    from siyu.app import create_app

    return create_app()


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as test_client:
        yield test_client


# ---------------------------------------------------------------- the demo company

DEMO_PASSWORD = "demo-admin-password"
DEMO_CUSTOMERS = 300


@dataclass
class Demo:
    engine: Engine
    sessions: sessionmaker[Session]
    summary: DemoSummary
    built_at: datetime


@contextmanager
def _fresh_demo_database(folder: Path) -> Iterator[str]:
    if not POSTGRES_URL:
        yield f"sqlite:///{folder / 'demo.db'}"
        return
    base = make_url(POSTGRES_URL)
    name = f"siyu_demo_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo company (`siyu demo`), built once per test process into its own fresh database.

    READ-ONLY: the one exception to "a fresh database per test". Every test using it reads through a
    session that is rolled back (``session`` in tests/test_demo.py) and must never commit; a test
    that writes builds its own demo (as tests/test_moments.py does).
    """
    with _fresh_demo_database(tmp_path_factory.mktemp("demo")) as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = sessionmaker(bind=engine, expire_on_commit=False)
        built_at = datetime.now(UTC)
        with sessions() as session:
            summary = build_demo(session, admin_password=DEMO_PASSWORD, customers=DEMO_CUSTOMERS)
            session.commit()
        yield Demo(engine=engine, sessions=sessions, summary=summary, built_at=built_at)
        engine.dispose()


# ---------------------------------------------------------------- factories


class Factory:
    """Builds domain objects through the real services, so tests exercise the rules."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._n = 0

    def _next(self) -> int:
        self._n += 1
        return self._n

    def account(self, **overrides: Any) -> Any:
        from siyu.accounts import service as accounts_service
        from siyu.accounts.schemas import AccountIn

        n = self._next()
        data = {"display_name": f"茶小满{n}号", "wechat_id": f"chaxiaoman{n}", "store": "杭州西湖店",
                "kind": "wecom", "wecom_userid": f"user{n}"} | overrides
        account = accounts_service.create_account(self.session, data=AccountIn(**data), actor=SYSTEM)
        self.session.commit()
        return account

    def user(self, role: str = "operator", *, accounts: list[Any] | None = None, username: str | None = None) -> Any:
        from siyu.team.schemas import UserIn

        name = username or f"{role}{self._next()}"
        user = team_service.create_user(self.session, data=UserIn(
            username=name, password=TEST_PASSWORD, role=role,  # type: ignore[arg-type]
            account_ids=[a.id for a in accounts or []]), actor=SYSTEM)
        self.session.commit()
        return user

    def customer(self, account: Any, **overrides: Any) -> Any:
        from siyu.customers.schemas import CustomerIn

        n = self._next()
        data = {"name": f"顾客{n}", "account_id": account.id, "remark_name": f"顾客{n}-爱喝龙井"} | overrides
        customer = customers_service.create_customer(self.session, data=CustomerIn(**data), viewer=SYSTEM)
        self.session.commit()
        return customer

    def bulk_customers(self, account: Any, count: int) -> list[int]:
        """Many plain customers of one account, inserted directly (for volume tests); their ids."""
        from sqlalchemy import func, insert, select, text

        from siyu.core.db import utcnow
        from siyu.customers.models import Customer, Friendship

        now = utcnow()
        first = (self.session.scalar(select(func.max(Customer.id))) or 0) + 1
        ids = list(range(first, first + count))
        self.session.execute(insert(Customer), [{"id": i, "name": f"顾客{i}", "created_at": now, "updated_at": now}
                                                for i in ids])
        self.session.execute(insert(Friendship), [{"customer_id": i, "account_id": account.id, "added_at": now}
                                                  for i in ids])
        if self.session.get_bind().dialect.name == "postgresql":  # explicit ids do not move the sequence
            self.session.execute(text("SELECT setval(pg_get_serial_sequence('customer', 'id'), :last)"),
                                 {"last": ids[-1]})
        self.session.commit()
        return ids

    def touch(self, customer: Any, kind: str = "chat", **overrides: Any) -> Any:
        from siyu.customers.schemas import TouchIn

        touch = customers_service.add_touch(self.session, customer_id=customer.id,
                                            data=TouchIn(kind=kind, **overrides), viewer=SYSTEM)  # type: ignore[arg-type]
        self.session.commit()
        return touch


@pytest.fixture
def make(db: Session) -> Factory:
    return Factory(db)


class RecordingConnector:
    """A test double for a platform connection: accepts every message and remembers it."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.unreachable: set[int] = set()  # customer ids the platform refuses for good

    def send_text(self, outgoing: Any) -> str:
        from siyu.inbox.delivery import DeliveryError

        if outgoing.customer is not None and outgoing.customer.id in self.unreachable:
            raise DeliveryError("not a contact", permanent=True)
        self.sent.append(outgoing)
        return f"platform-{len(self.sent)}"


@pytest.fixture
def connector() -> Iterator[RecordingConnector]:
    from siyu.inbox import delivery

    recording = RecordingConnector()

    def factory(_account: Any) -> RecordingConnector:
        return recording

    delivery.register(factory)
    yield recording
    delivery.unregister(factory)


@pytest.fixture
def admin(make: Factory) -> Any:
    return make.user("admin", username="admin")


def viewer_of(user: Any) -> Viewer:
    return team_service.viewer_for(user)


@pytest.fixture
def token_for(client: TestClient) -> Callable[[Any], dict[str, str]]:
    def headers(user: Any) -> dict[str, str]:
        response = client.post("/api/v1/auth/token", data={"username": user.username, "password": TEST_PASSWORD})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    return headers


@pytest.fixture
def admin_headers(admin: Any, token_for: Callable[[Any], dict[str, str]]) -> dict[str, str]:
    return token_for(admin)
