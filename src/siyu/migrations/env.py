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
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


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
