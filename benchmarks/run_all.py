"""Run every benchmark and print the figures: `python -m benchmarks.run_all [--quick]`.

Needs DATABASE_URL / REDIS_URL (or the embedded servers): a scratch database is created on that
server and dropped afterwards, and a free Redis DB number is used and flushed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import sqlalchemy as sa

from benchmarks import (
    capacity,
    history_costs,
    memory,
    planning,
    replace,
    reports,
    scale,
    webhook_frameworks,
    webhooks,
    workers,
)
from benchmarks.common import (
    base_urls,
    describe_machine,
    engine_for,
    free_redis_db,
    print_table,
    scratch_database,
)
from benchmarks.datagen import generate_pool, vacuum_analyze


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is."""

    planning: tuple[int, ...]
    planning_runs: int
    worker_pool: int
    latency_bans: int
    throughput_bans: int
    moved: int
    moved_runs: int
    scale: tuple[int, ...]
    scale_runs: int


FULL = Sizes((1_000, 10_000, 100_000), 9, 5_000, 200, 1_000, 100_000, 3, scale.SIZES, 3)
QUICK = Sizes((1_000, 10_000, 100_000), 3, 5_000, 50, 1_000, 100_000, 1, (10_000,), 1)

#: Invariants counted when orchestrator.checker is not available.
OBVIOUS_VIOLATIONS = """
SELECT (SELECT count(*) FROM (
          SELECT chip FROM (
            SELECT chip_destino_id AS chip FROM orchestrator_operations
             WHERE operacao = 'auto_replace' AND chip_destino_id IS NOT NULL
            UNION ALL
            SELECT chip_id FROM orchestrator_operations WHERE operacao = 'promotion_ready_active'
          ) AS promoted GROUP BY chip HAVING count(*) > 1) AS twice)
     + (SELECT count(DISTINCT cc.chip_id)
          FROM conversation_chips cc JOIN chips c ON c.id = cc.chip_id
         WHERE cc.active AND c.status <> 'active'
           AND NOT (c.status = 'banned' AND c.degraded_at IS NULL))
"""


def count_violations(engine: sa.Engine) -> tuple[int, str]:
    """The invariant checker's count (orchestrator.checker), or the obvious invariants."""
    try:
        from orchestrator.ops.checker import find_violations
    except ImportError:
        with engine.connect() as conn:
            return conn.execute(sa.text(OBVIOUS_VIOLATIONS)).scalar_one(), "obvious invariants"
    return len(find_violations(engine)), "orchestrator.checker"


def worker_benchmarks(
    url: str, redis_url: str, engine: sa.Engine, sizes: Sizes, extra: list[str], worker_app: str
) -> dict:
    """Moving conversations in-process, then latency, throughput and memory with a real worker."""
    generate_pool(engine, sizes.worker_pool, mix="serving")
    results = {"moving": replace.moving_conversations(engine, sizes.moved, sizes.moved_runs)}
    vacuum_analyze(engine)
    before, checker = count_violations(engine)
    app = workers.client(redis_url)
    try:
        with workers.running_worker(url, redis_url, app, 4, extra, worker_app) as worker:
            time.sleep(1)
            memory = [("started", worker.rss_mib())]
            results["latency"] = replace.latency(engine, app, sizes.latency_bans)
            memory.append((f"after {sizes.latency_bans} bans one by one", worker.rss_mib()))
            results["throughput"] = replace.throughput(engine, redis_url, sizes.throughput_bans)
            memory.append((f"after {sizes.throughput_bans} bans at once", worker.rss_mib()))
    finally:
        app.close()
    after, checker = count_violations(engine)
    results["violations"] = {"before": before, "after": after, "by": checker}
    replace.print_throughput(results["throughput"], after, checker)
    print_table(
        "Worker memory (RSS of the 4 prefork children, MiB)",
        ["when", "per child", "total"],
        [[when, ", ".join(f"{r:.1f}" for r in rss), f"{sum(rss):.1f}"] for when, rss in memory],
    )
    results["memory"] = memory
    return results


def main(argv: list[str] | None = None) -> int:
    """Run everything; print the machine and one table per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    parser.add_argument(
        "--only",
        choices=[
            "planning",
            "workers",
            "scale",
            "memory",
            "webhooks",
            "capacity",
            "reports",
            "costs",
        ],
        help="run one group (scale: 10k/100k/1M chips, now vs before; costs: metrics scrape and"
        " migrate_conversations on a long history, now vs before; memory: the 10-minute"
        " worker memory run, never in the default run)",
    )
    parser.add_argument("--worker-arg", action="append", default=[], help="extra worker option")
    parser.add_argument("--worker-app", default="tasks", help="Celery app the worker runs (-A)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    database_url, redis_base = base_urls()
    started = time.monotonic()
    results: dict = {}
    with scratch_database(database_url) as url, free_redis_db(redis_base) as redis_url:
        engine = engine_for(url)
        try:
            results["machine"] = describe_machine(engine)
            print_table("Machine", ["", ""], list(results["machine"].items()))
            if args.only in (None, "planning"):
                results["planning"] = planning.run(
                    engine, list(sizes.planning), sizes.planning_runs
                )
            if args.only in (None, "workers"):
                results["workers"] = worker_benchmarks(
                    url, redis_url, engine, sizes, args.worker_arg, args.worker_app
                )
            if args.only in (None, "scale"):
                results["scale"] = scale.run(
                    url, redis_url, engine, list(sizes.scale), sizes.scale_runs
                )
            if args.only in (None, "webhooks"):
                results["webhooks"] = webhooks.run(
                    url, redis_url, engine, **webhooks.sizes(quick=args.quick)
                )
                webhook_frameworks.main(runs=3 if args.quick else 5)
            if args.only in (None, "capacity"):
                chips, years = (20_000, 0.5) if args.quick else (200_000, 2.0)
                results["capacity"] = capacity.run(engine, chips, years, sizes.planning_runs)
            if args.only in (None, "reports"):
                report_sizes = (10_000,) if args.quick else reports.SIZES
                rows = [reports.run(engine, n, 10, sizes.planning_runs) for n in report_sizes]
                reports.print_rows(rows, sizes.planning_runs)
                results["reports"] = rows
            if args.only in (None, "costs"):  # 1M chips / 10M operations: history_costs --large
                chips, runs = (5_000, 3) if args.quick else (100_000, 5)
                results["costs"] = history_costs.run(engine, chips, 10, runs)
            if args.only == "memory":
                results["memory"] = memory.run(
                    url, redis_url, engine, memory.MINUTES, memory.RATE, memory.CHIPS
                )
                memory.print_report(results["memory"])
        finally:
            engine.dispose()
    print(f"\nbenchmarks took {time.monotonic() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
