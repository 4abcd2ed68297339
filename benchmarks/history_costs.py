"""Costs that grew with history: a metrics scrape and migrate_conversations, now and before.

`python -m benchmarks.history_costs [--quick | --large] [--chips N] [--ops-per-chip K] [--runs R]`,
or `run_all --only costs`. The default is 100k chips and 1M operations; `--large` is 1M chips and
10M operations (~20 min and ~6 GB of disk here); `--quick` is 5,000 chips (the smoke test).

The pool is the `scale` mix of benchmarks/datagen.py (10% active, ten conversations per chip, open
on the active ones), with `--ops-per-chip` operations per chip spread over a year plus a cancel
per cancelled chip (benchmarks/reports.py). "Before" runs today's code with the two previous
queries swapped in (their text is kept below): the scrape's `GROUP BY` over every operation, and
the least-loaded pick that counted every healthy active chip's conversations. Runs alternate
between now and before, in this process, on the same data.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping

import sqlalchemy as sa

from benchmarks import reports
from benchmarks.common import (
    QueryClock,
    base_urls,
    describe_machine,
    engine_for,
    median,
    ms,
    print_table,
    scratch_database,
    timed,
)
from benchmarks.datagen import add_chip_with_conversations, generate_pool
from orchestrator.domain.pool import PoolConfig
from orchestrator.ops import metrics_read
from orchestrator.services import conversations
from orchestrator.store import repository

#: The scrape's operations query before 0008: every row of the history, grouped.
OPERATIONS_BEFORE = """
SELECT operacao, sucesso, count(*) FROM orchestrator_operations GROUP BY operacao, sucesso"""
#: least_loaded_healthy_active before: every healthy active chip ordered by a correlated count.
LEAST_LOADED_BEFORE = """
SELECT chips.* FROM chips
 WHERE chips.status = 'active' AND chips.evolution_connected
   AND chips.trust_score >= :threshold AND chips.id != CAST(:exclude AS uuid)
 ORDER BY (SELECT count(*) FROM conversation_chips
            WHERE conversation_chips.chip_id = chips.id AND conversation_chips.active),
          chips.trust_score DESC
 LIMIT 1 FOR UPDATE OF chips SKIP LOCKED"""
#: Open conversations on each stranded chip the benchmark asks to migrate.
STRANDED_ROWS = 10


def operation_counts_before(conn: sa.Connection) -> dict[tuple[str, bool], int]:
    """The previous read: the whole history grouped (NULL sucesso counted as success)."""
    found: dict[tuple[str, bool], int] = {}
    for operacao, sucesso, n in conn.execute(sa.text(OPERATIONS_BEFORE)):
        key = (operacao, sucesso is not False)
        found[key] = found.get(key, 0) + n
    return found


def least_loaded_before(conn: sa.Connection, config: PoolConfig, exclude: str) -> Mapping | None:
    """The previous pick: a correlated count for every healthy active chip."""
    params = {"threshold": config.trust_degraded_threshold, "exclude": exclude}
    return conn.execute(sa.text(LEAST_LOADED_BEFORE), params).mappings().first()


@contextlib.contextmanager
def before() -> Iterator[None]:
    """Today's code with the two previous queries, inside the block (this process only)."""
    saved = repository.operation_counts, repository.least_loaded_healthy_active
    repository.operation_counts = operation_counts_before
    repository.least_loaded_healthy_active = least_loaded_before
    try:
        yield
    finally:
        repository.operation_counts, repository.least_loaded_healthy_active = saved


def variant(name: str) -> contextlib.AbstractContextManager[None]:
    """`before` or `now` (nothing swapped)."""
    return before() if name == "before" else contextlib.nullcontext()


def build(engine: sa.Engine, chips: int, ops_per_chip: int) -> dict:
    """The pool, its history, the tally folded; returns the sizes and what the backfill costs."""
    generate_pool(engine, chips, per_chip=10, mix="scale")
    operations = reports.add_history(engine, ops_per_chip)
    resync, _ = timed(lambda: _autocommit(engine, "SELECT operation_tally_resync()"))
    with engine.begin() as conn:
        repository.compact_operation_tally(conn)
        open_rows = conn.execute(
            sa.text("SELECT count(*) FROM conversation_chips WHERE active")
        ).scalar_one()
        active = repository.count_active(conn)
    return {
        "chips": chips,
        "operations": operations,
        "open_conversations": open_rows,
        "active_chips": active,
        "resync_seconds": resync,
    }


