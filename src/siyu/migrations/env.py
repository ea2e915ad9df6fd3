from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

import siyu.core.models_registry  # noqa: F401  (registers every table)
from siyu.core.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


# Tables kept outside the ORM: the customer search index (an FTS5 virtual table with its
# shadow tables on SQLite) is created by its migration and maintained by its own module.
UNMAPPED_TABLE_PREFIXES = ("customer_search",)


def _include_name(name: str | None, type_: str, _parent: Any) -> bool:
    return not (type_ == "table" and name is not None and name.startswith(UNMAPPED_TABLE_PREFIXES))


def run_with(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table by copying it and dropping the original; with foreign keys
        # on, that drop would cascade and delete every row pointing at the table. The pragma is
        # a no-op inside a transaction, so it goes first; integrity is checked after instead.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migration left rows pointing at missing rows: {broken[:5]}")
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        run_with(conn)
    engine.dispose()


run_migrations_online()
