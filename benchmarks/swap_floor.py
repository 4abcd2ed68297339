"""Where a swap's CPU goes, today and before issue 23, at 10k / 100k / 1M chips.

`python -m benchmarks.swap_floor [--sizes 10000,100000,1000000] [--runs 3] [--keep]`
`python -m benchmarks.swap_floor --url postgresql+psycopg://.../chiporch_pool_1000000`

Pools are the `scale` pools of benchmarks/datagen.py (as benchmarks/scale.py builds them). With
`--keep` each one is built once in `chiporch_pool_<size>` and reused by the next run (a 1M pool
takes minutes); `--url` measures pools built that way. Per pool:

- in this process, one swap at a time through `handlers.replace_chip` (Redis locks and the
  transaction, no Celery), today's code and before_code.previous(): round trips to PostgreSQL
  (counted on the wire by a proxy), pings and Redis commands per swap, CPU per swap (thread CPU time), and where that CPU goes (cProfile on
  thread CPU time, by package);
- with `--profile-worker`, only: one worker with cProfile on (benchmarks.profiled_app) through a
  burst, its CPU by package (billiard, kombu, celery, SQLAlchemy, psycopg, redis, ours), the
  main process and the children apart;
- with `--syscalls`, only: one worker through a burst under `strace -c` (benchmarks/syscalls.py):
  system calls per swap of its main process, its children, the PostgreSQL backends and the
  Redis server, and what one wake-up costs the machine (a pipe round trip's CPU);
- real workers (`-c 4` prefork), side by side on their own queues, runs alternating: "now"
  (tasks), "watched" (now with task events on, as while Flower watches) and "previous"
  (benchmarks.previous_app): ban -> swap latency (one ban at a time) and a burst of bans sent at
  once, with CPU per swap of the worker (main process and children apart), the PostgreSQL
  backends and the Redis server (read from `/proc` and Redis INFO), the load average and a pipe
  round trip's CPU and a fixed piece of Python work's (benchmarks/speed_probe.py) read just
  before each burst (how fast the VM is at that moment).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import tempfile
import time
from collections.abc import Iterator

import redis
import sqlalchemy as sa

from benchmarks import before_code, scale, speed_probe, syscalls, workers
from benchmarks.common import (
    base_urls,
    describe_machine,
    engine_for,
    free_redis_db,
    median,
    ms,
    percentile,
    print_table,
    scratch_database,
)
from benchmarks.datagen import SWAP_TABLES, generate_pool, vacuum_analyze
from benchmarks.db_burst import backend_cpu
from orchestrator.app import bootstrap, handlers
from orchestrator.app.settings import get_settings
from orchestrator.dev.round_trips import round_trip_proxy

SIZES = (10_000, 100_000, 1_000_000)
VARIANTS = {
    "now": ("tasks", "bench_now"),
    "watched": ("benchmarks.watched_app", "bench_watched"),
    "previous": ("benchmarks.previous_app", "bench_previous"),
}
#: cProfile's functions grouped by where their file lives (first match wins).
PACKAGES = (
    ("redis", "/redis/"),
    ("SQLAlchemy: compile, constructs", "/sqlalchemy/sql/"),
    ("SQLAlchemy: pool", "/sqlalchemy/pool/"),
    ("SQLAlchemy: execute, results", "/sqlalchemy/"),
    ("psycopg (driver, I/O)", "/psycopg"),
    ("orchestrator (ours)", "/orchestrator/"),
)


def load_average() -> str:
    """The 1-minute load average now."""
    return f"{os.getloadavg()[0]:.1f}"


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used (the whole server: others' commands count too)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- in-process: statements, round trips, CPU ----------------------------------------------------


class Counters:
    """Pings and Redis commands sent while attached."""

    def __init__(self) -> None:
        self.pings = self.redis = 0

    @contextlib.contextmanager
    def attached(self, engine: sa.Engine) -> Iterator[None]:
        ping = engine.dialect.do_ping

        def counted_ping(dbapi_connection: object) -> bool:
            self.pings += 1
            return ping(dbapi_connection)

        send = redis.connection.Connection.send_packed_command

        def counted_send(conn: object, command: object, check_health: bool = True) -> None:
            self.redis += 1
            return send(conn, command, check_health)

        engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]
        redis.connection.Connection.send_packed_command = counted_send  # type: ignore[method-assign]
        try:
            yield
        finally:
            engine.dialect.do_ping = ping  # type: ignore[method-assign]
            redis.connection.Connection.send_packed_command = send  # type: ignore[method-assign]


def _bind_process(url: str, redis_url: str) -> None:
    """This process's handlers on the pool's database (engines made from now on)."""
    os.environ.update(DATABASE_URL=url, REDIS_URL=redis_url)
    get_settings.cache_clear()
    bootstrap.reset_after_fork()


def _swaps(engine: sa.Engine, n: int, profile: cProfile.Profile | None = None) -> tuple[float, int]:
    """Ban n chips, swap them one at a time through handlers; CPU seconds, swaps done."""
    ids = scale.victims(engine, n)
    scale.ban(engine, ids)
    done, cpu = 0, time.thread_time()
    if profile:
        profile.enable()
    for chip in ids:
        time.sleep(0.003)  # an idle gap, as between tasks: pings (if any) happen
        done += handlers.replace_chip(chip, "banned", owner=None)["status"] == "replaced"
    if profile:
        profile.disable()
    cpu = time.thread_time() - cpu
    scale.restore(engine, ids)
    return cpu, done


def by_package(profile: cProfile.Profile, swaps: int) -> dict[str, float]:
    """Own CPU time of the profiled functions by package, ms per swap."""
    totals: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        name = next((label for label, part in PACKAGES if part in path), "other (stdlib, ...)")
        totals[name] = totals.get(name, 0.0) + own
    return {k: v * 1000 / swaps for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def in_process(url: str, redis_url: str, engine: sa.Engine, n: int, runs: int) -> dict:
    """Today's handlers vs before_code.previous(), alternating: counts and CPU per swap.

    Counts first, through a proxy that counts round trips to PostgreSQL on the wire
    (orchestrator/dev/round_trips.py); CPU then on a direct connection.
    """
    out: dict[str, dict] = {}
    with round_trip_proxy(url) as (wire, via_proxy):
        for run in range(runs):
            for variant in ("now", "previous") if run % 2 == 0 else ("previous", "now"):
                context = (
                    before_code.previous() if variant == "previous" else contextlib.nullcontext()
                )
                with context:
                    _bind_process(via_proxy, redis_url)
                    _swaps(engine, 5)  # connections open, statements compiled
                    counters = Counters()
                    wire.reset()
                    with counters.attached(bootstrap.engine()):
                        _, counted = _swaps(engine, n)
                    round_trips = wire.reset()
                    _bind_process(url, redis_url)
                    _swaps(engine, 5)
                    cpu, done = _swaps(engine, n)
                    profile = cProfile.Profile(time.thread_time)
                    _, profiled = _swaps(engine, n, profile)
                    bootstrap.reset_after_fork()
                f = out.setdefault(variant, {"cpu_ms": [], "split": []})
                f["cpu_ms"].append(cpu * 1000 / max(done, 1))
                f["split"].append(by_package(profile, max(profiled, 1)))
                f["per_swap"] = {
                    "round trips": round_trips / max(counted, 1),
                    "pings": counters.pings / max(counted, 1),
                    "redis commands": counters.redis / max(counted, 1),
                }
    return out


# -- real workers ------------------------------------------------------------------------------


def worker_runs(
    url: str, redis_url: str, engine: sa.Engine, runs: int, bans: int, burst: int
) -> dict:
    """Each variant's worker, runs alternating: latency percentiles and one burst per run."""
    app = workers.client(redis_url)
    rclient = redis.Redis.from_url(redis_url)
    per: dict[str, dict[str, list]] = {v: {} for v in VARIANTS}
    try:
        with contextlib.ExitStack() as stack:
            running = {
                v: stack.enter_context(
                    workers.running_worker(url, redis_url, app, 4, worker_app=a, queues=q)
                )
                for v, (a, q) in VARIANTS.items()
            }
            for variant, (_, queue) in VARIANTS.items():
                scale.warm(engine, app, redis_url, queue, running[variant], bans=12)
                vacuum_analyze(engine, tables=SWAP_TABLES)
            for run in range(runs):
                order = list(VARIANTS)[run % 3 :] + list(VARIANTS)[: run % 3]
                for variant in order:
                    queue, worker = VARIANTS[variant][1], running[variant]
                    ids = scale.victims(engine, bans)
                    took = scale.latency(engine, app, queue, ids)
                    scale.restore(engine, ids)
                    ids = scale.victims(engine, burst)
                    wake_up = syscalls.pipe_round_trip_cpu_us()
                    python_speed = speed_probe.python_work_cpu_ms()
                    load = load_average()
                    main, rcpu = workers.cpu_seconds(worker.proc.pid), redis_cpu(rclient)
                    result = scale.burst(engine, redis_url, queue, ids, worker)
                    main = workers.cpu_seconds(worker.proc.pid) - main
                    rcpu = redis_cpu(rclient) - rcpu
                    swaps = max(result["statuses"]["replaced"], 1)
                    assert result["distinct_replacements"] == result["statuses"]["replaced"]
                    scale.restore(engine, ids)
                    vacuum_analyze(engine, tables=SWAP_TABLES)
                    for key, value in {
                        "p50": percentile(took, 50),
                        "p99": percentile(took, 99),
                        "rate": result["per_second"],
                        "worker_cpu_ms": result["worker_cpu_ms"],
                        "main_cpu_ms": main * 1000 / swaps,
                        "postgres_cpu_ms": result["postgres_cpu_ms"],
                        "redis_cpu_ms": rcpu * 1000 / swaps,
                        "replaced": result["statuses"]["replaced"],
                        "load": load,
                        "pipe_round_trip_us": wake_up,
                        "python_probe_ms": python_speed,
                    }.items():
                        per[variant].setdefault(key, []).append(value)
    finally:
        app.close()
        rclient.close()
    return per