def _autocommit(engine: sa.Engine, sql: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SET statement_timeout = 0"))
        conn.execute(sa.text(sql))


def scrape(engine: sa.Engine, name: str) -> tuple[float, dict]:
    """One metrics read of the database (what `chip-orchestrator metrics` does per interval)."""
    with variant(name):
        took, reading = timed(lambda: metrics_read.read_database(engine))
    return took, reading.operations


def migrate_one(engine: sa.Engine, name: str) -> tuple[float, dict]:
    """migrate_conversations of a fresh stranded chip (no replacement: the least-loaded path)."""
    chip = add_chip_with_conversations(engine, "degraded", 50, STRANDED_ROWS)
    with variant(name):
        took, result = timed(lambda: conversations.migrate_conversations(engine, chip))
    with engine.connect() as conn:
        load = conn.execute(
            sa.text("SELECT count(*) FROM conversation_chips WHERE chip_id = :c AND active"),
            {"c": result.get("target_id")},
        ).scalar_one()
    return took, {**result, "target_load_after": load}


def _loops(plan: dict, relation: str) -> int:
    """Times a plan scanned `relation` (or an index on it), summed over the tree."""
    own = plan["Actual Loops"] if plan.get("Relation Name") == relation else 0
    own = own or (plan["Actual Loops"] if relation in plan.get("Index Name", "") else 0)
    return own + sum(_loops(child, relation) for child in plan.get("Plans", []))


def pick_probes(engine: sa.Engine, name: str) -> int:
    """How many times one least-loaded pick scans conversation_chips (EXPLAIN ANALYZE)."""
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, parameters))

    with engine.connect() as conn, variant(name):
        config = repository.load_config(conn)
        sa.event.listen(conn, "before_cursor_execute", record)
        repository.least_loaded_healthy_active(conn, config, exclude=str(uuid.uuid4()))
        sa.event.remove(conn, "before_cursor_execute", record)
        [(statement, parameters)] = sent
        plan = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {statement}", parameters
        ).scalar_one()
        conn.rollback()
    return _loops(plan[0]["Plan"], "conversation_chips")


def scrape_breakdown(engine: sa.Engine, runs: int) -> dict[str, float]:
    """Median client time of each statement of today's scrape, slowest first (ms)."""
    clock = QueryClock().attach(engine)
    per: dict[str, list[float]] = {}
    try:
        for _ in range(runs):
            clock.reset()
            scrape(engine, "now")
            for statement, _params, took in clock.statements:
                name = " ".join(statement.split())[:60]
                per.setdefault(name, []).append(took * 1000)
    finally:
        clock.detach(engine)
    return dict(sorted(((k, median(v)) for k, v in per.items()), key=lambda kv: -kv[1]))


def insert_cost(engine: sa.Engine, rounds: int = 5, per_round: int = 200) -> dict[str, float]:
    """p50 ms of one operation INSERT statement (as a swap writes it, commit excluded: its fsync
    would hide the difference) with the tally's trigger and without it, alternating rounds."""
    times: dict[str, list[float]] = {"with trigger": [], "without": []}
    insert = sa.text(
        "INSERT INTO orchestrator_operations (operacao, chip_id, motivo, metadata, sucesso)"
        " VALUES ('auto_replace', NULL, 'bench', '{}', true)"
    )
    for _ in range(rounds):
        for name, action in (("without", "DISABLE"), ("with trigger", "ENABLE")):
            with engine.connect() as conn:
                conn.execute(
                    sa.text(
                        f"ALTER TABLE orchestrator_operations {action} TRIGGER operation_tally_insert"
                    )
                )
                for _ in range(per_round):
                    took, _ = timed(lambda c=conn: c.execute(insert))
                    times[name].append(took * 1000)
                conn.rollback()  # the ALTER and the rows: nothing is left behind
    return {name: median(v) for name, v in times.items()}


def unfolded_deltas(engine: sa.Engine, n: int) -> None:
    """n operations inserted one statement each (n tally deltas, as between two cycles)."""
    with engine.begin() as conn:
        for _ in range(n):
            conn.execute(
                sa.text(
                    "INSERT INTO orchestrator_operations (operacao, sucesso) VALUES (:o, true)"
                ),
                {"o": "auto_replace"},
            )


