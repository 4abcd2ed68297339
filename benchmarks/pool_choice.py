"""What the prefork pool costs a swap: one `-c 4` prefork worker vs N `-P solo` workers, real swaps.

`python -m benchmarks.pool_choice --url postgresql+psycopg://.../chiporch_pool_1000000 [--solo 3]`
`python -m benchmarks.pool_choice [--size 100000] [--keep]`

The production worker is prefork (`-c 4`): a main process that talks to the broker and four
children that run tasks, with a pipe between them; it is what enforces the hard time limit
and requeues a task at once when its child dies. `-P solo` runs the task in the process that
took it from the broker: no children, no pipes, one task at a time per process, so N of them
on one queue for concurrency. Each kind consumes a queue of its own; they take bursts of
bans in turn (runs alternating, each kind warmed first) and are measured as
benchmarks.swap_floor measures: CPU per swap of every worker process, the PostgreSQL backends
and the Redis server, and swaps/s. A measurement for ops choosing a pool; compose runs prefork.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import redis

from benchmarks import scale, workers
from benchmarks.common import (
    base_urls,
    describe_machine,
    engine_for,
    free_redis_db,
    median,
    print_table,
)
from benchmarks.datagen import SWAP_TABLES, vacuum_analyze
from benchmarks.swap_floor import pool, redis_cpu


def measure(url: str, redis_url: str, solo: int, runs: int, burst: int) -> dict:
    """Runs alternating between the prefork worker and the solo workers: per-run figures."""
    engine, app = engine_for(url), workers.client(redis_url)
    rclient = redis.Redis.from_url(redis_url)
    out: dict[str, dict[str, list[float]]] = {"prefork -c 4": {}, f"solo x {solo}": {}}
    try:
        with contextlib.ExitStack() as stack:
            prefork = [
                stack.enter_context(
                    workers.running_worker(url, redis_url, app, 4, queues="bench_prefork")
                )
            ]
            solos = [
                stack.enter_context(
                    workers.running_worker(
                        url, redis_url, app, 1, extra=["-P", "solo"], queues="bench_solo"
                    )
                )
                for _ in range(solo)
            ]
            kinds = {
                "prefork -c 4": (prefork, "bench_prefork"),
                f"solo x {solo}": (solos, "bench_solo"),
            }
            for _, queue in kinds.values():
                scale.warm(engine, app, redis_url, queue, bans=8)
            vacuum_analyze(engine, tables=SWAP_TABLES)
            for run in range(runs):
                order = list(kinds) if run % 2 == 0 else list(kinds)[::-1]
                for kind in order:
                    running, queue = kinds[kind]
                    ids = scale.victims(engine, burst)
                    cpu, rcpu = sum(w.cpu_seconds() for w in running), redis_cpu(rclient)
                    result = scale.burst(engine, redis_url, queue, ids)
                    cpu = sum(w.cpu_seconds() for w in running) - cpu
                    rcpu = redis_cpu(rclient) - rcpu
                    swaps = max(result["statuses"]["replaced"], 1)
                    assert result["distinct_replacements"] == result["statuses"]["replaced"]
                    scale.restore(engine, ids)
                    vacuum_analyze(engine, tables=SWAP_TABLES)
                    figures = {
                        "workers_cpu_ms": cpu * 1000 / swaps,
                        "postgres_cpu_ms": result["postgres_cpu_ms"],
                        "redis_cpu_ms": rcpu * 1000 / swaps,
                        "rate": result["per_second"],
                        "replaced": result["statuses"]["replaced"],
                    }
                    figures["total_cpu_ms"] = (
                        figures["workers_cpu_ms"]
                        + figures["postgres_cpu_ms"]
                        + figures["redis_cpu_ms"]
                    )
                    for key, value in figures.items():
                        out[kind].setdefault(key, []).append(value)
    finally:
        app.close()
        rclient.close()
        engine.dispose()
    return out


def print_figures(chips: int, out: dict) -> None:
    """Per kind: CPU per swap end to end and its parts, swaps/s (medians, then each run)."""
    print_table(
        f"{chips:,} chips: prefork or solo, bursts of bans (medians; each run)",
        ["workers", "CPU ms/swap end to end", "workers", "PostgreSQL", "Redis", "swaps/s"],
        [
            [
                kind,
                f"{median(f['total_cpu_ms']):.1f} ({', '.join(f'{x:.1f}' for x in f['total_cpu_ms'])})",
                f"{median(f['workers_cpu_ms']):.1f}",
                f"{median(f['postgres_cpu_ms']):.1f}",
                f"{median(f['redis_cpu_ms']):.1f}",
                f"{median(f['rate']):.0f} ({', '.join(f'{x:.0f}' for x in f['rate'])})",
            ]
            for kind, f in out.items()
        ],
    )


def main(argv: list[str] | None = None) -> int:
    """The machine, then the pool (built, reused with --keep, or given with --url)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already built scale pool")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="build the pool once, keep it")
    parser.add_argument("--solo", type=int, default=3, help="solo workers on the queue")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    database_url, redis_base = base_urls()
    engine = engine_for(database_url)
    print_table("Machine", ["", ""], list(describe_machine(engine).items()))
    engine.dispose()
    with free_redis_db(redis_base) as redis_url, contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(pool(database_url, args.size, args.keep))
        pool_engine = engine_for(url)
        with pool_engine.connect() as conn:
            chips = conn.exec_driver_sql("SELECT count(*) FROM chips").scalar_one()
        pool_engine.dispose()
        out = measure(url, redis_url, args.solo, args.runs, args.burst)
    print_figures(chips, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"chips": chips, "kinds": out}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
