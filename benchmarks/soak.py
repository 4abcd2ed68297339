"""Chaos soak: N minutes of bans, trust drops, disconnections, gateway outages and killed worker
processes against real workers and a real beat, with the invariant checker after every step.

    .venv/bin/python -m benchmarks.soak --minutes 5      # the default
    .venv/bin/python -m benchmarks.soak --minutes 0.5    # the short CI variant

Uses DATABASE_URL / REDIS_URL (a scratch database and a free Redis DB number on those servers;
the embedded servers when unset) and the local Salvy stand-in. Prints totals and the violations;
exits 1 if the checker found any.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import redis
import sqlalchemy as sa
from celery import Celery

from benchmarks.common import base_urls, engine_for, free_redis_db, scratch_database
from benchmarks.workers import QUEUES, worker_env
from orchestrator.app.settings import ROOT, Settings
from orchestrator.dev import embedded, simulator
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.ops import checker
from orchestrator.store.schema import chips, conversation_chips, pool_config

#: A small pool, so every kind of change happens within seconds; no disconnection grace.
SOAK_CONFIG = {
    "producao_min": 10,
    "producao_max": 14,
    "ready_min": 4,
    "warmup_buffer": 6,
    "warmup_days": 1,
    "disconnect_grace_minutes": 0,
    "alert_cooldown_minutes": 1,
    "max_provisions_per_cycle": 3,
}
#: The weather between outages: rough, so replacements keep coming.
ROUGH = simulator.Knobs(
    ban_rate=0.02,
    disconnect_rate=0.03,
    reconnect_rate=0.2,
    trust_crash_rate=0.03,
    arrivals=6,
    warmup_days_per_step=0.3,
)
#: Chance per step that a gateway-wide outage starts, and how many steps it lasts.
OUTAGE_CHANCE, OUTAGE_STEPS = 0.06, 3
#: One worker process is SIGKILLed every this many steps (the prefork parent respawns it). A
#: schedule, not a chance per step: a coin flip gave some 30-second runs no kill at all, and a
#: soak that did not inject the fault proves nothing about it (docs/reliability.md).
KILL_EVERY_STEPS = 12
#: Longest wait for the workers to answer before the first step, and for the queues to drain
#: after the last one.
READY_TIMEOUT, DRAIN_TIMEOUT = 60.0, 30.0


@dataclass
class Tally:
    """What the soak did and what the checker found."""

    steps: int = 0
    faults: Counter = field(default_factory=Counter)
    totals: dict[str, int] = field(default_factory=dict)
    violations: list[checker.Violation] = field(default_factory=list)
    violation_steps: int = 0
    drained: bool = False


def seed(engine: sa.Engine) -> None:
    """12 active chips with conversations, 6 ready, 6 warming in phase 'operacao'."""
    with engine.begin() as conn:
        conn.execute(sa.update(pool_config).values(**SOAK_CONFIG))
        now = conn.scalar(sa.select(sa.func.now()))
        for n, (status, count) in enumerate((("active", 12), ("ready", 6), ("warming", 6))):
            for i in range(count):
                chip_id = conn.execute(
                    sa.insert(chips)
                    .values(
                        telefone=f"+55119{n}{i:03d}{random.randint(0, 9999):04d}",
                        ddd=11,
                        status=status,
                        trust_score=92,
                        fase_warmup="operacao",
                        warming_started_at=now - timedelta(days=30),
                        ready_at=now - timedelta(days=2) if status != "warming" else None,
                    )
                    .returning(chips.c.id)
                ).scalar_one()
                if status == "active":
                    conn.execute(
                        sa.insert(conversation_chips),
                        [
                            {"conversation_id": f"soak-{chip_id}-{k}", "chip_id": chip_id}
                            for k in range(3)
                        ],
                    )


def start(args: list[str], env: dict[str, str], logs: Path, name: str) -> subprocess.Popen:
    """A `celery -A tasks ...` subprocess logging to logs/name.log."""
    out = (logs / f"{name}.log").open("wb")
    cmd = [sys.executable, "-m", "celery", "-A", "tasks", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class KillSchedule:
    """When the next worker child dies: every `every` steps from a seeded phase.

    A kill that finds no child to kill (the worker still starting, or respawning the last one)
    stays due and happens at the next step that finds one.
    """

    def __init__(self, rng: random.Random, every: int) -> None:
        self.every = every
        self.next_step = rng.randint(1, every)

    def due(self, step: int) -> bool:
        """Whether a kill is due at this step."""
        return step >= self.next_step

    def done(self, step: int) -> None:
        """A kill happened at this step; the next one is `every` steps later."""
        self.next_step = step + self.every


def wait_ready(app: Celery, names: list[str], procs: list[subprocess.Popen]) -> None:
    """Block until every worker answers a ping (a worker that exits first is an error)."""
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = set(names)
    while waiting:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited while starting; see its log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {READY_TIMEOUT:g} s: {sorted(waiting)}")
        for reply in app.control.ping(destination=sorted(waiting), timeout=0.5):
            waiting -= set(reply)


def drained(client: redis.Redis) -> bool:
    """Nothing queued and nothing delivered but unacknowledged (acks_late: running or retrying)."""
    queued = sum(client.llen(q) for q in QUEUES.split(","))
    return queued == 0 and client.hlen("unacked") == 0


def wait_drained(client: redis.Redis) -> bool:
    """Wait (bounded) until the workers finished what the world and the cycles sent them."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while not drained(client):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def world_step(
    engine: sa.Engine, rng: random.Random, app: Celery, tally: Tally, outage: int
) -> int:
    """One simulator step (an outage if one is on); returns the outage steps left."""
    if outage == 0 and rng.random() < OUTAGE_CHANCE:
        outage = OUTAGE_STEPS
        tally.faults["gateway outages"] += 1
    knobs = simulator.Knobs(**{**ROUGH.__dict__, "outage": outage > 0})
    send = lambda name, a, kw: app.send_task(name, args=a, kwargs=kw)  # noqa: E731
    for line in simulator.step(engine, rng, send, knobs):
        kind = line.split(":", 1)[0]
        if kind == "ban":
            tally.faults["bans"] += 1
        elif kind == "trust":
            tally.faults["trust drops"] += 1
        elif "desconectou" in line:
            tally.faults["disconnections"] += 1
        elif kind == "conversas":
            tally.faults["conversation batches"] += 1
    return max(0, outage - 1)


