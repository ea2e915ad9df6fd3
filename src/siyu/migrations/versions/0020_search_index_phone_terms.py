"""search index: character triples, and phone numbers as marked digit triples

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 04:00:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy.orm import Session

revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No schema change: every customer's index entry is written again with its triples and phones' terms
    # (siyu/customers/search.py), in batches, inside the migration's transaction.
    from siyu.customers.search import index as search

    search.rebuild(Session(bind=op.get_bind()))


def downgrade() -> None:
    # The older code ignores the phone terms (they never equal a text term): nothing to undo.
    pass