#: A worker's profile by package (first match wins): Celery's machinery apart from ours.
WORKER_PACKAGES = (
    ("billiard (prefork pool, IPC)", "/billiard/"),
    ("kombu (broker, messages)", "/kombu/"),
    ("celery", "/celery/"),
    ("vine, amqp, click (Celery's)", ("/vine/", "/amqp/", "/click/")),
    *PACKAGES,
)


def _package(path: str) -> str:
    for label, part in WORKER_PACKAGES:
        if any(p in path for p in ((part,) if isinstance(part, str) else part)):
            return label
    return "other (stdlib: json, socket, pickle, logging, ...)"


def profile_worker(url: str, redis_url: str, engine: sa.Engine, burst: int) -> dict:
    """One profiled worker (benchmarks.profiled_app), one burst: CPU by package, ms per swap."""
    app = workers.client(redis_url)
    with tempfile.TemporaryDirectory() as out:
        os.environ["SWAP_PROFILE_DIR"] = out
        try:
            with workers.running_worker(
                url, redis_url, app, 4, worker_app="benchmarks.profiled_app", queues="bench_prof"
            ) as worker:
                scale.latency(engine, app, "bench_prof", ids := scale.victims(engine, 8))
                scale.restore(engine, ids)
                main_pid = worker.proc.pid
                ids = scale.victims(engine, burst)
                result = scale.burst(engine, redis_url, "bench_prof", ids, worker)
                scale.restore(engine, ids)
        finally:
            os.environ.pop("SWAP_PROFILE_DIR", None)
            app.close()
        swaps = max(result["statuses"]["replaced"], 1)
        split: dict[str, dict[str, float]] = {"main process": {}, "children": {}}
        for name in os.listdir(out):
            side = split["main process" if name == f"{main_pid}.prof" else "children"]
            for (path, _, _), (_, _, own, _, _) in pstats.Stats(
                os.path.join(out, name)
            ).stats.items():  # type: ignore[attr-defined]
                label = _package(path)
                side[label] = side.get(label, 0.0) + own * 1000 / swaps
    return split


