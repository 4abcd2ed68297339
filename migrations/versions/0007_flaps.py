"""Webhooks: every drop of a chip's connection logged (flapping), the last gateway event per chip.

Revision ID: 0007_flaps
Revises: 0006_config_planning
Create Date: 2026-12-23

`chip_disconnect_events` gets one row each time a chip's `evolution_connected` goes from true to
false, whoever writes it (the webhook receiver, or another service's plain UPDATE): an AFTER
UPDATE trigger, like the one that keeps `evolution_disconnected_at`. The cycle counts a chip's
rows of the last hour against `pool_config.flap_max_per_hour` (index on (chip_id, at), and on
(at) for the count over every chip and for pruning rows older than two hours).

`chip_webhook_state` keeps, per chip, the time of the newest gateway event applied (Evolution's
`date_time`), so a delivery that arrives after a newer one changes nothing (level-triggered).

`idx_chips_instance_name`: the receiver finds a chip by Evolution's instance name on every event;
built CONCURRENTLY (no lock other writers wait on).

The trigger function runs as its owner (SECURITY DEFINER): another service's role needs no
privilege on the new table for its UPDATEs to keep working. Safe to run twice.
"""

from alembic import op

revision = "0007_flaps"
down_revision = "0006_config_planning"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE IF NOT EXISTS chip_disconnect_events (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chip_id  uuid NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE chip_disconnect_events IS
    'Quedas de conexao (evolution_connected true -> false), gravadas por trigger em chips';
CREATE INDEX IF NOT EXISTS idx_chip_disconnect_events_chip_at ON chip_disconnect_events (chip_id, at);
CREATE INDEX IF NOT EXISTS idx_chip_disconnect_events_at ON chip_disconnect_events (at);

CREATE TABLE IF NOT EXISTS chip_webhook_state (
    chip_id        uuid PRIMARY KEY,
    last_event_at  timestamptz NOT NULL
);
COMMENT ON TABLE chip_webhook_state IS
    'Hora do evento mais recente do gateway aplicado a cada chip (eventos atrasados sao ignorados)';

CREATE OR REPLACE FUNCTION chips_log_disconnect() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO chip_disconnect_events (chip_id) VALUES (NEW.id);
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER chips_log_disconnect
    AFTER UPDATE OF evolution_connected ON chips FOR EACH ROW
    WHEN (OLD.evolution_connected AND NOT NEW.evolution_connected)
    EXECUTE FUNCTION chips_log_disconnect();
"""

#: Outside a transaction: CONCURRENTLY takes no lock that other services' writes wait on. A
#: build that failed half-way leaves an INVALID index, which IF NOT EXISTS would keep: drop it.
INSTANCE_INDEX = (
    """
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = 'idx_chips_instance_name' AND NOT i.indisvalid) THEN
        DROP INDEX idx_chips_instance_name;
    END IF;
END $$
""",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chips_instance_name ON chips (instance_name)",
)

DOWNGRADE = """
DROP TRIGGER IF EXISTS chips_log_disconnect ON chips;
DROP FUNCTION IF EXISTS chips_log_disconnect();
DROP INDEX IF EXISTS idx_chips_instance_name;
DROP TABLE IF EXISTS chip_webhook_state;
DROP TABLE IF EXISTS chip_disconnect_events;
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    with op.get_context().autocommit_block():
        for statement in INSTANCE_INDEX:
            op.execute(statement)


def downgrade() -> None:
    op.execute(DOWNGRADE)
