"""Invariant checker: every state the system must never leave behind, one set-based query each.

`chip-orchestrator check` prints the violations (exit 1 if any); the fault tests and the chaos
soak call find_violations() after every step. Each query reads only the database, so the checker
can run against production at any time without changing anything.

Which status changes must have an operations row (kind `missing_operation`): this system writes
`degraded` and `cancelled` only, so those always need one; `warming`, `ready` and `active` are
also written by other services and by the seed's data, so they need one only when the chip's
history began here (it has an `auto_provision` or `promotion_warming_ready` row). `banned` is
set by other services and needs none.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import sqlalchemy as sa

#: Minutes a provisioning intent may outlive its deadline: two reconcile periods (300 s each).
PROVISIONING_GRACE_MINUTES = 10
#: Minutes an outbox message may stay undelivered (delivery runs every 10 s and retries).
OUTBOX_DEADLINE_MINUTES = 10


@dataclass(frozen=True)
class Violation:
    """One broken invariant; chip_id is None when it is about the pool or a message."""

    kind: str
    detail: str
    chip_id: str | None


# A chip's moves into `active` ('up') and out of it ('down'), in commit order. Two 'up' in a row
# is one ready chip promoted twice (the seed's defect 2).
PROMOTED_TWICE = """
WITH moves AS (
    SELECT chip_destino_id AS chip, 'up' AS dir, created_at, id::text AS op
      FROM orchestrator_operations
     WHERE operacao = 'auto_replace' AND sucesso AND chip_destino_id IS NOT NULL
    UNION ALL
    SELECT chip_id, 'up', created_at, id::text FROM orchestrator_operations
     WHERE operacao = 'promotion_ready_active' AND sucesso AND chip_id IS NOT NULL
    UNION ALL
    SELECT chip_id, 'down', created_at, id::text FROM orchestrator_operations
     WHERE operacao IN ('auto_replace', 'demotion', 'migration', 'cancel')
       AND sucesso AND chip_id IS NOT NULL
), ordered AS (
    SELECT chip, dir, lag(dir) OVER (PARTITION BY chip ORDER BY created_at, op) AS before
      FROM moves
)
SELECT chip::text AS chip_id, count(*) AS n FROM ordered
 WHERE dir = 'up' AND before = 'up' GROUP BY chip
"""

REPLACED_TWICE = """
SELECT chip_id::text AS chip_id, count(*) AS n FROM orchestrator_operations
 WHERE operacao = 'auto_replace' AND sucesso AND chip_id IS NOT NULL
 GROUP BY chip_id HAVING count(*) > 1
"""

# A banned chip not yet handled (degraded_at IS NULL) still holds its conversations until the
# next cycle moves them: that is pending work, not a violation.
CONVERSATION_ON_INACTIVE = """
SELECT c.id::text AS chip_id, c.status, count(*) AS n
  FROM conversation_chips cc JOIN chips c ON c.id = cc.chip_id
 WHERE cc.active AND c.status <> 'active'
   AND NOT (c.status = 'banned' AND c.degraded_at IS NULL)
 GROUP BY c.id, c.status
"""

ACTIVE_ABOVE_MAX = """
SELECT count(*) AS active, max(p.producao_max) AS producao_max
  FROM chips c CROSS JOIN pool_config p
 WHERE c.status = 'active'