def print_profile(chips: int, split: dict[str, dict[str, float]]) -> None:
    """The profiled worker's CPU by package."""
    sides = list(split.values())
    labels = sorted(
        {k for side in sides for k in side}, key=lambda k: -sum(s.get(k, 0.0) for s in sides)
    )
    rows = [[k, *(side.get(k, 0.0) for side in sides)] for k in labels]
    rows.append(["total", *(sum(side.values()) for side in sides)])
    print_table(
        f"{chips:,} chips: a profiled worker's CPU during a burst, by package (ms/swap, cProfile"
        " on process CPU; profiling inflates Python-heavy code, read the shares)",
        ["package", *split, "total"],
        [[label, *(f"{x:.2f}" for x in values), f"{sum(values):.2f}"] for label, *values in rows],
    )


# -- system calls ------------------------------------------------------------------------------


def syscall_counts(url: str, redis_url: str, engine: sa.Engine, burst: int) -> dict:
    """One worker ("now"), warmed, through one burst under `strace -c`: calls per swap, by process.

    The worker's main process and its children, the PostgreSQL backends serving the pool's
    database (the benchmark's own left out) and the Redis server (its pid from INFO).
    """
    app, rclient = workers.client(redis_url), redis.Redis.from_url(redis_url)
    queue = "bench_syscalls"
    try:
        with workers.running_worker(url, redis_url, app, 4, queues=queue) as worker:
            scale.warm(engine, app, redis_url, queue, worker, bans=12)
            vacuum_analyze(engine, tables=SWAP_TABLES)
            groups = {
                "worker main process": [worker.proc.pid],
                "worker children": worker.children(),
                "PostgreSQL backends": sorted(backend_cpu(engine)),
                "Redis server": [int(rclient.info("server")["process_id"])],
            }
            ids = scale.victims(engine, burst)
            with syscalls.counting(groups) as counts:
                result = scale.burst(engine, redis_url, queue, ids, worker)
            scale.restore(engine, ids)
    finally:
        app.close()
        rclient.close()
    swaps = result["statuses"]["replaced"]
    return {
        "swaps": swaps,
        "per_swap": {name: syscalls.per_swap(c, swaps) for name, c in counts.items()},
        "pipe_round_trip_us": syscalls.pipe_round_trip_cpu_us(),
    }