def measure(engine: sa.Engine, runs: int, deltas: int) -> dict:
    """Scrapes and migrations, alternating now and before; then a scrape over unfolded deltas."""
    times: dict[str, dict[str, list[float]]] = {
        k: {"now": [], "before": []} for k in ("scrape", "migrate")
    }
    # Back to back, nothing written between: the exported figures must be the same both ways.
    readings = {name: scrape(engine, name)[1] for name in ("before", "now")}
    moves: dict[str, list[dict]] = {"now": [], "before": []}
    for _ in range(runs):
        for name in ("before", "now"):
            took, _reading = scrape(engine, name)
            times["scrape"][name].append(took)
            took, result = migrate_one(engine, name)
            times["migrate"][name].append(took)
            moves[name].append(result)
    probes = {name: pick_probes(engine, name) for name in ("before", "now")}
    breakdown = scrape_breakdown(engine, runs)
    inserts = insert_cost(engine)
    unfolded_deltas(engine, deltas)
    unfolded = [scrape(engine, "now")[0] for _ in range(runs)]
    with engine.begin() as conn:
        repository.compact_operation_tally(conn)
    return {
        "scrape": {k: median(v) for k, v in times["scrape"].items()},
        "migrate": {k: median(v) for k, v in times["migrate"].items()},
        "scrape_unfolded": {"deltas": deltas, "now": median(unfolded)},
        "same_operation_counts": readings["now"] == readings["before"],
        "pick_probes": probes,
        "scrape_statements_ms": breakdown,
        "insert_ms": inserts,
        "moves": moves,
    }


def run(engine: sa.Engine, chips: int, ops_per_chip: int, runs: int) -> dict:
    """Build, measure, print."""
    sizes = build(engine, chips, ops_per_chip)
    figures = measure(engine, runs, deltas=1_000)
    out = {"sizes": sizes, **figures}
    print_figures(out, runs)
    return out


def print_figures(out: dict, runs: int) -> None:
    """The table docs/benchmarks.md quotes."""
    s, scrape_ms, migrate_ms = out["sizes"], out["scrape"], out["migrate"]
    loads = {k: sorted({m["target_load_after"] for m in v}) for k, v in out["moves"].items()}
    rows = [
        [
            "metrics scrape (read_database)",
            ms(scrape_ms["before"]),
            ms(scrape_ms["now"]),
            f"{scrape_ms['before'] / scrape_ms['now']:.0f}x",
        ],
        [
            f"migrate_conversations ({STRANDED_ROWS} rows, least-loaded target)",
            ms(migrate_ms["before"]),
            ms(migrate_ms["now"]),
            f"{migrate_ms['before'] / migrate_ms['now']:.0f}x",
        ],
    ]
    print_table(
        f"{s['chips']:,} chips ({s['active_chips']:,} active), {s['operations']:,} operations,"
        f" {s['open_conversations']:,} open conversations; medians of {runs}, ms",
        ["figure", "before", "now", "before / now"],
        rows,
    )
    print(
        f"scrape with {out['scrape_unfolded']['deltas']:,} unfolded tally deltas:"
        f" {ms(out['scrape_unfolded']['now'])} ms; operation counts identical now and before:"
        f" {out['same_operation_counts']}; loads of the chosen targets after the move:"
        f" now {loads['now']}, before {loads['before']}; conversation_chips scans per pick:"
        f" now {out['pick_probes']['now']:,}, before {out['pick_probes']['before']:,};"
        f" operation_tally_resync():"
        f" {ms(s['resync_seconds'])} ms",
        flush=True,
    )
    cost = out["insert_ms"]
    print(
        f"one operation INSERT statement, p50: {cost['with trigger']:.2f} ms with the tally's"
        f" trigger, {cost['without']:.2f} ms without",
        flush=True,
    )
    slowest = list(out["scrape_statements_ms"].items())[:3]
    print(
        "slowest statements of today's scrape (ms): "
        + "; ".join(f"{k}: {v:.2f}" for k, v in slowest)
    )


def main(argv: list[str] | None = None) -> int:
    """A scratch database, the machine, then the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="5,000 chips, 3 runs")
    size.add_argument("--large", action="store_true", help="1M chips, 10M operations")
    parser.add_argument("--chips", type=int, default=100_000)
    parser.add_argument("--ops-per-chip", type=int, default=10)
    parser.add_argument("--runs", type=int, default=None, help="default 5 (--quick: 3)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    chips = 5_000 if args.quick else 1_000_000 if args.large else args.chips
    runs = args.runs or (3 if args.quick else 5)
    database_url, _ = base_urls()
    with scratch_database(database_url) as url:
        engine = engine_for(url)
        try:
            print_table("Machine", ["", ""], list(describe_machine(engine).items()))
            out = run(engine, chips, args.ops_per_chip, runs)
        finally:
            engine.dispose()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