HAVING count(*) > max(p.producao_max)
"""

MISSING_OPERATION = """
WITH history AS (
    SELECT c.id, c.status,
           bool_or(o.operacao IN ('auto_provision', 'promotion_warming_ready')) AS ours,
           bool_or(o.operacao = 'auto_provision' AND o.sucesso) AS bought,
           bool_or(o.operacao = 'auto_provision' AND NOT o.sucesso) AS purchase_failed,
           bool_or(o.operacao = 'promotion_warming_ready' AND o.sucesso) AS made_ready,
           bool_or(o.operacao = 'promotion_ready_active' AND o.sucesso) AS made_active,
           bool_or(o.operacao = 'auto_replace' AND o.sucesso) AS replaced,
           bool_or(o.operacao = 'cancel' AND o.sucesso) AS cancelled
      FROM chips c LEFT JOIN orchestrator_operations o ON o.chip_id = c.id
     WHERE c.status IN ('warming', 'ready', 'active', 'degraded', 'cancelled')
     GROUP BY c.id, c.status
), destinations AS (
    SELECT DISTINCT chip_destino_id AS id FROM orchestrator_operations
     WHERE operacao = 'auto_replace' AND sucesso AND chip_destino_id IS NOT NULL
)
SELECT h.id::text AS chip_id, h.status FROM history h
 WHERE (h.status = 'degraded' AND NOT coalesce(h.replaced, false))
    OR (h.status = 'cancelled'
        AND NOT coalesce(h.cancelled, false) AND NOT coalesce(h.purchase_failed, false))
    OR (h.status = 'warming' AND EXISTS (
            SELECT 1 FROM chips c WHERE c.id = h.id AND c.provisioning_name IS NOT NULL)
        AND NOT coalesce(h.bought, false))
    OR (h.status = 'ready' AND coalesce(h.ours, false) AND NOT coalesce(h.made_ready, false))
    OR (h.status = 'active' AND coalesce(h.ours, false) AND NOT coalesce(h.made_active, false)
        AND h.id NOT IN (SELECT id FROM destinations))
"""

PROVISIONING_OVERDUE = """
SELECT id::text AS chip_id, provisioning_name, provisioning_deadline FROM chips
 WHERE status = 'provisioning'
   AND coalesce(provisioning_deadline, created_at) < now() - make_interval(mins => :grace)
"""

# Salvy has no idempotency key: one intent (chip) or one name completed twice means two numbers
# paid for one purchase. UNIQUE(salvy_id) rules out two chips holding the same number.
BOUGHT_TWICE = """
SELECT chip_id::text AS chip_id, 'intent' AS by, count(*) AS n FROM orchestrator_operations
 WHERE operacao = 'auto_provision' AND sucesso AND chip_id IS NOT NULL
 GROUP BY chip_id HAVING count(*) > 1
UNION ALL
SELECT min(chip_id::text), 'name ' || (metadata->>'name'), count(DISTINCT chip_id)
  FROM orchestrator_operations
 WHERE operacao = 'auto_provision' AND sucesso AND metadata ? 'name'
 GROUP BY metadata->>'name' HAVING count(DISTINCT chip_id) > 1
UNION ALL
SELECT min(chip_id::text), 'salvy_id ' || (metadata->>'salvy_id'), count(DISTINCT chip_id)
  FROM orchestrator_operations
 WHERE operacao = 'auto_provision' AND sucesso AND metadata ? 'salvy_id'
 GROUP BY metadata->>'salvy_id' HAVING count(DISTINCT chip_id) > 1
"""

# chip_status_tally (kept by triggers) against a count of chips, in the same snapshot. Drift means
# the triggers were bypassed (a restore, session_replication_role = replica): run
# `SELECT chip_status_tally_resync()`.
STATUS_TALLY_DRIFT = """
SELECT status, coalesce(c.n, 0) AS counted, coalesce(t.n, 0) AS tallied
  FROM (SELECT status, count(*) AS n FROM chips GROUP BY status) AS c
  FULL JOIN (SELECT status, sum(n) AS n FROM chip_status_tally GROUP BY status) AS t
 USING (status)
 WHERE coalesce(c.n, 0) <> coalesce(t.n, 0)
"""

# operation_tally (kept by triggers; the metrics read it) against a count of the history, in the
# same snapshot. Drift means the triggers were bypassed: run `SELECT operation_tally_resync()`.
OPERATION_TALLY_DRIFT = """
SELECT operacao, sucesso, coalesce(c.n, 0) AS counted, coalesce(t.n, 0) AS tallied
  FROM (SELECT operacao, sucesso IS NOT FALSE AS sucesso, count(*) AS n
          FROM orchestrator_operations GROUP BY 1, 2) AS c
  FULL JOIN (SELECT operacao, sucesso, sum(n) AS n FROM operation_tally GROUP BY 1, 2) AS t
 USING (operacao, sucesso)
 WHERE coalesce(c.n, 0) <> coalesce(t.n, 0)
