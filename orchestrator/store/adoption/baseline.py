"""Migration 0001 as data: what adopting tables other services created must end up with.

Frozen like 0001 itself: a later schema change is a new migration (which must also work on adopted
tables), never an edit here. tests/store/adoption/test_adoption.py compares an adopted database with a fresh
one at head, so this model cannot drift from 0001 unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass

#: format_type() names an existing column may have (other services' choices we keep).
UUID = ("uuid",)
TEXT = ("text", "character varying", "character")
INT = ("smallint", "integer", "bigint")
NUMBER = (*INT, "real", "double precision")
FLOAT = ("real", "double precision")
BOOL = ("boolean",)
TSTZ = ("timestamp with time zone",)
JSONB = ("jsonb",)


@dataclass(frozen=True)
class Column:
    """A column of 0001; `key` columns are never added (a table without one is refused)."""

    name: str
    type: str
    accepted: tuple[str, ...]
    default: str | None = None
    not_null: bool = False
    key: bool = False


@dataclass(frozen=True)
class Check:
    """A CHECK constraint by its 0001 name; `shows` are printed next to an offending row's id."""

    name: str
    expr: str
    shows: tuple[str, ...]


@dataclass(frozen=True)
class Unique:
    """A UNIQUE constraint (where None) or a partial unique index (where set)."""

    name: str
    column: str
    where: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    """column REFERENCES references(id)."""

    name: str
    column: str
    references: str


@dataclass(frozen=True)
class Index:
    """A plain index: CREATE INDEX name ON table <definition>."""

    name: str
    definition: str


