"""Buying on the reserve, a daily purchase cap, and chips that return to service.

Revision ID: 0009_reserve
Revises: 0008_tally_checks
Create Date: 2027-01-06

- `pool_config.max_purchases_per_day` (NULL: no cap): numbers bought in any 24 hours, at most;
  then purchases pause until the oldest of them turns 24 hours old, `status` says until when.
- `pool_config.rehab_after_minutes` (60; NULL: never): a degraded chip fit to serve again
  (connected, trust >= trust_min_for_ready, not flapping) returns to ready this long after it
  was degraded, recorded as a `rehabilitation` operation.
- `orchestrator_operations.operacao` also accepts `rehabilitation` and `config_change`.
- `idx_chips_purchased_at`: the purchases of the last 24 hours (intents and numbers bought
  keep their `provisioning_name`), counted by every cycle; `idx_chips_degraded_fit`: degraded
  chips connected, by trust (the cycle's candidates to return to ready); built CONCURRENTLY.

The columns are nullable or defaulted, so other services' INSERTs that name only the seed's
columns keep working; the CHECKs are added NOT VALID, then validated. Safe to run twice.
"""

from alembic import op

revision = "0009_reserve"
down_revision = "0008_tally_checks"
branch_labels = None
depends_on = None

OPERACOES = (
    "auto_replace",
    "auto_provision",
    "promotion_warming_ready",
    "promotion_ready_active",
    "demotion",
    "migration",
    "cancel",
    "rehabilitation",
    "config_change",
)

COLUMNS = r"""
ALTER TABLE pool_config ADD COLUMN IF NOT EXISTS max_purchases_per_day integer;
ALTER TABLE pool_config ADD COLUMN IF NOT EXISTS rehab_after_minutes integer DEFAULT 60;
COMMENT ON COLUMN pool_config.max_purchases_per_day IS
    'Numeros comprados em quaisquer 24 horas, no maximo; NULL: sem limite';
COMMENT ON COLUMN pool_config.rehab_after_minutes IS
    'Minutos apos a degradacao para um chip apto voltar a ready; NULL: nunca';
"""

CHECKS = {
    "pool_config_max_purchases_per_day_not_negative": (
        "max_purchases_per_day IS NULL OR max_purchases_per_day >= 0"
    ),
    "pool_config_rehab_after_not_negative": (
        "rehab_after_minutes IS NULL OR rehab_after_minutes >= 0"
    ),
}

ADD_CHECK = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = '{name}' AND conrelid = 'pool_config'::regclass) THEN
        ALTER TABLE pool_config ADD CONSTRAINT {name} CHECK ({check}) NOT VALID;
    END IF;
END $$;
ALTER TABLE pool_config VALIDATE CONSTRAINT {name};
"""

# The seed's inline CHECK on operacao (whatever its name) gives way to a named one listing the
# new codes: added NOT VALID (a short lock), then validated without blocking writers.
OPERACAO_CHECK = """
DO $$
DECLARE
    old record;
BEGIN
    FOR old IN SELECT conname FROM pg_constraint
                WHERE conrelid = 'orchestrator_operations'::regclass AND contype = 'c'
                  AND pg_get_constraintdef(oid) LIKE '%operacao%'
                  AND conname <> 'orchestrator_operations_operacao_known'
    LOOP
        EXECUTE format('ALTER TABLE orchestrator_operations DROP CONSTRAINT %I', old.conname);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'orchestrator_operations_operacao_known'
                     AND conrelid = 'orchestrator_operations'::regclass) THEN
        ALTER TABLE orchestrator_operations ADD CONSTRAINT orchestrator_operations_operacao_known
            CHECK (operacao IN ({codes})) NOT VALID;
    END IF;
END $$;
ALTER TABLE orchestrator_operations VALIDATE CONSTRAINT orchestrator_operations_operacao_known;
""".format(codes=", ".join(f"'{code}'" for code in OPERACOES))

#: Outside a transaction (no lock other writers wait on); an INVALID leftover is rebuilt.
DROP_INVALID = """
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = '{name}' AND NOT i.indisvalid) THEN
        DROP INDEX {name};
    END IF;
END $$
"""
INDEXES = {
    "idx_chips_purchased_at": "chips (created_at) WHERE provisioning_name IS NOT NULL",
    "idx_chips_degraded_fit": (
        "chips (trust_score) WHERE status = 'degraded' AND evolution_connected"
    ),
}

DOWNGRADE = """
DROP INDEX IF EXISTS idx_chips_degraded_fit;
DROP INDEX IF EXISTS idx_chips_purchased_at;
ALTER TABLE pool_config DROP COLUMN IF EXISTS rehab_after_minutes;
ALTER TABLE pool_config DROP COLUMN IF EXISTS max_purchases_per_day;
"""


def upgrade() -> None:
    op.execute(COLUMNS)
    for name, check in CHECKS.items():
        op.execute(ADD_CHECK.format(name=name, check=check))
    op.execute(OPERACAO_CHECK)
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            op.execute(DROP_INVALID.format(name=name))
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")


def downgrade() -> None:
    op.execute(DOWNGRADE)
