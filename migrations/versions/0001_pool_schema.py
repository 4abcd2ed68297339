"""Pool schema: pool_config, chips, conversation_chips, orchestrator_operations.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE pool_config (
    id                         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    producao_min               integer  NOT NULL DEFAULT 10,
    producao_max               integer  NOT NULL DEFAULT 20,
    ready_min                  integer  NOT NULL DEFAULT 3,
    warmup_buffer              integer  NOT NULL DEFAULT 10,
    warmup_days                integer  NOT NULL DEFAULT 21,
    trust_min_for_ready        double precision NOT NULL DEFAULT 85,
    trust_degraded_threshold   double precision NOT NULL DEFAULT 60,
    auto_provision             boolean  NOT NULL DEFAULT true,
    default_ddd                integer  NOT NULL DEFAULT 11,
    max_provisions_per_cycle   integer  NOT NULL DEFAULT 3,
    disconnect_grace_minutes   integer  NOT NULL DEFAULT 30,
    replace_storm_fraction     double precision NOT NULL DEFAULT 0.5,
    auto_cancel_banned         boolean  NOT NULL DEFAULT false,
    alert_cooldown_minutes     integer  NOT NULL DEFAULT 30,
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pool_config_sizes_not_negative CHECK (
        producao_min >= 0 AND producao_max >= 0 AND ready_min >= 0 AND warmup_buffer >= 0
        AND warmup_days >= 0 AND max_provisions_per_cycle >= 0
        AND disconnect_grace_minutes >= 0 AND alert_cooldown_minutes >= 0),
    CONSTRAINT pool_config_producao_min_le_max CHECK (producao_min <= producao_max),
    CONSTRAINT pool_config_trust_in_range CHECK (
        trust_min_for_ready BETWEEN 0 AND 100 AND trust_degraded_threshold BETWEEN 0 AND 100),
    CONSTRAINT pool_config_storm_fraction_in_range CHECK (
        replace_storm_fraction > 0 AND replace_storm_fraction <= 1),
    CONSTRAINT pool_config_ddd_valid CHECK (default_ddd BETWEEN 11 AND 99)
);
COMMENT ON TABLE pool_config IS 'Configuracao do pool (uma linha)';
INSERT INTO pool_config DEFAULT VALUES;

CREATE TABLE chips (
    id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    telefone                   text UNIQUE,
    instance_name              text,
    ddd                        integer CHECK (ddd BETWEEN 11 AND 99),
    status                     text NOT NULL DEFAULT 'warming',
    trust_score                double precision NOT NULL DEFAULT 0,
    trust_level                text,
    fase_warmup                text,
    warming_started_at         timestamptz,
    ready_at                   timestamptz,
    promoted_to_active_at      timestamptz,
    degraded_at                timestamptz,
    evolution_connected        boolean NOT NULL DEFAULT true,
    evolution_disconnected_at  timestamptz,
    msgs_enviadas_hoje         integer NOT NULL DEFAULT 0 CHECK (msgs_enviadas_hoje >= 0),
    salvy_id                   text UNIQUE,
    provisioning_name          text UNIQUE,
    provisioning_deadline      timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chips_status_known CHECK (status IN (
        'provisioning', 'warming', 'ready', 'active', 'degraded', 'banned', 'cancelled')),
    CONSTRAINT chips_trust_score_in_range CHECK (trust_score BETWEEN 0 AND 100),
    CONSTRAINT chips_telefone_unless_provisioning CHECK (
        telefone IS NOT NULL OR status IN ('provisioning', 'cancelled'))
);
COMMENT ON TABLE chips IS 'Numeros de WhatsApp do pool';
COMMENT ON COLUMN chips.provisioning_name IS 'Nome unico enviado a Salvy na compra (idempotencia)';

-- The cycle's queries, each served by a small partial index.
CREATE INDEX idx_chips_status ON chips (status);
CREATE INDEX idx_chips_ready_best ON chips (trust_score DESC, ready_at) WHERE status = 'ready';
CREATE INDEX idx_chips_active_trust ON chips (trust_score) WHERE status = 'active';
CREATE INDEX idx_chips_active_disconnected ON chips (evolution_disconnected_at)
    WHERE status = 'active' AND NOT evolution_connected;
CREATE INDEX idx_chips_banned_unhandled ON chips (id)
    WHERE status = 'banned' AND degraded_at IS NULL;
CREATE INDEX idx_chips_warming_operacao ON chips (warming_started_at)
    WHERE status = 'warming' AND fase_warmup = 'operacao';
CREATE INDEX idx_chips_provisioning_deadline ON chips (provisioning_deadline)
    WHERE status = 'provisioning';

-- Other services only flip evolution_connected; the database records since when.
CREATE FUNCTION chips_track_disconnection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT NEW.evolution_connected THEN
            NEW.evolution_disconnected_at := COALESCE(NEW.evolution_disconnected_at, now());
        ELSE
            NEW.evolution_disconnected_at := NULL;
        END IF;
    ELSIF NEW.evolution_connected IS DISTINCT FROM OLD.evolution_connected THEN
        IF NEW.evolution_connected THEN
            NEW.evolution_disconnected_at := NULL;
        ELSE
            NEW.evolution_disconnected_at := now();
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER chips_track_disconnection
    BEFORE INSERT OR UPDATE ON chips
    FOR EACH ROW EXECUTE FUNCTION chips_track_disconnection();

CREATE TABLE conversation_chips (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id  text NOT NULL,
    chip_id          uuid NOT NULL REFERENCES chips(id),
    active           boolean NOT NULL DEFAULT true,
    migrated_at      timestamptz,
    migrated_from    uuid REFERENCES chips(id),
    created_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE conversation_chips IS 'Qual chip atende cada conversa';
CREATE INDEX idx_conversation_chips_chip_active ON conversation_chips (chip_id) WHERE active;
CREATE UNIQUE INDEX uq_conversation_chips_one_active ON conversation_chips (conversation_id)
    WHERE active;

CREATE TABLE orchestrator_operations (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    operacao TEXT NOT NULL CHECK (operacao IN (
        'auto_replace',
        'auto_provision',
        'promotion_warming_ready',
        'promotion_ready_active',
        'demotion',
        'migration',
        'cancel'
    )),

    chip_id UUID REFERENCES chips(id),
    chip_destino_id UUID REFERENCES chips(id),

    motivo TEXT,
    metadata JSONB DEFAULT '{}',

    sucesso BOOLEAN DEFAULT true,
    erro TEXT,

    created_at TIMESTAMPTZ DEFAULT now()
);

CREATE INDEX idx_orchestrator_ops_chip ON orchestrator_operations(chip_id, created_at DESC);
CREATE INDEX idx_orchestrator_ops_tipo ON orchestrator_operations(operacao, created_at DESC);
CREATE INDEX idx_orchestrator_ops_time ON orchestrator_operations(created_at DESC);
CREATE INDEX idx_orchestrator_ops_destino ON orchestrator_operations(chip_destino_id)
    WHERE chip_destino_id IS NOT NULL;

COMMENT ON TABLE orchestrator_operations IS 'Historico de operacoes do Orchestrator';

-- Slack messages, written in the same transaction as the change they describe.
CREATE TABLE notification_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    canal           text NOT NULL CHECK (canal IN ('alertas', 'operacoes')),
    texto           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    delivered_at    timestamptz,
    delivered_via   text CHECK (delivered_via IN ('slack', 'log'))
);
CREATE INDEX idx_notification_outbox_pending ON notification_outbox (id) WHERE delivered_at IS NULL;

-- Alert cool-down and de-duplication: one row per alert key.
CREATE TABLE alert_state (
    key           text PRIMARY KEY,
    last_sent_at  timestamptz NOT NULL DEFAULT now(),
    times_sent    integer NOT NULL DEFAULT 1
);
"""

DOWNGRADE = """
DROP TABLE alert_state;
DROP TABLE notification_outbox;
DROP TABLE orchestrator_operations;
DROP TABLE conversation_chips;
DROP TABLE chips;
DROP FUNCTION chips_track_disconnection();
DROP TABLE pool_config;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