@dataclass(frozen=True)
class Table:
    """One table of 0001. `create`: DDL for a table other services never create (made whole)."""

    name: str
    columns: tuple[Column, ...] = ()
    checks: tuple[Check, ...] = ()
    uniques: tuple[Unique, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    indexes: tuple[Index, ...] = ()
    comment: str | None = None
    #: Comments on columns, set when this run adds the column.
    column_comments: tuple[tuple[str, str], ...] = ()
    create: str | None = None
    #: One row: every change is made and validated inside the short locked transaction.
    small: bool = False


STATUSES = "'provisioning', 'warming', 'ready', 'active', 'degraded', 'banned', 'cancelled'"

POOL_CONFIG = Table(
    "pool_config",
    small=True,
    comment="Configuracao do pool (uma linha)",
    columns=(
        Column("id", "smallint", INT, key=True),
        Column("producao_min", "integer", INT, "10", True),
        Column("producao_max", "integer", INT, "20", True),
        Column("ready_min", "integer", INT, "3", True),
        Column("warmup_buffer", "integer", INT, "10", True),
        Column("warmup_days", "integer", INT, "21", True),
        Column("trust_min_for_ready", "double precision", NUMBER, "85", True),
        Column("trust_degraded_threshold", "double precision", NUMBER, "60", True),
        Column("auto_provision", "boolean", BOOL, "true", True),
        Column("default_ddd", "integer", INT, "11", True),
        Column("max_provisions_per_cycle", "integer", INT, "3", True),
        Column("disconnect_grace_minutes", "integer", INT, "30", True),
        Column("replace_storm_fraction", "double precision", FLOAT, "0.5", True),
        Column("auto_cancel_banned", "boolean", BOOL, "false", True),
        Column("alert_cooldown_minutes", "integer", INT, "30", True),
        Column("updated_at", "timestamptz", TSTZ, "now()", True),
    ),
    checks=(
        Check(
            "pool_config_sizes_not_negative",
            "producao_min >= 0 AND producao_max >= 0 AND ready_min >= 0 AND warmup_buffer >= 0"
            " AND warmup_days >= 0 AND max_provisions_per_cycle >= 0"
            " AND disconnect_grace_minutes >= 0 AND alert_cooldown_minutes >= 0",
            ("producao_min", "producao_max", "ready_min", "warmup_buffer", "warmup_days"),
        ),
        Check(
            "pool_config_producao_min_le_max",
            "producao_min <= producao_max",
            ("producao_min", "producao_max"),
        ),
        Check(
            "pool_config_trust_in_range",
            "trust_min_for_ready BETWEEN 0 AND 100 AND trust_degraded_threshold BETWEEN 0 AND 100",
            ("trust_min_for_ready", "trust_degraded_threshold"),
        ),
        Check(
            "pool_config_storm_fraction_in_range",
            "replace_storm_fraction > 0 AND replace_storm_fraction <= 1",
            ("replace_storm_fraction",),
        ),
        Check("pool_config_ddd_valid", "default_ddd BETWEEN 11 AND 99", ("default_ddd",)),
    ),
)

#: Guards "exactly one pool_config row" when id is not 0001's `smallint CHECK (id = 1)` (an
#: adopted `id serial`): a unique index on a constant admits one row whatever its id.
ONE_ROW_CHECK = "pool_config_id_check"
ONE_ROW_INDEX = "pool_config_one_row"

CHIPS = Table(
    "chips",
    comment="Numeros de WhatsApp do pool",
    column_comments=(("provisioning_name", "Nome unico enviado a Salvy na compra (idempotencia)"),),
    columns=(
        Column("id", "uuid", UUID, "gen_random_uuid()", key=True),
        Column("telefone", "text", TEXT),
        Column("instance_name", "text", TEXT),
        Column("ddd", "integer", INT),
        Column("status", "text", TEXT, "'warming'", True),
        Column("trust_score", "double precision", NUMBER, "0", True),
        Column("trust_level", "text", TEXT),
        Column("fase_warmup", "text", TEXT),
        Column("warming_started_at", "timestamptz", TSTZ),
        Column("ready_at", "timestamptz", TSTZ),
        Column("promoted_to_active_at", "timestamptz", TSTZ),
        Column("degraded_at", "timestamptz", TSTZ),
        Column("evolution_connected", "boolean", BOOL, "true", True),
        Column("evolution_disconnected_at", "timestamptz", TSTZ),
        Column("msgs_enviadas_hoje", "integer", INT, "0", True),
        Column("salvy_id", "text", TEXT),
        Column("provisioning_name", "text", TEXT),
        Column("provisioning_deadline", "timestamptz", TSTZ),
        Column("created_at", "timestamptz", TSTZ, "now()", True),
        Column("updated_at", "timestamptz", TSTZ, "now()", True),
    ),
    checks=(
        Check("chips_ddd_check", "ddd BETWEEN 11 AND 99", ("ddd",)),
        Check("chips_msgs_enviadas_hoje_check", "msgs_enviadas_hoje >= 0", ("msgs_enviadas_hoje",)),
        Check("chips_status_known", f"status IN ({STATUSES})", ("status",)),
        Check("chips_trust_score_in_range", "trust_score BETWEEN 0 AND 100", ("trust_score",)),
        Check(
            "chips_telefone_unless_provisioning",
            "telefone IS NOT NULL OR status IN ('provisioning', 'cancelled')",
            ("telefone", "status"),
        ),
    ),
    uniques=(
        Unique("chips_telefone_key", "telefone"),
        Unique("chips_salvy_id_key", "salvy_id"),
        Unique("chips_provisioning_name_key", "provisioning_name"),
    ),
    indexes=(
        # idx_chips_ready_best is left out: 0003 replaces it with idx_chips_ready_fit.
        Index("idx_chips_status", "(status)"),
        Index("idx_chips_active_trust", "(trust_score) WHERE status = 'active'"),
        Index(
            "idx_chips_active_disconnected",
            "(evolution_disconnected_at) WHERE status = 'active' AND NOT evolution_connected",
        ),
        Index("idx_chips_banned_unhandled", "(id) WHERE status = 'banned' AND degraded_at IS NULL"),
        Index(
            "idx_chips_warming_operacao",
            "(warming_started_at) WHERE status = 'warming' AND fase_warmup = 'operacao'",
        ),
        Index(
            "idx_chips_provisioning_deadline",
            "(provisioning_deadline) WHERE status = 'provisioning'",
        ),
    ),
)

CONVERSATION_CHIPS = Table(
    "conversation_chips",
    comment="Qual chip atende cada conversa",
    columns=(
        Column("id", "bigint", (*INT, *UUID), key=True),
        Column("conversation_id", "text", (*TEXT, *UUID), not_null=True),
        Column("chip_id", "uuid", UUID, not_null=True),
        Column("active", "boolean", BOOL, "true", True),
        Column("migrated_at", "timestamptz", TSTZ),
        Column("migrated_from", "uuid", UUID),
        Column("created_at", "timestamptz", TSTZ, "now()", True),
    ),
    uniques=(Unique("uq_conversation_chips_one_active", "conversation_id", "active"),),
    foreign_keys=(
        ForeignKey("conversation_chips_chip_id_fkey", "chip_id", "chips"),
        ForeignKey("conversation_chips_migrated_from_fkey", "migrated_from", "chips"),
    ),
    indexes=(Index("idx_conversation_chips_chip_active", "(chip_id) WHERE active"),),
)

OPERATIONS_DDL = r"""
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
"""

#: The seed's migration (story 1.6) may already have made it: then only what it lacks is added.
OPERATIONS = Table(
    "orchestrator_operations",
    create=OPERATIONS_DDL,
    columns=(
        Column("id", "uuid", UUID, "gen_random_uuid()", key=True),
        Column("operacao", "text", TEXT, not_null=True),
        Column("chip_id", "uuid", UUID),
        Column("chip_destino_id", "uuid", UUID),
        Column("motivo", "text", TEXT),
        Column("metadata", "jsonb", JSONB, "'{}'"),
        Column("sucesso", "boolean", BOOL, "true"),
        Column("erro", "text", TEXT),
        Column("created_at", "timestamptz", TSTZ, "now()"),
    ),
    checks=(
        # 0001's orchestrator_operations_operacao_check is left out: 0009 replaces it with this
        # one (two more codes), and drops any other CHECK on operacao the seed's table had.
        Check(
            "orchestrator_operations_operacao_known",
            "operacao IN ('auto_replace', 'auto_provision', 'promotion_warming_ready',"
            " 'promotion_ready_active', 'demotion', 'migration', 'cancel', 'rehabilitation',"
            " 'config_change')",
            ("operacao",),
        ),
    ),
    foreign_keys=(
        ForeignKey("orchestrator_operations_chip_id_fkey", "chip_id", "chips"),
        ForeignKey("orchestrator_operations_chip_destino_id_fkey", "chip_destino_id", "chips"),
    ),
    indexes=(
        Index("idx_orchestrator_ops_chip", "(chip_id, created_at DESC)"),
        Index("idx_orchestrator_ops_tipo", "(operacao, created_at DESC)"),
        Index("idx_orchestrator_ops_time", "(created_at DESC)"),
        Index(
            "idx_orchestrator_ops_destino", "(chip_destino_id) WHERE chip_destino_id IS NOT NULL"
        ),
    ),
    comment="Historico de operacoes do Orchestrator",
)

OUTBOX = Table(
    "notification_outbox",
    create=r"""
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
""",
)

ALERT_STATE = Table(
    "alert_state",
    create=r"""
CREATE TABLE alert_state (
    key           text PRIMARY KEY,
    last_sent_at  timestamptz NOT NULL DEFAULT now(),
    times_sent    integer NOT NULL DEFAULT 1
);
""",
)

#: Dependency order: chips before the tables that reference it.
TABLES = (POOL_CONFIG, CHIPS, CONVERSATION_CHIPS, OPERATIONS, OUTBOX, ALERT_STATE)
#: The tables other services created and write to; one of them present means "adopt".
SHARED = ("pool_config", "chips", "conversation_chips")

TRIGGER_NAME = "chips_track_disconnection"
FUNCTION_DDL = r"""
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
END $$"""
TRIGGER_DDL = """
CREATE TRIGGER chips_track_disconnection
    BEFORE INSERT OR UPDATE ON chips
    FOR EACH ROW EXECUTE FUNCTION chips_track_disconnection()"""
