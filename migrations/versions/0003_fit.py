"""Fit-to-serve ranking: ready chips connected and never degraded, best trust first.

Replace, promotion and the cycle rank ready chips by the one fitness predicate
(pool.is_fit_to_serve: connected, trust >= trust_min_for_ready), and replace never takes a chip
once degraded. This partial index serves that ranking; the old one over every ready chip is
then read by no query and only costs writes, so it goes. Safe to run twice.

Both CONCURRENTLY: on a big chips table other services write to (an adopted one), a plain
CREATE INDEX would hold their writes for the whole build. A build that failed (lock timeout,
retried by orchestrator.store.migrate) leaves an invalid index, dropped before building again.

Revision ID: 0003_fit
Revises: 0002_outbox
Create Date: 2026-12-02
"""

from alembic import op

revision = "0003_fit"
down_revision = "0002_outbox"
branch_labels = None
depends_on = None

INVALID = """
SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass('idx_chips_ready_fit')
"""

UPGRADE = (
    """
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chips_ready_fit ON chips (trust_score DESC, ready_at)
    WHERE status = 'ready' AND evolution_connected AND degraded_at IS NULL
""",
    "DROP INDEX CONCURRENTLY IF EXISTS idx_chips_ready_best",
)

DOWNGRADE = """
CREATE INDEX IF NOT EXISTS idx_chips_ready_best ON chips (trust_score DESC, ready_at)
    WHERE status = 'ready';
DROP INDEX IF EXISTS idx_chips_ready_fit;
"""


def upgrade() -> None:
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        # A CONCURRENTLY build blocks no writer while it waits for their transactions: it may
        # wait longer than the short lock_timeout meant for exclusive locks (restored after).
        short = bind.exec_driver_sql("SHOW lock_timeout").scalar()
        bind.exec_driver_sql("SET lock_timeout = '5min'")
        try:
            if bind.exec_driver_sql(INVALID).scalar():
                op.execute("DROP INDEX CONCURRENTLY idx_chips_ready_fit")
            for statement in UPGRADE:
                op.execute(statement)
        finally:
            bind.exec_driver_sql(f"SET lock_timeout = '{short}'")


def downgrade() -> None:
    op.execute(DOWNGRADE)
