"""Analytics: the ladder's rollups (hourly stage-count changes, each customer's first time on each rung)
and the weekly reports delivered to their owners

Revision ID: 0046
Revises: 0045
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0046'
down_revision: str | None = '0045'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'stage_count_delta',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('hour', sa.BigInteger(), nullable=False),
        sa.Column('rank', sa.SmallInteger(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_count_delta')),
    )
    op.create_index('ix_stage_count_delta_hour', 'stage_count_delta', ['hour', 'rank', 'n'], unique=False)
    op.create_table(
        'customer_ladder',
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('user_lag_us', sa.BigInteger(), nullable=True),
        sa.Column('customer_lag_us', sa.BigInteger(), nullable=True),
        sa.Column('fan_lag_us', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_customer_ladder_customer_id_customer'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_customer_ladder')),
    )
    op.create_index('ix_stage_transition_customer_valid', 'stage_transition',
                    ['customer_id', 'at', 'until', 'to_rank'], unique=False)
    op.create_index('ix_customer_live_created', 'customer', ['created_at'], unique=False,
                    postgresql_where=sa.text('merged_into_id IS NULL'), sqlite_where=sa.text('merged_into_id IS NULL'))
    op.create_table(
        'weekly_report',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('scope', sa.String(length=40), nullable=False),
        sa.Column('week', sa.Date(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('touser', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('msgid', sa.String(length=128), nullable=False),
        sa.Column('error', sa.String(length=500), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['owner_id'], ['user.id'], name=op.f('fk_weekly_report_owner_id_user'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_weekly_report')),
        sa.UniqueConstraint('scope', 'week', name=op.f('uq_weekly_report_scope_week')),
    )
    # Fill the rollups from the transitions already recorded (set-based; as analytics.rollups.rebuild does).
    dialect = op.get_bind().dialect.name

    def hour(expression: str) -> str:
        if dialect == "postgresql":
            return f"CAST(floor(extract(epoch FROM {expression}) / 3600) AS BIGINT)"
        return f"(CAST(strftime('%s', {expression}) AS INTEGER) / 3600)"

    def greatest(a: str, b: str) -> str:
        return f"GREATEST({a}, {b})" if dialect == "postgresql" else f"max({a}, {b})"

    start = greatest("t.at", "c.created_at")
    live = ("FROM stage_transition t JOIN customer c ON c.id = t.customer_id WHERE c.merged_into_id IS NULL "
            "AND t.to_rank >= 1")
    op.execute(
        "INSERT INTO stage_count_delta (hour, rank, n) SELECT h, r, sum(n) FROM ("  # noqa: S608 - fixed text
        f"SELECT {hour(start)} AS h, t.to_rank AS r, 1 AS n {live} "
        f"UNION ALL SELECT {hour(greatest('t.until', start))} AS h, t.to_rank AS r, -1 AS n {live} "
        "AND t.until IS NOT NULL) d GROUP BY h, r HAVING sum(n) <> 0")
    if dialect == "postgresql":
        lag = "CAST(extract(epoch FROM t.at - c.created_at) * 1000000 AS BIGINT)"
    else:
        lag = ("((CAST(strftime('%s', t.at) AS INTEGER) - CAST(strftime('%s', c.created_at) AS INTEGER)) * 1000000 "
               "+ CAST(substr(t.at, 21, 6) AS INTEGER) - CAST(substr(c.created_at, 21, 6) AS INTEGER))")
    op.execute(
        "INSERT INTO customer_ladder (customer_id, user_lag_us, customer_lag_us, fan_lag_us) "  # noqa: S608 - fixed
        f"SELECT t.customer_id, min(CASE WHEN t.to_rank >= 1 THEN {lag} END), "
        f"min(CASE WHEN t.to_rank >= 2 THEN {lag} END), min(CASE WHEN t.to_rank >= 3 THEN {lag} END) "
        "FROM stage_transition t JOIN customer c ON c.id = t.customer_id GROUP BY t.customer_id "
        "HAVING max(t.to_rank) >= 1")

def downgrade() -> None:
    op.drop_table('weekly_report')
    op.drop_index('ix_customer_live_created', table_name='customer')
    op.drop_index('ix_stage_transition_customer_valid', table_name='stage_transition')
    op.drop_table('customer_ladder')
    op.drop_index('ix_stage_count_delta_hour', table_name='stage_count_delta')
    op.drop_table('stage_count_delta')
