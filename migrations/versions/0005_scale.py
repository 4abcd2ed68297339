"""Scale: chip counts per status kept by triggers; chips that may hold stranded conversations noted.

Revision ID: 0005_scale
Revises: 0004_purchases
Create Date: 2026-12-09

`chip_status_tally` holds, per status, rows whose `n` sum to the number of chips in that status:
every INSERT, DELETE and status change on `chips` (ours or another service's plain SQL) appends
its delta in the same transaction, so any snapshot reads an exact count from a handful of rows
instead of counting 1M. Appending never updates a shared row: writers never wait on each other
(a single counter row would serialise every status change until commit). The cycle folds the
deltas back into one row per status (`chip_status_tally_compact`, sum-preserving);
`chip_status_tally_resync()` recounts from `chips` if the triggers were ever bypassed.

`pool_growth_slots` (16 rows) lets swaps that add an active chip far below producao_max run side
by side instead of queueing on the pool_config row (orchestrator/services/growth.py).

`stranded_chip_events` notes chips that may hold open conversations while not active: every chip
that leaves `active`, and every chip that gains an open row while not active. The cycle checks only
those chips (and one slice of the rest as a backstop) instead of joining every open row, and
deletes a note only after locking its chip with SKIP LOCKED: a conversation written from a stale
read holds KEY SHARE on the chip (its foreign key, or this trigger's own lock) from before it read
the status until it commits, so a note is never deleted while such a row is still invisible.

The trigger functions run as their owner (SECURITY DEFINER): another service's role needs no
privilege on these tables for its INSERTs and UPDATEs to keep working. Safe to run twice.
"""

from alembic import op

revision = "0005_scale"
down_revision = "0004_purchases"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE IF NOT EXISTS chip_status_tally (
    status  text   NOT NULL,
    n       bigint NOT NULL
);
COMMENT ON TABLE chip_status_tally IS
    'Chips por status: soma de n por status (deltas gravados por triggers em chips)';

-- Swaps that add an active chip far below producao_max each hold one slot instead of the
-- pool_config row: at most 16 run at once, and those that check the count exactly (near the
-- maximum, promotions) lock pool_config and then every slot. The CHECK caps the slots the code
-- counts on (orchestrator.services.lifecycle.GROWTH_SLOTS).
CREATE TABLE IF NOT EXISTS pool_growth_slots (
    slot  smallint PRIMARY KEY,
    CONSTRAINT pool_growth_slots_slot_in_range CHECK (slot BETWEEN 1 AND 16)
);
COMMENT ON TABLE pool_growth_slots IS
    'Vagas para trocas que aumentam a producao longe de producao_max (uma por troca)';
INSERT INTO pool_growth_slots (slot) SELECT generate_series(1, 16) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS stranded_chip_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chip_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE stranded_chip_events IS
    'Chips que podem ter conversas abertas fora de producao (o ciclo verifica e apaga)';

-- One status change: -1 for the old status, +1 for the new one.
CREATE OR REPLACE FUNCTION chip_status_tally_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO chip_status_tally (status, n)
    SELECT s, d FROM (VALUES (OLD.status::text, -1), (NEW.status::text, 1)) AS v (s, d)
     WHERE s IS NOT NULL;
    RETURN NULL;
END $$;

-- INSERT and DELETE: one row per status per statement (a bulk load adds a handful of rows).
CREATE OR REPLACE FUNCTION chip_status_tally_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO chip_status_tally (status, n)
    SELECT status::text, count(*) FROM new_chips WHERE status IS NOT NULL GROUP BY status;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION chip_status_tally_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO chip_status_tally (status, n)
    SELECT status::text, -count(*) FROM old_chips WHERE status IS NOT NULL GROUP BY status;
    RETURN NULL;
END $$;

-- Compaction, resync and truncation delete tally rows: one at a time (a concurrent compaction's
-- new row would otherwise survive a resync or a truncation and count twice).
CREATE OR REPLACE FUNCTION chip_status_tally_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(727005);
    DELETE FROM chip_status_tally;
    RETURN NULL;
END $$;

-- Fold every delta visible now into one row per status; the sums are unchanged.
CREATE OR REPLACE FUNCTION chip_status_tally_compact() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    folded bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(727005);
    WITH gone AS (DELETE FROM chip_status_tally RETURNING status, n),
         kept AS (INSERT INTO chip_status_tally (status, n)
                  SELECT status, sum(n) FROM gone GROUP BY status HAVING sum(n) <> 0)
    SELECT count(*) INTO folded FROM gone;
    RETURN folded;
END $$;

-- Recount from chips (after triggers were bypassed: a restore, session_replication_role).
CREATE OR REPLACE FUNCTION chip_status_tally_resync() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(727005);
    -- One statement, one snapshot: the deltas it deletes are the ones its count includes; those
    -- committed after it stay and are counted once.
    WITH gone AS (DELETE FROM chip_status_tally RETURNING 1)
    INSERT INTO chip_status_tally (status, n)
    SELECT status::text, count(*) FROM chips WHERE status IS NOT NULL GROUP BY status;
