"""Purchases: a lease on each purchase intent, and the purchase back-off state.

Revision ID: 0004_purchases
Revises: 0003_fit
Create Date: 2026-12-02

Safe to run twice (IF NOT EXISTS) and on a database other services write to: the new chips
columns are nullable or defaulted, so their existing INSERTs keep working. The chips changes
commit first (a short ACCESS EXCLUSIVE lock, retried by orchestrator.store.migrate on lock
timeout); the index over orchestrator_operations is then built CONCURRENTLY, outside any
transaction: a plain CREATE INDEX in the same transaction would hold chips locked while it waited
for every writer of orchestrator_operations and read the whole table. A build that failed half-way
leaves an INVALID index, which IF NOT EXISTS would keep: it is dropped and built again.
"""

from alembic import op

revision = "0004_purchases"
down_revision = "0003_fit"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- A purchase is claimed before Salvy is called: a second delivery of the same task at once
-- sees the lease and looks the name up instead of buying again.
ALTER TABLE chips ADD COLUMN IF NOT EXISTS provisioning_lease_until timestamptz;
ALTER TABLE chips ADD COLUMN IF NOT EXISTS provisioning_lease_owner text;
COMMENT ON COLUMN chips.provisioning_lease_until IS 'Compra em andamento ate (lease)';

-- One row ('purchasing'): purchases paused after failures, growing while they persist.
CREATE TABLE IF NOT EXISTS purchase_backoff (
    scope         text PRIMARY KEY DEFAULT 'purchasing',
    cause         text,
    failures      integer NOT NULL DEFAULT 0,
    paused_until  timestamptz,
    last_error    text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT purchase_backoff_cause_known CHECK (
        cause IS NULL OR cause IN ('out_of_stock', 'refused_token', 'other')),
    CONSTRAINT purchase_backoff_failures_not_negative CHECK (failures >= 0)
);
COMMENT ON TABLE purchase_backoff IS 'Compras pausadas apos falhas (back-off)';
"""

#: A failed purchase leaves no row in chips; its auto_provision operation keeps the name, looked
#: up by a redelivered task (it must not buy again) and by reconcile (a late purchase is adopted).
NAME_INDEX = "idx_orchestrator_ops_provision_name"
INVALID = f"SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{NAME_INDEX}')"
CREATE_NAME_INDEX = f"""
CREATE INDEX CONCURRENTLY IF NOT EXISTS {NAME_INDEX}
    ON orchestrator_operations ((metadata->>'name')) WHERE operacao = 'auto_provision'
"""

DOWNGRADE = f"""
DROP TABLE IF EXISTS purchase_backoff;
DROP INDEX IF EXISTS {NAME_INDEX};
ALTER TABLE chips DROP COLUMN IF EXISTS provisioning_lease_owner;
ALTER TABLE chips DROP COLUMN IF EXISTS provisioning_lease_until;
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    # The block commits the chips changes above (their lock ends here) before the build starts.
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        # A CONCURRENTLY build blocks no writer while it waits for their transactions: it may
        # wait longer than the short lock_timeout meant for exclusive locks (restored after).
        short = bind.exec_driver_sql("SHOW lock_timeout").scalar()
        bind.exec_driver_sql("SET lock_timeout = '5min'")
        try:
            if bind.exec_driver_sql(INVALID).scalar():
                op.execute(f"DROP INDEX CONCURRENTLY {NAME_INDEX}")
            op.execute(CREATE_NAME_INDEX)
        finally:
            bind.exec_driver_sql(f"SET lock_timeout = '{short}'")


def downgrade() -> None:
    op.execute(DOWNGRADE)
