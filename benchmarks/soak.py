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
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from celery import Celery

from benchmarks.common import base_urls, engine_for, free_redis_db, scratch_database
from benchmarks.workers import QUEUES, worker_env
from orchestrator import checker, simulator
from orchestrator.salvy_standin import SalvyStandin
from orchestrator.schema import chips, conversation_chips, pool_config
from orchestrator.settings import ROOT

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
#: Chance per step that one worker process is SIGKILLed (the prefork parent respawns it).
KILL_CHANCE = 0.08


@dataclass
class Tally:
    """What the soak did and what the checker found."""

    steps: int = 0
    faults: Counter = field(default_factory=Counter)
    totals: dict[str, int] = field(default_factory=dict)
    violations: list[checker.Violation] = field(default_factory=list)
    violation_steps: int = 0


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


def kill_one(workers: list[subprocess.Popen], rng: random.Random, tally: Tally) -> None:
    """SIGKILL one prefork child of a random worker (its task is redelivered: acks_late)."""
    kids = children(rng.choice(workers).pid)
    if kids:
        os.kill(rng.choice(kids), signal.SIGKILL)
        tally.faults["worker processes killed"] += 1


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
        procs = [
            start(["worker", "-P", "prefork", "-c", "1", "-Q", QUEUES, "-n", f"soak{i}-{os.getpid()}@%h",
                   "--without-gossip", "--without-mingle", "-l", "INFO"], env, logs, f"worker{i}")
            for i in range(workers)
        ]  # fmt: skip
        beat = start(
            ["beat", "-l", "INFO", "--schedule", str(logs / "beat-schedule")], env, logs, "beat"
        )
        app = Celery("soak", broker=redis_url)
        app.conf.update(task_serializer="json", accept_content=["json"])
        try:
            time.sleep(3)
            deadline, outage = time.monotonic() + minutes * 60, 0
            while time.monotonic() < deadline:
                outage = world_step(engine, rng, app, tally, outage)
                if rng.random() < KILL_CHANCE:
                    kill_one(procs, rng, tally)
                time.sleep(step_seconds)
                check(engine, tally)
                tally.steps += 1
            beat.send_signal(signal.SIGTERM)
            time.sleep(5)  # let the last dispatched tasks finish
            check(engine, tally)
            tally.totals = totals(engine)
            tally.totals["cycles with the storm brake on"] = storm_cycles(logs)
        finally:
            for proc in (beat, *procs):
                proc.send_signal(signal.SIGTERM)
            for proc in (beat, *procs):
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
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
    tally = soak(args.minutes, args.workers, args.step_seconds, args.seed)
    return report(tally, args.minutes, args.workers)


if __name__ == "__main__":
    sys.exit(main())
