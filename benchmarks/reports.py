"""`report` and `history` on a pool with a year of history: `python -m benchmarks.reports`.

For each size, a pool of chips (most retired, as after years) and --ops-per-chip operations per
chip spread over the last 365 days (replacements with reasons and conversations moved,
purchases, cancellations of the cancelled chips, promotions, migrations). Prints the median
time of the last full month's report and of one chip's history, and the plan of the month's
main query (which index it used).
"""

from __future__ import annotations

import argparse
import random

import sqlalchemy as sa

from benchmarks.common import (
    base_urls,
    describe_machine,
    engine_for,
    median,
    ms,
    print_table,
    scratch_database,
    timed,
)
from benchmarks.datagen import generate_pool, vacuum_analyze
from orchestrator.domain.report import parse_month
from orchestrator.services import reports

#: Chips per run.
SIZES = (10_000, 100_000)

OPERATIONS = """
INSERT INTO orchestrator_operations (operacao, chip_id, chip_destino_id, motivo, metadata,
                                     sucesso, created_at)
SELECT op, c.id, NULL, 'benchmark',
       CASE WHEN op IN ('auto_replace', 'migration')
            THEN jsonb_build_object('reason', (ARRAY['banned', 'low_trust', 'disconnected',
                                    'flapping'])[1 + (g % 4)], 'conversas_migradas', g % 13)
            ELSE '{}'::jsonb END,
       g % 50 <> 0,
       now() - (random() * interval '365 days')
  FROM (SELECT id, row_number() OVER () AS n FROM chips) AS c
  CROSS JOIN LATERAL generate_series(1, :per_chip) AS s(k)
  CROSS JOIN LATERAL (SELECT c.n * 100 + s.k AS g) AS gg
  CROSS JOIN LATERAL (SELECT (ARRAY['auto_replace', 'auto_provision', 'promotion_warming_ready',
                      'promotion_ready_active', 'migration'])[1 + (gg.g % 5)] AS op) AS o
"""
CANCELS = """
INSERT INTO orchestrator_operations (operacao, chip_id, motivo, metadata, created_at)
SELECT 'cancel', id, 'benchmark', '{}'::jsonb, now() - (random() * interval '365 days')
  FROM chips WHERE status = 'cancelled'
"""
PLAN_OF_MONTH = (
    "EXPLAIN SELECT operacao, count(*) FROM orchestrator_operations"
    " WHERE operacao IN ('auto_provision', 'cancel', 'auto_replace', 'migration')"
    " AND created_at >= :start AND created_at < :end GROUP BY operacao"
)


def add_history(engine: sa.Engine, per_chip: int) -> int:
    """A year of operations for every chip; returns how many rows orchestrator_operations has."""
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
        conn.execute(sa.text(OPERATIONS), {"per_chip": per_chip})
        conn.execute(sa.text(CANCELS))
    vacuum_analyze(engine, ("chips", "orchestrator_operations"))
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM orchestrator_operations")).scalar_one()


def run(engine: sa.Engine, chips: int, per_chip: int, runs: int) -> list[object]:
    """One size: generate, then time the report and histories."""
    generate_pool(engine, chips, per_chip=0, mix="scale")
    rows = add_history(engine, per_chip)
    with engine.connect() as conn:
        now = conn.execute(sa.select(sa.func.now())).scalar_one()
        ids = list(
            conn.execute(
                sa.text("SELECT id FROM chips ORDER BY random() LIMIT :n"), {"n": runs}
            ).scalars()
        )
    last = parse_month(None, now)
    previous = f"{last.year - (last.month == 1)}-{(last.month - 2) % 12 + 1:02d}"
    month = [timed(lambda: reports.month_report(engine, previous))[0] for _ in range(runs)]
    history = [timed(lambda i=i: reports.chip_history(engine, str(i)))[0] for i in ids]
    span = parse_month(previous, now)
    with engine.connect() as conn:
        plan = (
            conn.execute(sa.text(PLAN_OF_MONTH), {"start": span.start, "end": span.end})
            .scalars()
            .all()
        )
    index = next((line.split(" using ")[1].split()[0] for line in plan if " using " in line), "-")
    return [f"{chips:,}", f"{rows:,}", ms(median(month)), ms(median(history)), index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--ops-per-chip", type=int, default=10)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    random.seed(1)
    database_url, _ = base_urls()
    with scratch_database(database_url) as url:
        engine = engine_for(url)
        print(describe_machine(engine))
        rows = [run(engine, n, args.ops_per_chip, args.runs) for n in args.sizes]
        engine.dispose()
    print_rows(rows, args.runs)


def print_rows(rows: list[list[object]], runs: int) -> None:
    """The table of run()'s rows."""
    print_table(
        f"report (last full month) and history (one chip), median of {runs}",
        ["chips", "operations", "report ms", "history ms", "month query index"],
        rows,
    )


if __name__ == "__main__":
    main()
