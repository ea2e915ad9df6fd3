"""Analytics: the weekly cohorts' rollup (live customers per add hour, rung and window) and saved segments'
funnel counts kept by a job

Revision ID: 0054
Revises: 0051
Create Date: 2026-12-05 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0054'
down_revision: str | None = '0051'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MICROSECONDS_A_DAY = 86_400_000_000


def upgrade() -> None:
    op.create_table(
        'cohort_ladder_count',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('hour', sa.BigInteger(), nullable=False),
        sa.Column('rung', sa.SmallInteger(), nullable=False),
        sa.Column('within_days', sa.SmallInteger(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_cohort_ladder_count')),
    )
    op.create_index('ix_cohort_ladder_count_hour', 'cohort_ladder_count', ['hour', 'rung', 'within_days', 'n'],
                    unique=False)
    op.create_table(
        'segment_rollup',
        sa.Column('segment_id', sa.Integer(), nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('members', sa.Integer(), nullable=False),
        sa.Column('customer_watermark', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['segment_id'], ['segment.id'], name=op.f('fk_segment_rollup_segment_id_segment'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('segment_id', name=op.f('pk_segment_rollup')),
    )
    op.create_table(
        'segment_stage_delta',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('segment_id', sa.Integer(), nullable=False),
        sa.Column('hour', sa.BigInteger(), nullable=False),
        sa.Column('rank', sa.SmallInteger(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['segment_id'], ['segment.id'],
                                name=op.f('fk_segment_stage_delta_segment_id_segment'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_segment_stage_delta')),
    )
    op.create_index('ix_segment_stage_delta_hour', 'segment_stage_delta', ['segment_id', 'hour', 'rank', 'n'],
                    unique=False)
    # SQLite counts the live customers added before a date from the index alone only when it holds
    # merged_into_id too (the partial index's condition is not taken as covering the column).
    op.drop_index('ix_customer_live_created', table_name='customer')
    op.create_index('ix_customer_live_added', 'customer', ['created_at', 'merged_into_id'], unique=False,
                    postgresql_where=sa.text('merged_into_id IS NULL'), sqlite_where=sa.text('merged_into_id IS NULL'))
    # Fill the cohort counts from customer_ladder (set-based; as analytics.rollups.cohort_rebuild_statements).
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        hour = "CAST(floor(extract(epoch FROM c.created_at) / 3600) AS BIGINT)"
    else:
        hour = "(CAST(strftime('%s', c.created_at) AS INTEGER) / 3600)"
    parts = []
    for rung, column in ((1, "user_lag_us"), (2, "customer_lag_us"), (3, "fan_lag_us")):
        parts.append(f"SELECT {hour} AS h, {rung} AS r, CASE WHEN l.{column} <= {7 * MICROSECONDS_A_DAY} THEN 7 "  # noqa: S608
                     f"WHEN l.{column} <= {30 * MICROSECONDS_A_DAY} THEN 30 ELSE 90 END AS w FROM customer_ladder l "
                     "JOIN customer c ON c.id = l.customer_id WHERE c.merged_into_id IS NULL "
                     f"AND l.{column} <= {90 * MICROSECONDS_A_DAY}")
    op.execute("INSERT INTO cohort_ladder_count (hour, rung, within_days, n) SELECT h, r, w, count(*) FROM ("  # noqa: S608
               + " UNION ALL ".join(parts) + ") d GROUP BY h, r, w")


def downgrade() -> None:
    op.drop_index('ix_customer_live_added', table_name='customer')
    op.create_index('ix_customer_live_created', 'customer', ['created_at'], unique=False,
                    postgresql_where=sa.text('merged_into_id IS NULL'), sqlite_where=sa.text('merged_into_id IS NULL'))
    op.drop_index('ix_segment_stage_delta_hour', table_name='segment_stage_delta')
    op.drop_table('segment_stage_delta')
    op.drop_table('segment_rollup')
    op.drop_index('ix_cohort_ladder_count_hour', table_name='cohort_ladder_count')
    op.drop_table('cohort_ladder_count')