"""

# Every chip holding open conversations while not active must be noted for the cycle (the
# triggers note it; the cycle's backstop notes what they could not see).
STRANDED_UNNOTED = """
SELECT c.id::text AS chip_id, c.status, count(*) AS n
  FROM conversation_chips cc JOIN chips c ON c.id = cc.chip_id
 WHERE cc.active AND c.status <> 'active'
   AND NOT EXISTS (SELECT 1 FROM stranded_chip_events e WHERE e.chip_id = c.id)
 GROUP BY c.id, c.status
"""

OUTBOX_STALE = """
SELECT id, canal, attempts, created_at FROM notification_outbox
 WHERE delivered_at IS NULL AND created_at < now() - make_interval(mins => :deadline)
 ORDER BY id
"""


def _rows(conn: sa.Connection, sql: str, **params: object) -> list[sa.RowMapping]:
    return list(conn.execute(sa.text(sql), params).mappings())


def find_violations(
    engine: sa.Engine,
    *,
    provisioning_grace_minutes: int = PROVISIONING_GRACE_MINUTES,
    outbox_deadline_minutes: int = OUTBOX_DEADLINE_MINUTES,
) -> list[Violation]:
    """Every violation in the database, read in one repeatable-read snapshot."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        found = [
            Violation("promoted_twice", f"promoted to active {r['n'] + 1} times", r["chip_id"])
            for r in _rows(conn, PROMOTED_TWICE)
        ]
        found += [
            Violation("replaced_twice", f"{r['n']} successful auto_replace", r["chip_id"])
            for r in _rows(conn, REPLACED_TWICE)
        ]
        found += [
            Violation(
                "conversation_on_inactive_chip", f"{r['n']} on a {r['status']} chip", r["chip_id"]
            )
            for r in _rows(conn, CONVERSATION_ON_INACTIVE)
        ]
        found += [
            Violation(
                "active_above_max", f"{r['active']} active > producao_max {r['producao_max']}", None
            )
            for r in _rows(conn, ACTIVE_ABOVE_MAX)
        ]
        found += [
            Violation("missing_operation", f"{r['status']} without its operation row", r["chip_id"])
            for r in _rows(conn, MISSING_OPERATION)
        ]
        found += [
            Violation(
                "provisioning_overdue",
                f"{r['provisioning_name']} past deadline {r['provisioning_deadline']}",
                r["chip_id"],
            )
            for r in _rows(conn, PROVISIONING_OVERDUE, grace=provisioning_grace_minutes)
        ]
        found += [
            Violation("bought_twice", f"{r['by']}: {r['n']} purchases", r["chip_id"])
            for r in _rows(conn, BOUGHT_TWICE)
        ]
        found += [
            Violation(
                "status_tally_drift",
                f"{r['status']}: {r['tallied']} tallied, {r['counted']} counted",
                None,
            )
            for r in _rows(conn, STATUS_TALLY_DRIFT)
        ]
        found += [
            Violation(
                "operation_tally_drift",
                f"{r['operacao']} sucesso={r['sucesso']}: {r['tallied']} tallied,"
                f" {r['counted']} counted",
                None,
            )
            for r in _rows(conn, OPERATION_TALLY_DRIFT)
        ]
        found += [
            Violation(
                "stranded_unnoted", f"{r['n']} open on a {r['status']} chip, no note", r["chip_id"]
            )
            for r in _rows(conn, STRANDED_UNNOTED)
        ]
        found += [
            Violation(
                "outbox_stale",
                f"message {r['id']} ({r['canal']}) undelivered since {r['created_at']}, "
                f"{r['attempts']} attempts",
                None,
            )
            for r in _rows(conn, OUTBOX_STALE, deadline=outbox_deadline_minutes)
        ]
        conn.rollback()
    return found


def main(engine: sa.Engine, as_json: bool = False) -> int:
    """Print the violations (a table, or JSON); 0 when clean, 1 when any."""
    found = find_violations(engine)
    if as_json:
        print(json.dumps([asdict(v) for v in found], indent=2, ensure_ascii=False))
    else:
        _print_table(found)
    return 1 if found else 0


def _print_table(found: list[Violation]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not found:
        console.print("[bold green]no invariant violations[/]")
        return
    table = Table(title=f"[bold red]{len(found)} invariant violation(s)[/]")
    for column in ("kind", "chip", "detail"):
        table.add_column(column)
    for v in found:
        table.add_row(v.kind, v.chip_id or "-", v.detail)
    console.print(table)