def kill_one(workers: list[subprocess.Popen], rng: random.Random, tally: Tally) -> bool:
    """SIGKILL one prefork child of a random worker that has one (acks_late: its task is
    redelivered); False if no worker has a child right now."""
    for worker in rng.sample(workers, len(workers)):
        kids = children(worker.pid)
        if kids:
            os.kill(rng.choice(kids), signal.SIGKILL)
            tally.faults["worker processes killed"] += 1
            return True
    return False


def check(engine: sa.Engine, tally: Tally) -> None:
    found = checker.find_violations(engine)
    if found:
        tally.violation_steps += 1
        tally.violations.extend(v for v in found if v not in tally.violations)


def totals(engine: sa.Engine) -> dict[str, int]:
    """Operations by kind, and conversations moved, from the database."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT operacao, count(*), coalesce(sum((metadata->>'conversas_migradas')::int), 0)"
                " FROM orchestrator_operations WHERE sucesso GROUP BY operacao"
            )
        ).all()
    result = {f"operations: {op}": n for op, n, _ in rows}
    result["operations (all)"] = sum(n for _, n, _ in rows)
    result["conversations moved"] = sum(moved for _, _, moved in rows)
    return result


def storm_cycles(logs: Path) -> int:
    """Cycles that held disconnected chips back (the storm brake), from the worker logs."""
    return sum(
        p.read_text(errors="replace").count("'storm': True") for p in logs.glob("worker*.log")
    )


def soak(minutes: float, workers: int, step_seconds: float, seed_value: int) -> Tally:
    """Run the soak against a scratch database and Redis DB; returns the tally."""
    rng = random.Random(seed_value)
    database, redis_base = base_urls()
    tally = Tally()
    logs = Path(tempfile.mkdtemp(prefix="chiporch-soak-"))
    with (
        scratch_database(database) as db_url,
        free_redis_db(redis_base) as redis_url,
        SalvyStandin() as salvy,
    ):
        engine = engine_for(db_url)
        seed(engine)
        env = worker_env(db_url, redis_url)
        env.update(
            SALVY_API_URL=salvy.url,
            SALVY_API_TOKEN="salvy_test_soak",
            ORCHESTRATOR_CYCLE_SECONDS="2",
        )
        names = [f"soak{i}-{os.getpid()}@{socket.gethostname()}" for i in range(workers)]
        procs = [
            start(["worker", "-P", "prefork", "-c", "1", "-Q", QUEUES, "-n", name,
                   "--without-gossip", "--without-mingle", "-l", "INFO"], env, logs, f"worker{i}")
            for i, name in enumerate(names)
        ]  # fmt: skip
        app = Celery("soak", broker=redis_url)
        app.conf.update(task_serializer="json", accept_content=["json"])
        broker = redis.Redis.from_url(redis_url)
        beat = None
        try:
            # The chaos starts when the workers can take it, however long they take to boot.
            wait_ready(app, names, procs)
            beat = start(
                ["beat", "-l", "INFO", "--schedule", str(logs / "beat-schedule")], env, logs, "beat"
            )
            kills = KillSchedule(rng, KILL_EVERY_STEPS)
            deadline, outage = time.monotonic() + minutes * 60, 0
            while time.monotonic() < deadline:
                outage = world_step(engine, rng, app, tally, outage)
                if kills.due(tally.steps) and kill_one(procs, rng, tally):
                    kills.done(tally.steps)
                time.sleep(step_seconds)
                check(engine, tally)
                tally.steps += 1
            beat.send_signal(signal.SIGTERM)
            tally.drained = wait_drained(broker)
            check(engine, tally)
            tally.totals = totals(engine)
            tally.totals["cycles with the storm brake on"] = storm_cycles(logs)
        finally:
            running = [p for p in (beat, *procs) if p is not None]
            for proc in running:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20  # one deadline for all: they stop in parallel
            for proc in running:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            broker.close()
            app.close()
            engine.dispose()
    print(f"logs: {logs}")
    return tally


def report(tally: Tally, minutes: float, workers: int) -> int:
    """Print the totals and violations; 0 when clean."""
    print(f"\nchaos soak: {minutes:g} min, {workers} worker processes, {tally.steps} steps")
    print("faults injected:")
    for name, value in sorted(tally.faults.items()):
        print(f"  {name:36} {value}")
    print("what the orchestrator did:")
    for name, value in sorted(tally.totals.items()):
        print(f"  {name:36} {value}")
    print(f"  {'checker runs':36} {tally.steps + 1}")
    print(f"  {'queues drained at the end':36} {'yes' if tally.drained else 'no (timed out)'}")
    print(f"violations: {len(tally.violations)} (in {tally.violation_steps} checks)")
    for v in tally.violations:
        print(f"  {v.kind} {v.chip_id or '-'} {v.detail}")
    return 1 if tally.violations else 0


def main(argv: list[str] | None = None) -> int:
    """Command line: --minutes, --workers, --step-seconds, --seed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    data_dir = Settings.from_env().data_dir
    before = embedded.running_pids(data_dir)
    try:
        tally = soak(args.minutes, args.workers, args.step_seconds, args.seed)
    finally:
        embedded.stop_started_since(data_dir, before)  # embedded servers this run started
    return report(tally, args.minutes, args.workers)


if __name__ == "__main__":
    sys.exit(main())
