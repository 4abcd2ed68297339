"""Operations per (operacao, sucesso) kept by triggers, so a metrics scrape never reads the history.

Revision ID: 0013_operation_tally
Revises: 0012_chip_list
Create Date: 2026-12-30

`operation_tally` holds rows whose `n` sum, per `(operacao, sucesso)`, to the rows of
`orchestrator_operations` with that pair: every INSERT, DELETE and change of either column (ours
or another service's plain SQL) appends its delta in the same transaction, as `chip_status_tally`
does for chips (0005). `sucesso` is false only for rows whose `sucesso` is false (NULL counts as
success, as the metric always did). Appending never updates a shared row, so writers never wait
on each other; the cycle folds the deltas into one row per pair (`operation_tally_compact`,
sum-preserving) and `operation_tally_resync()` recounts if the triggers were ever bypassed.

The trigger functions run as their owner (SECURITY DEFINER): another service's role needs no
privilege on the new table for its INSERTs to keep working. Safe to run twice.
"""

from alembic import op

revision = "0013_operation_tally"
down_revision = "0012_chip_list"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE IF NOT EXISTS operation_tally (
    operacao  text    NOT NULL,
    sucesso   boolean NOT NULL,
    n         bigint  NOT NULL
);
COMMENT ON TABLE operation_tally IS
    'Operacoes por operacao e sucesso: soma de n (deltas gravados por triggers em orchestrator_operations)';

-- INSERT and DELETE: one row per (operacao, sucesso) per statement (a bulk load adds a handful).
CREATE OR REPLACE FUNCTION operation_tally_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO operation_tally (operacao, sucesso, n)
    SELECT operacao, sucesso IS NOT FALSE, count(*) FROM new_ops GROUP BY 1, 2;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION operation_tally_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO operation_tally (operacao, sucesso, n)
    SELECT operacao, sucesso IS NOT FALSE, -count(*) FROM old_ops GROUP BY 1, 2;
    RETURN NULL;
END $$;

-- A row whose pair changed: -1 for the old pair, +1 for the new one.
CREATE OR REPLACE FUNCTION operation_tally_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO operation_tally (operacao, sucesso, n)
    VALUES (OLD.operacao, OLD.sucesso IS NOT FALSE, -1), (NEW.operacao, NEW.sucesso IS NOT FALSE, 1);
    RETURN NULL;
END $$;

-- Compaction, resync and truncation delete tally rows: one at a time (a concurrent compaction's
-- new row would otherwise survive a resync or a truncation and count twice).
CREATE OR REPLACE FUNCTION operation_tally_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(727008);
    DELETE FROM operation_tally;
    RETURN NULL;
END $$;

-- Fold every delta visible now into one row per pair; the sums are unchanged.
CREATE OR REPLACE FUNCTION operation_tally_compact() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    folded bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(727008);
    WITH gone AS (DELETE FROM operation_tally RETURNING operacao, sucesso, n),
         kept AS (INSERT INTO operation_tally (operacao, sucesso, n)
                  SELECT operacao, sucesso, sum(n) FROM gone GROUP BY 1, 2 HAVING sum(n) <> 0)
    SELECT count(*) INTO folded FROM gone;
    RETURN folded;
END $$;

-- Recount from orchestrator_operations (after triggers were bypassed: a restore,
-- session_replication_role = replica). Reads the whole history: for migrate and ops, never a scrape.
CREATE OR REPLACE FUNCTION operation_tally_resync() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(727008);
    -- One statement, one snapshot: the deltas it deletes are the ones its count includes; those
    -- committed after it stay and are counted once.
    WITH gone AS (DELETE FROM operation_tally RETURNING 1)
    INSERT INTO operation_tally (operacao, sucesso, n)
    SELECT operacao, sucesso IS NOT FALSE, count(*) FROM orchestrator_operations GROUP BY 1, 2;
END $$;

CREATE OR REPLACE TRIGGER operation_tally_insert
    AFTER INSERT ON orchestrator_operations REFERENCING NEW TABLE AS new_ops
    FOR EACH STATEMENT EXECUTE FUNCTION operation_tally_insert();
CREATE OR REPLACE TRIGGER operation_tally_delete
    AFTER DELETE ON orchestrator_operations REFERENCING OLD TABLE AS old_ops
    FOR EACH STATEMENT EXECUTE FUNCTION operation_tally_delete();
CREATE OR REPLACE TRIGGER operation_tally_update
    AFTER UPDATE ON orchestrator_operations FOR EACH ROW
    WHEN (OLD.operacao IS DISTINCT FROM NEW.operacao
          OR (OLD.sucesso IS NOT FALSE) IS DISTINCT FROM (NEW.sucesso IS NOT FALSE))
    EXECUTE FUNCTION operation_tally_update();
CREATE OR REPLACE TRIGGER operation_tally_truncate
    AFTER TRUNCATE ON orchestrator_operations FOR EACH STATEMENT
    EXECUTE FUNCTION operation_tally_truncate();
"""

#: After the triggers exist (committed): the history already there, counted once. Its own
#: transaction, taking no lock other writers wait on (a full read of the history: seconds at 10M).
BACKFILL = "SELECT operation_tally_resync()"

DOWNGRADE = """
DROP TRIGGER IF EXISTS operation_tally_truncate ON orchestrator_operations;
DROP TRIGGER IF EXISTS operation_tally_update ON orchestrator_operations;
DROP TRIGGER IF EXISTS operation_tally_delete ON orchestrator_operations;
DROP TRIGGER IF EXISTS operation_tally_insert ON orchestrator_operations;
DROP FUNCTION IF EXISTS operation_tally_resync();
DROP FUNCTION IF EXISTS operation_tally_compact();
DROP FUNCTION IF EXISTS operation_tally_truncate();
DROP FUNCTION IF EXISTS operation_tally_update();
DROP FUNCTION IF EXISTS operation_tally_delete();
DROP FUNCTION IF EXISTS operation_tally_insert();
DROP TABLE IF EXISTS operation_tally;
"""


def upgrade() -> None:
    # The triggers' DDL takes a short lock on orchestrator_operations (lock_timeout, retried by
    # orchestrator.migrate); it commits before the backfill, so no insert is missed in between.
    op.execute(UPGRADE)
    with op.get_context().autocommit_block():
        op.execute(BACKFILL)


def downgrade() -> None:
    op.execute(DOWNGRADE)
