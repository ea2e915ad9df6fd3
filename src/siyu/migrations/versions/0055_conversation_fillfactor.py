"""PostgreSQL: conversations keep room on each page for their own updates (fillfactor 70)

A flood rewrites ~1,000 conversation rows per page (counts, times, preview; rarely an indexed column).
With full pages every new row version went to another page and into all seven indexes; with room on the
page and no indexed value changed, PostgreSQL keeps the version on the same page and touches no index (a
heap-only tuple, https://www.postgresql.org/docs/15/storage-hot.html): measured in the flood benchmark,
146,272 of 197,272 updates. (Customers' updates change indexed columns — stage, last touch — so they
gain nothing.) Applies to pages written from now on; SQLite has no such setting.

Revision ID: 0055
Revises: 0052
Create Date: 2026-12-05 17:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0055'
down_revision: str | None = '0052'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("conversation",)
FILLFACTOR = 70


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
