"""pool_config: flapping, capacity planning and cost settings.

Revision ID: 0006_config_planning
Revises: 0005_scale
Create Date: 2026-12-16

- `flap_max_per_hour` (6): a chip that disconnects this many times within an hour is replaced
  (reason `flapping`) even when no single drop outlasts the grace period; 0 turns it off.
- `number_monthly_cost` (NULL: unknown): what one number costs per month, in BRL (reports and
  the simulator's cost; a cancelled number is billed its whole month).
- `service_level` (0.95): the probability that a replacement finds a ready chip, the target of
  the forecast's recommendation.
- `auto_size` (false): the cycle uses max(configured, recommended) for warmup_buffer and
  ready_min.

Each column is defaulted (or nullable), so other services' INSERTs that name only the seed's
columns keep working; on PostgreSQL 11+ adding them rewrites no row. The CHECKs are added
NOT VALID and then validated (the one row already has the defaults). Safe to run twice.
"""

from alembic import op

revision = "0006_config_planning"
down_revision = "0005_scale"
branch_labels = None
depends_on = None

COLUMNS = r"""
ALTER TABLE pool_config ADD COLUMN IF NOT EXISTS flap_max_per_hour integer NOT NULL DEFAULT 6;
ALTER TABLE pool_config ADD COLUMN IF NOT EXISTS number_monthly_cost numeric(12, 2);
ALTER TABLE pool_config ADD COLUMN IF NOT EXISTS service_level double precision NOT NULL DEFAULT 0.95;
ALTER TABLE pool_config ADD COLUMN IF NOT EXISTS auto_size boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN pool_config.flap_max_per_hour IS
    'Quedas de conexao por hora que levam a troca (motivo flapping); 0 desliga';
COMMENT ON COLUMN pool_config.number_monthly_cost IS 'Custo mensal de um numero (BRL); NULL: desconhecido';
COMMENT ON COLUMN pool_config.service_level IS
    'Probabilidade alvo de uma troca encontrar um chip ready (previsao)';
COMMENT ON COLUMN pool_config.auto_size IS
    'Ciclo usa max(configurado, recomendado) para warmup_buffer e ready_min';
"""

CHECKS = {
    "pool_config_flap_max_not_negative": "flap_max_per_hour >= 0",
    "pool_config_monthly_cost_not_negative": "number_monthly_cost IS NULL OR number_monthly_cost >= 0",
    "pool_config_service_level_in_range": "service_level > 0 AND service_level < 1",
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

DOWNGRADE = """
ALTER TABLE pool_config DROP COLUMN IF EXISTS auto_size;
ALTER TABLE pool_config DROP COLUMN IF EXISTS service_level;
ALTER TABLE pool_config DROP COLUMN IF EXISTS number_monthly_cost;
ALTER TABLE pool_config DROP COLUMN IF EXISTS flap_max_per_hour;
"""


def upgrade() -> None:
    op.execute(COLUMNS)
    for name, check in CHECKS.items():
        op.execute(ADD_CHECK.format(name=name, check=check))


def downgrade() -> None:
    op.execute(DOWNGRADE)
