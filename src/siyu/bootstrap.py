"""Bringing a database up to date for any command: the schema (Alembic) and the rows every
installation needs (default tag groups, the search index). Used by ``siyu`` and the domains' CLIs."""

from __future__ import annotations

from siyu.core import db as core_db
from siyu.core.migrate import upgrade


def init_database(url: str) -> None:
    upgrade(url)
    from siyu.customers import service as customers_service
    from siyu.customers.search import index as search

    with core_db.transaction() as session:
        customers_service.ensure_default_tag_groups(session)
        search.ensure_built(session)
