"""What Celery itself costs a task in our worker: the floor under a swap's CPU.

`python -m benchmarks.celery_floor [--tasks 600] [--runs 3] [--json out.json]`

One `celery -A tasks worker` (prefork, -c 4, the production settings) on a scratch database and
a free Redis DB number. Each run sends a burst of `orchestrator.replace_chip` tasks whose chip
id is malformed: the worker takes each message from Redis, hands it to a child, runs our task
base class (the signature check; a per-chip task counts its delivery with its lock, which it
never reaches here), answers `rejected` before any lock or statement, stores the result and
acknowledges the message. Worker CPU per task (main process
and children, from /proc) and Redis server CPU per task are that floor; the same burst with
`-P solo` (no child, no pipes) and `-P threads -c 4` say what the prefork pool's processes cost.
"""

from __future__ import annotations

import argparse
import json
import time

import redis
from celery import Celery

from benchmarks import workers
from benchmarks.common import (
    base_urls,
    describe_machine,
    engine_for,
    free_redis_db,
    median,
    print_table,
    scratch_database,
)
from benchmarks.swap_floor import load_average, redis_cpu
from orchestrator import task_names as names

POOLS = {
    "prefork -c 4": ["-P", "prefork"],
    "solo": ["-P", "solo"],
    "threads -c 4": ["-P", "threads"],
}


def burst(app: Celery, worker: workers.Worker, rclient: redis.Redis, tasks: int) -> dict:
    """Send `tasks` rejected replaces at once, wait for every result; CPU per task."""
    cpu, rcpu = worker.cpu_seconds(), redis_cpu(rclient)
    start = time.perf_counter()
    results = [app.send_task(names.REPLACE, args=["not-a-chip"]) for _ in range(tasks)]
    answers = [r.get(timeout=300) for r in results]
    seconds = time.perf_counter() - start
    assert all(a["status"] == "rejected" for a in answers), answers[:3]
    return {
        "worker_cpu_ms": (worker.cpu_seconds() - cpu) * 1000 / tasks,
        "redis_cpu_ms": (redis_cpu(rclient) - rcpu) * 1000 / tasks,
        "tasks_per_second": tasks / seconds,
        "load": load_average(),
    }


def measure(url: str, redis_url: str, tasks: int, runs: int) -> dict[str, dict[str, list]]:
    """Each pool's worker in turn, `runs` bursts each (after a warm-up)."""
    app = workers.client(redis_url)
    rclient = redis.Redis.from_url(redis_url)
    out: dict[str, dict[str, list]] = {}
    try:
        for pool, extra in POOLS.items():
            concurrency = 1 if pool == "solo" else 4
            with workers.running_worker(url, redis_url, app, concurrency, extra) as worker:
                burst(app, worker, rclient, 50)
                for _ in range(runs):
                    for key, value in burst(app, worker, rclient, tasks).items():
                        out.setdefault(pool, {}).setdefault(key, []).append(value)
    finally:
        app.close()
        rclient.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    database_url, redis_base = base_urls()
    engine = engine_for(database_url)
    print_table("Machine", ["", ""], list(describe_machine(engine).items()))
    engine.dispose()
    with scratch_database(database_url) as url, free_redis_db(redis_base) as redis_url:
        out = measure(url, redis_url, args.tasks, args.runs)
    rows = [
        [
            pool,
            ", ".join(f["load"]),
            f"{median(f['worker_cpu_ms']):.2f} ({', '.join(f'{v:.2f}' for v in f['worker_cpu_ms'])})",
            f"{median(f['redis_cpu_ms']):.2f}",
            f"{median(f['tasks_per_second']):.0f}",
        ]
        for pool, f in out.items()
    ]
    headers = ["pool", "load", "worker CPU ms/task (runs)", "Redis CPU ms/task", "tasks/s"]
    print_table(f"A rejected task, {args.tasks} at once (medians of {args.runs})", headers, rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
