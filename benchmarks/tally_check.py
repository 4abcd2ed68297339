"""What keeping the counts true costs the cycle: run_cycle with the counts' check and without.

`python -m benchmarks.tally_check [--chips N] [--runs R] [--url URL]`: the `scale` pool of
benchmarks/datagen.py (10% active, most chips long cancelled), in a scratch database (or the
already-built one at --url, e.g. a 1M-chip pool kept between runs). Medians of:
- run_cycle as it runs (the check recounts `active` and its rotation of the other statuses),
- run_cycle with the check left out (the baseline, interleaved run by run in the same process),
- the check alone, per step of its rotation,
- a promotion's recount of `active` (under its locks, before it decides),
- a recount of every status at once (what checking everything every cycle would cost).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import redis
import sqlalchemy as sa

from benchmarks.common import (
    base_urls,
    engine_for,
    free_redis_db,
    median,
    ms,
    print_table,
    scratch_database,
    timed,
)
from benchmarks.datagen import generate_pool
from orchestrator.adapters import locks
from orchestrator.domain.pool import STATUSES
from orchestrator.services import dispatch, tally
from orchestrator.store import repository as repo


def cycle_once(engine: sa.Engine, client: redis.Redis) -> tuple[float, dict]:
    """Seconds and result of one run_cycle; the queued markers of what it sent are cleared."""
    sent: list[tuple[str, list]] = []
    seconds, result = timed(
        lambda: dispatch.run_cycle(
            engine, client, lambda name, args, _id: sent.append((name, args)), period_seconds=60
        )
    )
    for name, args in sent:
        if args:
            locks.clear_queued(client, name, args[0])
    return seconds, result


@contextlib.contextmanager
def check_left_out() -> Iterator[None]:
    """run_cycle without the counts' check (the baseline)."""
    kept = tally.check_due
    tally.check_due = lambda engine: {}
    try:
        yield
    finally:
        tally.check_due = kept


def recount(engine: sa.Engine, statuses: list[str]) -> float:
    """Seconds of one check of `statuses` (recount, compare, note), rolled back."""
    with engine.connect() as conn, conn.begin():
        seconds, _ = timed(lambda: repo.check_and_correct(conn, statuses))
        conn.rollback()
    return seconds


def run(engine: sa.Engine, client: redis.Redis, runs: int) -> dict[str, float]:
    """Medians (seconds) of each way, interleaved run by run."""
    times: dict[str, list[float]] = {"with": [], "without": [], "check": []}
    corrected = 0
    for run_no in range(runs + 1):
        checked, drift = timed(lambda: tally.check_due(engine))
        with_check, result = cycle_once(engine, client)
        corrected += len(drift) + len(result["counts_corrected"])
        with check_left_out():
            without, _ = cycle_once(engine, client)
        if run_no:  # the first round warms caches and connections
            times["check"].append(checked)
            times["with"].append(with_check)
            times["without"].append(without)
    active = median([recount(engine, ["active"]) for _ in range(runs)])
    everything = median([recount(engine, list(STATUSES)) for _ in range(max(3, runs // 3))])
    return {
        **{name: median(values) for name, values in times.items()},
        **{f"{name}_max": max(values) for name, values in times.items()},
        "active": active,
        "everything": everything,
        "corrections": corrected,  # a consistent pool: any is a false drift
    }


def _pair(figures: dict[str, float], name: str) -> tuple[str, str]:
    return ms(figures[name]), ms(figures[f"{name}_max"])


def report(chips: int, figures: dict[str, float]) -> None:
    print_table(
        f"Counts checked against chips: {chips:,} chips (medians)",
        ["what", "median ms", "slowest ms"],
        [
            ("run_cycle, counts checked (active + rotation)", *_pair(figures, "with")),
            ("run_cycle, check left out (baseline)", *_pair(figures, "without")),
            ("the check alone (one step of the rotation)", *_pair(figures, "check")),
            ("a promotion's recount of active", ms(figures["active"]), ""),
            ("every status recounted at once (not done)", ms(figures["everything"]), ""),
        ],
    )
    print(f"cycle with / without the check: {figures['with'] / figures['without']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--url", help="an already-built pool (skips generation)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    database_url, redis_url = base_urls()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(scratch_database(database_url))
        engine = engine_for(url)
        stack.callback(engine.dispose)
        if not args.url:
            generate_pool(engine, args.chips, per_chip=1, mix="scale")
        with engine.connect() as conn:
            chips = conn.execute(sa.text("SELECT count(*) FROM chips")).scalar_one()
        client = redis.Redis.from_url(stack.enter_context(free_redis_db(redis_url)))
        figures = {"chips": chips, **run(engine, client, args.runs)}
        report(chips, figures)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
