"""Counts that stay true: when each status's cached count was last checked against `chips`.

Revision ID: 0008_tally_checks
Revises: 0007_flaps
Create Date: 2026-12-30

`chip_status_tally` (0005) is kept by triggers, and rows can change without firing them: a
restore with triggers disabled, `session_replication_role = replica` (data imports, logical
replication), `ALTER TABLE chips DISABLE TRIGGER`. The cycle recounts a few statuses each time,
and a promotion recounts `active`, through `chip_status_tally_check(statuses)`: one statement
recounts, compares with the cached sums in the same snapshot, appends a correcting delta where
they differ and notes the check in `chip_status_tally_checks` (per status: when it was last
checked, the last drift found, how many corrections), which the cycle's rotation and the metrics
read. A status change committed meanwhile is in both the recount and the cached sum or in
neither, so a correction never counts a concurrent writer twice.

The function runs as its owner (SECURITY DEFINER), like the tally's triggers: the workers' role
needs no write privilege on the tally. Safe to run twice.
"""

from alembic import op

revision = "0008_tally_checks"
down_revision = "0007_flaps"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE IF NOT EXISTS chip_status_tally_checks (
    status           text PRIMARY KEY,
    checked_at       timestamptz NOT NULL DEFAULT now(),
    last_drift       bigint NOT NULL DEFAULT 0,
    drift_found_at   timestamptz,
    corrections      bigint NOT NULL DEFAULT 0,
    chips_corrected  bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE chip_status_tally_checks IS
    'Ultima verificacao da contagem por status contra chips (deriva corrigida)';

-- Recount `statuses` in chips, correct the tally where it drifted, note the check; returns the
-- statuses that drifted with the recount and the cached sum it replaced.
CREATE OR REPLACE FUNCTION chip_status_tally_check(statuses text[])
RETURNS TABLE (status text, counted bigint, cached bigint)
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
WITH wanted AS (
    SELECT DISTINCT unnest(statuses) AS status
), truth AS (
    SELECT w.status, (SELECT count(*) FROM chips c WHERE c.status = w.status) AS n FROM wanted w
), tallied AS (
    SELECT t.status, sum(t.n)::bigint AS n FROM chip_status_tally t
     WHERE t.status = ANY(statuses) GROUP BY t.status
), drift AS (
    SELECT u.status, u.n AS counted, coalesce(c.n, 0) AS cached, u.n - coalesce(c.n, 0) AS d
      FROM truth u LEFT JOIN tallied c USING (status)
), fixed AS (
    INSERT INTO chip_status_tally (status, n) SELECT d.status, d.d FROM drift d WHERE d.d <> 0
), noted AS (
    INSERT INTO chip_status_tally_checks AS k
           (status, checked_at, last_drift, drift_found_at, corrections, chips_corrected)
    SELECT d.status, now(), d.d, CASE WHEN d.d <> 0 THEN now() END, (d.d <> 0)::int, abs(d.d)
      FROM drift d
    ON CONFLICT ON CONSTRAINT chip_status_tally_checks_pkey DO UPDATE
       SET checked_at = excluded.checked_at,
           last_drift = excluded.last_drift,
           drift_found_at = coalesce(excluded.drift_found_at, k.drift_found_at),
           corrections = k.corrections + excluded.corrections,
           chips_corrected = k.chips_corrected + excluded.chips_corrected
)
SELECT d.status, d.counted, d.cached FROM drift d WHERE d.d <> 0 ORDER BY d.status
$$;
"""

DOWNGRADE = """
DROP FUNCTION IF EXISTS chip_status_tally_check(text[]);
DROP TABLE IF EXISTS chip_status_tally_checks;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
