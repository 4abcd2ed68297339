"""Worker memory over a long steady load: `python -m benchmarks.memory --minutes 10`.

One real `celery -A tasks worker -c 4` on a scratch database and a free Redis DB number. For N
minutes a client bans active chips (orchestrator.replace_chip with reason "banned"), inserts ready
chips as they are consumed, ticks orchestrator.run_cycle and deliver_notifications, and sends
calls that must be rejected (bad ids, unknown chip, banned chip, wrong arguments). Every 15 s it
samples the RSS of the worker's main process and of each prefork child.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import redis
import sqlalchemy as sa
from celery import Celery

from benchmarks import workers
from benchmarks.common import base_urls, engine_for, free_redis_db, print_table, scratch_database
from benchmarks.datagen import add_chip_with_conversations, generate_pool

#: Defaults: run length, bans per second, pool size at the start.
MINUTES, RATE, CHIPS = 10.0, 20.0, 2_000
#: Seconds between two memory samples (and two cycle ticks).
SAMPLE_SECONDS = 15
#: The cycle period the worker is told (shorter than a tick, so no tick is skipped).
CYCLE_SECONDS = 10
#: A chip sent for a ban is not picked again for this long (its task may not have run yet).
PENDING_SECONDS = 30


@dataclass
class Sample:
    """One memory sample: seconds since the load started, tasks done, RSS in MiB by pid."""

    seconds: float
    tasks: int
    main: float
    children: dict[int, float]


class Load:
    """The client side: bans, ready chips refilled, cycle ticks, calls to be rejected."""

    def __init__(self, engine: sa.Engine, sender: Celery, ready_target: int) -> None:
        self.engine, self.sender, self.ready_target = engine, sender, ready_target
        self.pending: dict[str, float] = {}
        self.sent = {"bans": 0, "rejected": 0, "ticks": 0, "ready_inserted": 0}
        self._bad_calls = itertools.cycle(self._bad_call_kinds())

    def ban(self, n: int) -> None:
        """Send replace_chip(chip, "banned") for n active chips not already sent."""
        now = time.monotonic()
        self.pending = {c: t for c, t in self.pending.items() if now - t < PENDING_SECONDS}
        for chip in self._pick_active(n):
            self.pending[chip] = now
            self.sender.send_task("orchestrator.replace_chip", args=[chip, "banned"])
            self.sent["bans"] += 1

    def refill_ready(self) -> None:
        """Insert ready chips until there are ready_target again (as provisioning + warm-up would)."""
        with self.engine.connect() as conn:
            ready = conn.execute(
                sa.text("SELECT count(*) FROM chips WHERE status = 'ready'")
            ).scalar_one()
        for _ in range(max(0, self.ready_target - ready)):
            add_chip_with_conversations(self.engine, "ready", random.uniform(85, 99), 0)
            self.sent["ready_inserted"] += 1

    def reject_one(self) -> None:
        """One call the worker must answer with status "rejected"."""
        name, args = next(self._bad_calls)
        self.sender.send_task(name, args=args() if callable(args) else args)
        self.sent["rejected"] += 1

    def tick(self) -> None:
        """What beat sends: one cycle and one outbox delivery."""
        self.sender.send_task("orchestrator.run_cycle")
        self.sender.send_task("orchestrator.deliver_notifications")
        self.sent["ticks"] += 1

    def _pick_active(self, n: int) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id::text FROM chips WHERE status = 'active'"
                    " AND id <> ALL(CAST(:pending AS uuid[])) ORDER BY random() LIMIT :n"
                ),
                {"pending": list(self.pending), "n": n},
            )
            return list(rows.scalars())

    def _banned_chip(self) -> list[str]:
        with self.engine.connect() as conn:
            chip = conn.execute(
                sa.text("SELECT id::text FROM chips WHERE status = 'banned' LIMIT 1")
            ).scalar()
        return [chip or str(uuid.uuid4()), "banned"]

    def _bad_call_kinds(self) -> list[tuple[str, object]]:
        replace = "orchestrator.replace_chip"
        return [
            (replace, ["nao-e-um-uuid", "banned"]),
            (replace, lambda: [str(uuid.uuid4()), "banned"]),  # unknown chip
            (replace, self._banned_chip),  # already banned and replaced: wrong state
            ("orchestrator.promote_ready_to_active", []),  # missing argument
            (replace, [{"id": 1}, "x" * 5000]),  # malformed id, reason too long
        ]


def tasks_done(sender: Celery) -> int:
    """Tasks the worker has finished so far (its own counters, as Flower reads them)."""
    replies = sender.control.inspect(timeout=2, limit=1).stats() or {}
    return sum(sum(stats.get("total", {}).values()) for stats in replies.values())


def take_sample(worker: workers.Worker, sender: Celery, seconds: float) -> Sample:
    """RSS of the worker's main process and of each child, and the tasks done."""
    if worker.proc.poll() is not None:
        raise RuntimeError(f"worker exited: {worker.log_path.read_text()[-2000:]}")
    children = {pid: workers.rss_mib(pid) for pid in worker.children()}
    return Sample(seconds, tasks_done(sender), workers.rss_mib(worker.proc.pid), children)