def print_syscalls(chips: int, figures: dict) -> None:
    """System calls per swap by process, the most frequent of each."""
    rows = []
    for name, calls in figures["per_swap"].items():
        top = [(k, v) for k, v in calls.items() if k not in ("all", "failed")][:8]
        rows.append(
            [
                name,
                f"{calls['all']:.1f}",
                f"{calls['failed']:.1f}",
                ", ".join(f"{k} {v:.1f}" for k, v in top),
            ]
        )
    rows.append(["all", f"{sum(c['all'] for c in figures['per_swap'].values()):.1f}", "", ""])
    print_table(
        f"{chips:,} chips: system calls per swap through a burst of {figures['swaps']}"
        f" (strace -c; a pipe round trip costs {figures['pipe_round_trip_us']:.0f} µs of CPU"
        " here now)",
        ["process", "calls/swap", "failed", "most frequent"],
        rows,
    )


# -- pools, and the run --------------------------------------------------------------------------


@contextlib.contextmanager
def pool(base_url: str, size: int, keep: bool) -> Iterator[str]:
    """A scale pool of `size` chips: kept in chiporch_pool_<size> (reused if built), or scratch."""
    if not keep:
        with scratch_database(base_url) as url:
            _build(url, size)
            yield url
        return
    name, server = f"chiporch_pool_{size}", sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if exists.first() is None:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    server.dispose()
    url = base_url.rsplit("/", 1)[0] + "/" + name
    from orchestrator.store import migrate

    migrate.upgrade(url)
    engine = engine_for(url)
    with engine.connect() as conn:
        built = conn.execute(sa.text("SELECT count(*) FROM chips")).scalar_one() == size
    engine.dispose()
    if not built:
        _build(url, size)
    yield url


def _build(url: str, size: int) -> None:
    engine = engine_for(url)
    try:
        generate_pool(engine, size, mix="scale")
        scale.add_due_work(engine)
        vacuum_analyze(engine)
        scale.checkpoint(engine)
    finally:
        engine.dispose()


