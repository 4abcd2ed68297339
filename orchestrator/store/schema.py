"""SQLAlchemy Core tables. The migrations in migrations/ are the source of truth."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = sa.MetaData()

pool_config = sa.Table(
    "pool_config",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("producao_min", sa.Integer),
    sa.Column("producao_max", sa.Integer),
    sa.Column("ready_min", sa.Integer),
    sa.Column("warmup_buffer", sa.Integer),
    sa.Column("warmup_days", sa.Integer),
    sa.Column("trust_min_for_ready", sa.Float),
    sa.Column("trust_degraded_threshold", sa.Float),
    sa.Column("auto_provision", sa.Boolean),
    sa.Column("default_ddd", sa.Integer),
    sa.Column("max_provisions_per_cycle", sa.Integer),
    sa.Column("disconnect_grace_minutes", sa.Integer),
    sa.Column("replace_storm_fraction", sa.Float),
    sa.Column("auto_cancel_banned", sa.Boolean),
    sa.Column("alert_cooldown_minutes", sa.Integer),
    sa.Column("flap_max_per_hour", sa.Integer),
    sa.Column("number_monthly_cost", sa.Numeric(12, 2)),
    sa.Column("service_level", sa.Float),
    sa.Column("auto_size", sa.Boolean),
    sa.Column("max_purchases_per_day", sa.Integer),
    sa.Column("rehab_after_minutes", sa.Integer),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

chips = sa.Table(
    "chips",
    metadata,
    sa.Column(
        "id", UUID(as_uuid=False), primary_key=True, server_default=sa.func.gen_random_uuid()
    ),
    sa.Column("telefone", sa.Text),
    sa.Column("instance_name", sa.Text),
    sa.Column("ddd", sa.Integer),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("trust_score", sa.Float, nullable=False),
    sa.Column("trust_level", sa.Text),
    sa.Column("fase_warmup", sa.Text),
    sa.Column("warming_started_at", sa.DateTime(timezone=True)),
    sa.Column("ready_at", sa.DateTime(timezone=True)),
    sa.Column("promoted_to_active_at", sa.DateTime(timezone=True)),
    sa.Column("degraded_at", sa.DateTime(timezone=True)),
    sa.Column("evolution_connected", sa.Boolean, nullable=False),
    sa.Column("evolution_disconnected_at", sa.DateTime(timezone=True)),
    sa.Column("msgs_enviadas_hoje", sa.Integer),
    sa.Column("salvy_id", sa.Text),
    sa.Column("provisioning_name", sa.Text),
    sa.Column("provisioning_deadline", sa.DateTime(timezone=True)),
    sa.Column("provisioning_lease_until", sa.DateTime(timezone=True)),
    sa.Column("provisioning_lease_owner", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

conversation_chips = sa.Table(
    "conversation_chips",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("conversation_id", sa.Text, nullable=False),
    sa.Column("chip_id", UUID(as_uuid=False), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("migrated_at", sa.DateTime(timezone=True)),
    sa.Column("migrated_from", UUID(as_uuid=False)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)

operations = sa.Table(
    "orchestrator_operations",
    metadata,
    sa.Column(
        "id", UUID(as_uuid=False), primary_key=True, server_default=sa.func.gen_random_uuid()
    ),
    sa.Column("operacao", sa.Text, nullable=False),
    sa.Column("chip_id", UUID(as_uuid=False)),
    sa.Column("chip_destino_id", UUID(as_uuid=False)),
    sa.Column("motivo", sa.Text),
    sa.Column("metadata", JSONB),
    sa.Column("sucesso", sa.Boolean),
    sa.Column("erro", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)

outbox = sa.Table(
    "notification_outbox",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("canal", sa.Text, nullable=False),
    sa.Column("texto", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("delivered_via", sa.Text),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    sa.Column("claimed_by", sa.Text),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("last_error_code", sa.Text),
)

alert_state = sa.Table(
    "alert_state",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("last_sent_at", sa.DateTime(timezone=True)),
    sa.Column("times_sent", sa.Integer),
)

purchase_backoff = sa.Table(
    "purchase_backoff",
    metadata,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("cause", sa.Text),
    sa.Column("failures", sa.Integer),
    sa.Column("paused_until", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

chip_status_tally = sa.Table(
    "chip_status_tally",
    metadata,
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
)

chip_status_tally_checks = sa.Table(
    "chip_status_tally_checks",
    metadata,
    sa.Column("status", sa.Text, primary_key=True),
    sa.Column("checked_at", sa.DateTime(timezone=True)),
    sa.Column("last_drift", sa.BigInteger),
    sa.Column("drift_found_at", sa.DateTime(timezone=True)),
    sa.Column("corrections", sa.BigInteger),
    sa.Column("chips_corrected", sa.BigInteger),
)

backstop_cursor = sa.Table(
    "backstop_cursor",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
)

operation_tally = sa.Table(
    "operation_tally",
    metadata,
    sa.Column("operacao", sa.Text, nullable=False),
    sa.Column("sucesso", sa.Boolean, nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
)

stranded_chip_events = sa.Table(
    "stranded_chip_events",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("chip_id", UUID(as_uuid=False), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)

pool_growth_slots = sa.Table(
    "pool_growth_slots",
    metadata,
    sa.Column("slot", sa.SmallInteger, primary_key=True),
)

chip_disconnect_events = sa.Table(
    "chip_disconnect_events",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("chip_id", UUID(as_uuid=False)),
    sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

chip_webhook_state = sa.Table(
    "chip_webhook_state",
    metadata,
    sa.Column("chip_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("last_event_at", sa.DateTime(timezone=True)),
    sa.Column("clock_offset", sa.Interval),
)
