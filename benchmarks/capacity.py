"""What capacity planning costs the cycle: the history measurement and the plan with auto_size.

`python -m benchmarks.capacity [--chips N] [--years Y] [--runs R]`: a pool of N chips, and an
orchestrator_operations table holding Y years of a busy pool's history (a replacement and a
purchase per 1000 chips per day... see OPS), then medians of:
- forecast.measure over the 60-day window (what a cycle pays at most once per CACHE_SECONDS),
- cycle.plan with auto_size off, on with the measurement cached, on measuring every time,
- the simulator (simulate's default: 90 days, 24 cycles a day) for the default config.
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from benchmarks.common import (
    base_urls,
    engine_for,
    median,
    ms,
    print_table,
    scratch_database,
    timed,
)
from benchmarks.datagen import generate_pool, vacuum_analyze
from orchestrator.domain import whatif
from orchestrator.domain.forecast import History
from orchestrator.domain.pool import PoolConfig
from orchestrator.services import cycle, forecast

#: A busy history: per day, replacements (by reason) and purchases per 1000 chips, and every
#: purchase promoted to ready 23 days later; spread over :days days.
OPS = """
INSERT INTO orchestrator_operations (operacao, chip_id, motivo, metadata, sucesso, created_at)
SELECT 'auto_replace', NULL, 'bench',
       jsonb_build_object('reason', (ARRAY['banned', 'low_trust', 'disconnected'])[1 + g % 3]),
       true, now() - (g::float / :per_day) * interval '1 day'
  FROM generate_series(1, (:per_day * :days)::int) g;
WITH sample AS (
    SELECT id, now() - (row_number() OVER () / CAST(:per_day AS float)) * interval '1 day' AS bought
      FROM chips LIMIT (:per_day * :days)::int
)
INSERT INTO orchestrator_operations (operacao, chip_id, motivo, metadata, sucesso, created_at)
SELECT op, id, 'bench', '{}'::jsonb, true, at
  FROM sample, LATERAL (VALUES ('auto_provision', bought),
                               ('promotion_warming_ready', bought + interval '23 days')) v(op, at)
 WHERE at < now();
"""


def fill_history(engine: sa.Engine, chips: int, years: float) -> int:
    """The operations table of a busy pool of this size; returns its row count."""
    per_day = max(1.0, chips / 1000)
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
        for statement in OPS.split(";\n"):
            if statement.strip():
                conn.execute(sa.text(statement), {"per_day": per_day, "days": years * 365})
        rows = conn.execute(sa.text("SELECT count(*) FROM orchestrator_operations")).scalar_one()
    vacuum_analyze(engine, ("orchestrator_operations",))
    return rows


def set_auto_size(engine: sa.Engine, on: bool) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE pool_config SET auto_size = :on"), {"on": on})


def plan_ms(engine: sa.Engine, runs: int, measured: History) -> dict[str, float]:
    """Median wall time of the cycle's read side (cycle.read_plan, no mean trust) with auto_size
    off, on with the measurement cached, on measuring; interleaved run by run, so the random
    backstop slice and the caches weigh the same on each."""
    cached = lambda conn, config: measured  # noqa: E731
    ways = {"off": (False, None), "cached": (True, cached), "measuring": (True, None)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for run in range(runs + 1):
        for name, (on, measure) in ways.items():
            set_auto_size(engine, on)
            seconds, _ = timed(lambda m=measure: cycle.read_plan(engine, trust=False, measure=m))
            if run:  # the first round warms caches and connections
                times[name].append(seconds)
    return {name: median(values) for name, values in times.items()}


def run(engine: sa.Engine, chips: int, years: float, runs: int) -> dict:
    """Build the pool and its history on engine's database; print and return the medians."""
    generate_pool(engine, chips, per_chip=0)
    rows = fill_history(engine, chips, years)
    with engine.connect() as conn:
        measured = forecast.measure(conn)
    measure_s = []
    for _ in range(runs):
        with engine.connect() as conn:
            measure_s.append(timed(lambda conn=conn: forecast.measure(conn))[0])
    plans = plan_ms(engine, runs, measured)
    config = PoolConfig()
    scenario = whatif.Scenario(days=90, ban_rate=0.05, seed=1)
    sim = median([timed(lambda: whatif.compare(config, scenario))[0] for _ in range(3)])
    figures = {"measure": median(measure_s), **plans, "simulate": sim, "operations": rows}
    print_table(
        f"Capacity planning: {chips:,} chips, {rows:,} operations ({years:g} years)",
        ["what", "median"],
        [
            ("forecast.measure (60-day window)", ms(figures["measure"])),
            ("cycle read side, auto_size off", ms(plans["off"])),
            ("cycle read side, auto_size on, measurement cached", ms(plans["cached"])),
            ("cycle read side, auto_size on, measuring", ms(plans["measuring"])),
            ("simulate: 90 days x 24 cycles, the four runs", ms(sim)),
        ],
    )
    print(
        f"measured: {measured.replacements} replacements in {measured.history_days} days,"
        f" lead {measured.lead_time_days} days ({measured.lead_time_samples} chips),"
        f" bought {measured.bought}, lost {measured.lost_in_warmup}"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=200_000)
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    database_url, _ = base_urls()
    with scratch_database(database_url) as url:
        engine = engine_for(url)
        try:
            run(engine, args.chips, args.years, args.runs)
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