def measure(url: str, redis_url: str, args: argparse.Namespace) -> dict:
    """Every figure for one pool."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            chips = conn.execute(sa.text("SELECT count(*) FROM chips")).scalar_one()
        vacuum_analyze(engine, tables=SWAP_TABLES)  # a kept pool starts as a fresh one would
        figures = {"chips": chips, "load_before": load_average()}
        if args.profile_worker:
            figures["worker_profile"] = profile_worker(url, redis_url, engine, args.burst)
            print_profile(chips, figures["worker_profile"])
            return figures
        if args.syscalls:
            figures["syscalls"] = syscall_counts(url, redis_url, engine, args.burst)
            print_syscalls(chips, figures["syscalls"])
            return figures
        figures["in_process"] = in_process(url, redis_url, engine, args.swaps, args.runs)
        figures["workers"] = worker_runs(
            url, redis_url, engine, args.runs, args.latency_bans, args.burst
        )
    finally:
        engine.dispose()
    print_pool(figures)
    return figures


def print_pool(f: dict) -> None:
    """One pool's tables."""
    inproc = f["in_process"]
    print_table(
        f"{f['chips']:,} chips: one swap in-process through handlers.replace_chip (no Celery)",
        ["variant", "PostgreSQL round trips", "pings", "Redis commands", "CPU ms/swap (runs)"],
        [
            [
                v,
                f"{d['per_swap']['round trips']:.1f}",
                f"{d['per_swap']['pings']:.2f}",
                f"{d['per_swap']['redis commands']:.1f}",
                ", ".join(f"{x:.2f}" for x in d["cpu_ms"]),
            ]
            for v, d in inproc.items()
        ],
    )
    labels = sorted({k for d in inproc.values() for s in d["split"] for k in s})
    print_table(
        f"{f['chips']:,} chips: that CPU by package (cProfile, thread CPU, median ms/swap;"
        " profiling inflates it)",
        ["package", *inproc],
        [
            [k, *(f"{median([s.get(k, 0) for s in d['split']]):.2f}" for d in inproc.values())]
            for k in labels
        ],
    )
    w = f["workers"]
    print_table(
        f"{f['chips']:,} chips: real workers (-c 4), per run",
        [
            "variant",
            "load",
            "p50 ms",
            "p99 ms",
            "burst swaps/s",
            "worker CPU ms/swap",
            "of it main process",
            "PostgreSQL CPU ms/swap",
            "Redis server CPU ms/swap",
            "pipe round trip µs CPU",
            "Python probe ms CPU",
        ],
        [
            [
                v,
                ", ".join(r["load"]),
                ", ".join(ms(x) for x in r["p50"]),
                ", ".join(ms(x) for x in r["p99"]),
                ", ".join(f"{x:.0f}" for x in r["rate"]),
                ", ".join(f"{x:.1f}" for x in r["worker_cpu_ms"]),
                ", ".join(f"{x:.1f}" for x in r["main_cpu_ms"]),
                ", ".join(f"{x:.1f}" for x in r["postgres_cpu_ms"]),
                ", ".join(f"{x:.1f}" for x in r["redis_cpu_ms"]),
                ", ".join(f"{x:.0f}" for x in r["pipe_round_trip_us"]),
                ", ".join(f"{x:.0f}" for x in r.get("python_probe_ms", [])),
            ]
            for v, r in w.items()
        ],
    )


def main(argv: list[str] | None = None) -> int:
    """The machine, then each pool (built, reused with --keep, or given with --url)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--url", action="append", help="an already built scale pool (repeatable)")
    parser.add_argument("--keep", action="store_true", help="build pools once, keep them")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--swaps", type=int, default=100, help="in-process swaps per run")
    parser.add_argument("--latency-bans", type=int, default=50)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument(
        "--profile-worker", action="store_true", help="only profile one worker through a burst"
    )
    parser.add_argument(
        "--syscalls",
        action="store_true",
        help="only count one worker's system calls (and PostgreSQL's, Redis's) through a burst",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.syscalls and not syscalls.available():
        parser.error("--syscalls needs strace, allowed to attach to this user's processes")
    database_url, redis_base = base_urls()
    results = []
    with free_redis_db(redis_base) as redis_url:
        engine = engine_for(database_url)
        print_table("Machine", ["", ""], list(describe_machine(engine).items()))
        engine.dispose()
        if args.url:
            results = [measure(url, redis_url, args) for url in args.url]
        for size in [] if args.url else [int(s) for s in args.sizes.split(",")]:
            with pool(database_url, size, args.keep) as url:
                results.append(measure(url, redis_url, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