def prepare_pool(engine: sa.Engine, chips: int) -> int:
    """A serving pool (40% active, 30% ready, 30% warming); returns the ready chips to keep."""
    generate_pool(engine, chips, mix="serving")
    with engine.begin() as conn:
        # Fewer warming chips wanted than there are: the cycle never buys (no Salvy here).
        conn.execute(sa.text("UPDATE pool_config SET warmup_buffer = :n"), {"n": chips // 5})
        return conn.execute(
            sa.text("SELECT count(*) FROM chips WHERE status = 'ready'")
        ).scalar_one()


def drive(
    load: Load, worker: workers.Worker, sender: Celery, minutes: float, rate: float
) -> Iterator[Sample]:
    """Keep the load for `minutes`, yielding a memory sample every SAMPLE_SECONDS."""
    start = time.monotonic()
    next_sample = next_second = 0.0
    while (elapsed := time.monotonic() - start) <= minutes * 60:
        if elapsed >= next_sample:
            load.tick()
            yield take_sample(worker, sender, elapsed)
            next_sample += SAMPLE_SECONDS
        if elapsed >= next_second:
            load.refill_ready()
            load.reject_one()
            next_second += 1
        due = int((time.monotonic() - start) * rate) - load.sent["bans"]
        if due > 0:
            load.ban(due)
        time.sleep(0.02)
    yield take_sample(worker, sender, time.monotonic() - start)


def run(
    url: str, redis_url: str, engine: sa.Engine, minutes: float, rate: float, chips: int
) -> dict:
    """Seed the pool, start the worker, drive the load; returns the samples and counters."""
    sender = Celery("bench-memory", broker=redis_url)
    load = Load(engine, sender, prepare_pool(engine, chips))
    env = workers.worker_env(url, redis_url) | {"ORCHESTRATOR_CYCLE_SECONDS": str(CYCLE_SECONDS)}
    worker = workers.Worker(env, 4)
    samples: list[Sample] = []
    try:
        worker.wait_ready(sender)
        for sample in drive(load, worker, sender, minutes, rate):
            samples.append(sample)
            print_progress(sample)
    finally:
        worker.stop()
        sender.close()
    return {
        "samples": [asdict(s) for s in samples],
        "sent": load.sent,
        "results": results_by_status(redis_url),
        **outcome(engine),
    }


def results_by_status(redis_url: str) -> dict[str, int]:
    """How the tasks' results read in the result backend (replaced, rejected, planned, ...)."""
    client = redis.Redis.from_url(redis_url)
    counts: collections.Counter[str] = collections.Counter()
    try:
        keys = list(client.scan_iter("celery-task-meta-*", count=1000))
        for start in range(0, len(keys), 1000):
            for raw in client.mget(keys[start : start + 1000]):
                meta = json.loads(raw) if raw else {}
                result = meta.get("result")
                status = result.get("status") if isinstance(result, dict) else None
                counts[status or meta.get("status", "?")] += 1
    finally:
        client.close()
    return dict(counts.most_common())


def outcome(engine: sa.Engine) -> dict:
    """Replacements committed, and the invariant checker's count."""
    from orchestrator.ops.checker import find_violations

    with engine.connect() as conn:
        replaced = conn.execute(
            sa.text("SELECT count(*) FROM orchestrator_operations WHERE operacao = 'auto_replace'")
        ).scalar_one()
    return {"replacements": replaced, "violations": len(find_violations(engine))}


def print_progress(sample: Sample) -> None:
    """One line per sample, while it runs."""
    children = " ".join(f"{rss:.1f}" for rss in sample.children.values())
    print(
        f"t={sample.seconds:6.0f}s tasks={sample.tasks:6d} main={sample.main:.1f}"
        f" children={children} MiB",
        flush=True,
    )


def nominal(sample: Sample) -> int:
    """The sample's slot in seconds (samples run a little late: 60.3 s is the minute-1 sample)."""
    return round(sample.seconds / SAMPLE_SECONDS) * SAMPLE_SECONDS


def by_minute(samples: list[Sample]) -> list[Sample]:
    """The samples on whole minutes, and the last one."""
    picked = [s for s in samples[:-1] if nominal(s) % 60 == 0]
    return picked + samples[-1:]


def print_report(result: dict) -> None:
    """The table by minute, the growth per process from minute 1 to the end, tasks per second."""
    samples = [Sample(**s) for s in result["samples"]]
    pids = list(samples[0].children)
    rows = [
        [f"{s.seconds / 60:.1f}", f"{s.tasks:,}"]
        + [f"{s.children.get(p, 0):.1f}" for p in pids]
        + [f"{s.main:.1f}"]
        for s in by_minute(samples)
    ]
    headers = ["minute", "tasks done"] + [f"child {i + 1}" for i in range(len(pids))] + ["main"]
    print_table("Worker RSS over the run (MiB)", headers, rows)
    first = next((s for s in samples if nominal(s) >= 60), samples[0])
    last = samples[-1]
    growth = [
        (f"child {i + 1} (pid {p})", first.children.get(p, 0), last.children.get(p, 0))
        for i, p in enumerate(pids)
    ] + [("main", first.main, last.main)]
    print_table(
        f"Growth from minute {first.seconds / 60:.1f} to {last.seconds / 60:.1f}",
        ["process", "at minute 1", "at the end", "MiB", "%"],
        [
            [n, f"{a:.1f}", f"{b:.1f}", f"{b - a:+.2f}", f"{(b - a) / a * 100:+.2f}"]
            for n, a, b in growth
        ],
    )
    if set(last.children) != set(pids):
        print(f"children replaced during the run: {pids} -> {list(last.children)}")
    rate = (last.tasks - samples[0].tasks) / (last.seconds - samples[0].seconds)
    print(f"tasks: {last.tasks:,} done, {rate:.1f} per second; sent: {result['sent']}")
    print(f"results by status: {result['results']}")
    print(
        f"replacements committed: {result['replacements']:,};"
        f" invariant violations: {result['violations']}"
    )


def main(argv: list[str] | None = None) -> int:
    """Create the scratch database and Redis DB, run the load, print the figures, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=MINUTES)
    parser.add_argument("--rate", type=float, default=RATE, help="bans per second")
    parser.add_argument("--chips", type=int, default=CHIPS, help="pool size at the start")
    parser.add_argument("--json", help="also write the samples to this file")
    args = parser.parse_args(argv)
    database_url, redis_base = base_urls()
    with scratch_database(database_url) as url, free_redis_db(redis_base) as redis_url:
        engine = engine_for(url)
        try:
            result = run(url, redis_url, engine, args.minutes, args.rate, args.chips)
        finally:
            engine.dispose()
    print_report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