END $$;

-- A chip left active: note it (the cycle looks for open rows on it; no lock taken here).
CREATE OR REPLACE FUNCTION chips_note_stranded() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO stranded_chip_events (chip_id) VALUES (NEW.id);
    RETURN NULL;
END $$;

-- Rows became open (inserted, moved, reopened): note their chips that are not active. KEY SHARE
-- first (what the foreign key takes), then a fresh read of the status. A transaction that reads
-- from an older snapshot (REPEATABLE READ, SERIALIZABLE) cannot see a chip leave active: it
-- notes every chip it opened rows on.
CREATE OR REPLACE FUNCTION conversation_chips_note_stranded() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        INSERT INTO stranded_chip_events (chip_id)
        SELECT DISTINCT chip_id FROM new_rows WHERE active AND chip_id IS NOT NULL;
        RETURN NULL;
    END IF;
    PERFORM 1 FROM chips WHERE id IN (SELECT chip_id FROM new_rows WHERE active)
     ORDER BY id FOR KEY SHARE;
    INSERT INTO stranded_chip_events (chip_id)
    SELECT id FROM chips
     WHERE id IN (SELECT chip_id FROM new_rows WHERE active)
       AND status IS DISTINCT FROM 'active';
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER chip_status_tally_update
    AFTER UPDATE ON chips FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION chip_status_tally_update();
CREATE OR REPLACE TRIGGER chip_status_tally_insert
    AFTER INSERT ON chips REFERENCING NEW TABLE AS new_chips
    FOR EACH STATEMENT EXECUTE FUNCTION chip_status_tally_insert();
CREATE OR REPLACE TRIGGER chip_status_tally_delete
    AFTER DELETE ON chips REFERENCING OLD TABLE AS old_chips
    FOR EACH STATEMENT EXECUTE FUNCTION chip_status_tally_delete();
CREATE OR REPLACE TRIGGER chip_status_tally_truncate
    AFTER TRUNCATE ON chips FOR EACH STATEMENT EXECUTE FUNCTION chip_status_tally_truncate();
CREATE OR REPLACE TRIGGER chips_note_stranded
    AFTER UPDATE ON chips FOR EACH ROW
    WHEN (OLD.status = 'active' AND NEW.status IS DISTINCT FROM 'active')
    EXECUTE FUNCTION chips_note_stranded();
CREATE OR REPLACE TRIGGER conversation_chips_note_stranded_insert
    AFTER INSERT ON conversation_chips REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conversation_chips_note_stranded();
CREATE OR REPLACE TRIGGER conversation_chips_note_stranded_update
    AFTER UPDATE ON conversation_chips REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conversation_chips_note_stranded();
"""

#: After the triggers exist (committed): what they would have noted had they always existed.
#: Each runs in its own transaction and takes no lock other writers wait on.
BACKFILL = (
    "SELECT chip_status_tally_resync()",
    """
INSERT INTO stranded_chip_events (chip_id)
SELECT DISTINCT cc.chip_id FROM conversation_chips cc JOIN chips c ON c.id = cc.chip_id
 WHERE cc.active AND c.status IS DISTINCT FROM 'active'
""",
)

DOWNGRADE = """
DROP TRIGGER IF EXISTS conversation_chips_note_stranded_update ON conversation_chips;
DROP TRIGGER IF EXISTS conversation_chips_note_stranded_insert ON conversation_chips;
DROP TRIGGER IF EXISTS chips_note_stranded ON chips;
DROP TRIGGER IF EXISTS chip_status_tally_truncate ON chips;
DROP TRIGGER IF EXISTS chip_status_tally_delete ON chips;
DROP TRIGGER IF EXISTS chip_status_tally_insert ON chips;
DROP TRIGGER IF EXISTS chip_status_tally_update ON chips;
DROP FUNCTION IF EXISTS conversation_chips_note_stranded();
DROP FUNCTION IF EXISTS chips_note_stranded();
DROP FUNCTION IF EXISTS chip_status_tally_resync();
DROP FUNCTION IF EXISTS chip_status_tally_compact();
DROP FUNCTION IF EXISTS chip_status_tally_truncate();
DROP FUNCTION IF EXISTS chip_status_tally_delete();
DROP FUNCTION IF EXISTS chip_status_tally_insert();
DROP FUNCTION IF EXISTS chip_status_tally_update();
DROP TABLE IF EXISTS stranded_chip_events;
DROP TABLE IF EXISTS pool_growth_slots;
DROP TABLE IF EXISTS chip_status_tally;
"""


def upgrade() -> None:
    # The triggers' DDL takes a short lock on chips and conversation_chips (lock_timeout, retried
    # by orchestrator.migrate); it commits before the backfill, so no write is missed between.
    op.execute(UPGRADE)
    with op.get_context().autocommit_block():
        for statement in BACKFILL:
            op.execute(statement)


def downgrade() -> None:
    op.execute(DOWNGRADE)
