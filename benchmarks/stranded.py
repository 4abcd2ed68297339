"""The cycle's stranded-conversations query, by form: `python -m benchmarks.stranded [--chips N]`.

Builds the realistic pool (benchmarks.datagen: N chips, ten conversations each), then leaves open
conversations on some chips that no longer serve, as a router reading a stale `chips` would, and
times each candidate form of "which non-active chips hold open conversations" (EXPLAIN ANALYZE,
server time, median): the forms that read every open row, and what the cycle reads since 0005
(the chips the triggers noted, plus one backstop slice: orchestrator.services.cycle).
"""

from __future__ import annotations

import argparse
import json

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from benchmarks.common import base_urls, engine_for, median, ms, print_table, scratch_database
from benchmarks.datagen import generate_pool, vacuum_analyze
from orchestrator.services import cycle
from orchestrator.store import repository as repo


def _sql(stmt: sa.Select) -> str:
    return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


#: Candidate forms; each returns the ids of non-active chips holding open conversations.
FORMS = {
    "JOIN + GROUP BY over open rows (the cycle's before 0005)": """
SELECT cc.chip_id, count(*) FROM conversation_chips cc JOIN chips c ON c.id = cc.chip_id
 WHERE cc.active AND c.status <> 'active' GROUP BY cc.chip_id ORDER BY cc.chip_id
""",
    "EXISTS from the chips side": """
SELECT c.id FROM chips c
 WHERE c.status <> 'active'
   AND EXISTS (SELECT 1 FROM conversation_chips cc WHERE cc.chip_id = c.id AND cc.active)
""",
    "skip-scan CTE over distinct chip ids of open rows": """
WITH RECURSIVE holders(chip_id) AS (
    (SELECT chip_id FROM conversation_chips WHERE active ORDER BY chip_id LIMIT 1)
  UNION ALL
    SELECT (SELECT cc.chip_id FROM conversation_chips cc
             WHERE cc.active AND cc.chip_id > h.chip_id ORDER BY cc.chip_id LIMIT 1)
      FROM holders h WHERE h.chip_id IS NOT NULL
)
SELECT c.id FROM holders h JOIN chips c ON c.id = h.chip_id WHERE c.status <> 'active'
""",
}

#: Stranded rows added on top of the generated pool: (status, chips, open conversations each).
STRANDED = (("degraded", 40, 25), ("cancelled", 10, 5), ("ready", 5, 3), ("warming", 5, 2))

STRAND = """
INSERT INTO conversation_chips (conversation_id, chip_id, active)
SELECT 'stranded-' || c.id || '-' || k, c.id, true
  FROM (SELECT id FROM chips WHERE status = :status ORDER BY id LIMIT :chips) AS c
 CROSS JOIN generate_series(1, :per_chip) AS k
"""


#: A pool with years of history: 19 of 20 active chips retired (cancelled), their rows closed.
RETIRE = """
WITH retired AS (
    UPDATE chips SET status = 'cancelled', degraded_at = now() - interval '30 days'
     WHERE status = 'active' AND ('x' || substr(md5(id::text), 1, 4))::bit(16)::int % 20 <> 0
    RETURNING id
)
UPDATE conversation_chips SET active = false WHERE chip_id IN (SELECT id FROM retired)
"""


def strand(engine: sa.Engine) -> int:
    """Leave open conversations on chips that no longer serve; returns how many chips."""
    with engine.begin() as conn:
        for status, chips, per_chip in STRANDED:
            conn.execute(sa.text(STRAND), {"status": status, "chips": chips, "per_chip": per_chip})
    vacuum_analyze(engine)
    return sum(chips for _, chips, _ in STRANDED)


def server_ms(engine: sa.Engine, sql: str, runs: int) -> tuple[float, int]:
    """Median server execution time (seconds) of sql and the number of rows it returned."""
    times, rows = [], 0
    with engine.connect() as conn:
        conn.exec_driver_sql(sql).all()  # warm the cache
        for _ in range(runs):
            plan = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql
            ).scalar_one()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            times.append(plan[0]["Execution Time"] / 1000)
            rows = plan[0]["Plan"]["Actual Rows"]
        conn.rollback()
    return median(times), rows


def run(engine: sa.Engine, chips: int, runs: int, *, history: bool = False) -> dict:
    """Figures for one pool size (history: most chips retired, few open rows)."""
    generate_pool(engine, chips)
    if history:
        with engine.begin() as conn:
            conn.execute(sa.text(RETIRE))
    strand(engine)
    with engine.connect() as conn:
        open_rows = conn.execute(
            sa.text("SELECT count(*) FROM conversation_chips WHERE active")
        ).scalar_one()
        total_rows = conn.execute(sa.text("SELECT count(*) FROM conversation_chips")).scalar_one()
        holders = conn.execute(
            sa.text("SELECT count(DISTINCT chip_id) FROM conversation_chips WHERE active")
        ).scalar_one()
        found = len(repo.noted_stranded(conn, 10_000)[0])
        stranded_rows = repo.stranded_conversations(conn)
        slices = cycle.backstop_slices(repo.count_active(conn))
    ours = {
        "the noted chips (the cycle's, 0005)": _sql(repo.noted_stranded_query(10_000)),
        f"one backstop slice of {slices} (the cycle's, 0005)": _sql(
            repo.stranded_in_range_query(500, slices // 2, slices)
        ),
    }
    forms = {name: server_ms(engine, sql, runs) for name, sql in (FORMS | ours).items()}
    print_table(
        f"Stranded-chips query{' (history mix)' if history else ''}, {chips:,} chips, {total_rows:,} conversation rows"
        f" ({open_rows:,} open on {holders:,} chips), median of {runs} (server ms)",
        ["form", "ms", "rows"],
        [[name, ms(t), n] for name, (t, n) in forms.items()],
    )
    print(f"noted chips holding stranded rows: {found}; gauge: {stranded_rows} open conversations")
    return {"chips": chips, "rows": total_rows, "forms": forms, "found": found}


def main(argv: list[str] | None = None) -> int:
    """Build a scratch database, run, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument(
        "--history", action="store_true", help="also a pool where 19 of 20 active chips retired"
    )
    args = parser.parse_args(argv)
    database_url, _ = base_urls()
    with scratch_database(database_url) as url:
        engine = engine_for(url)
        try:
            run(engine, args.chips, args.runs)
            if args.history:
                run(engine, args.chips, args.runs, history=True)
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
