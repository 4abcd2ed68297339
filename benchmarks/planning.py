"""run_cycle's planning (orchestrator.services.cycle.plan) against the seed's way, by pool size."""

from __future__ import annotations

import json

import sqlalchemy as sa

from benchmarks.common import QueryClock, median, ms, print_table, timed
from benchmarks.datagen import generate_pool
from benchmarks.seed_way import seed_cycle
from orchestrator.services import cycle


def explain_ms(
    engine: sa.Engine, statements: list[tuple[str, object, float]]
) -> list[tuple[str, float]]:
    """Server execution time (EXPLAIN ANALYZE) of each SELECT the plan sent."""
    found = []
    with engine.connect() as conn:
        for statement, params, _ in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            plan = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + statement, params
            ).scalar_one()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            found.append((" ".join(statement.split())[:90], plan[0]["Execution Time"] / 1000))
        conn.rollback()
    return found


def measure_size(engine: sa.Engine, chips: int, runs: int) -> dict:
    """Medians for one pool size: ours (wall, client-side DB, server) and the seed's way."""
    generate_pool(engine, chips)
    clock = QueryClock().attach(engine)
    ours_wall, ours_db, seed_wall, seed_db, seed_pc_wall, server = [], [], [], [], [], []
    try:
        cycle.plan(engine), seed_cycle(engine)  # warm caches and connections
        for _ in range(runs):
            clock.reset()
            seconds, (the_plan, _status, _config) = timed(lambda: cycle.plan(engine))
            ours_wall.append(seconds)
            ours_db.append(clock.seconds)
            statements, queries = list(clock.statements), len(clock.statements)
            clock.reset()
            seconds, seed = timed(lambda: seed_cycle(engine))
            seed_wall.append(seconds)
            seed_db.append(clock.seconds)
            seed_queries = len(clock.statements)
            clock.reset()
            seconds, _ = timed(lambda: seed_cycle(engine, per_change=True))
            seed_pc_wall.append(seconds)
            seed_pc_queries = len(clock.statements)
        for _ in range(min(runs, 5)):
            breakdown = explain_ms(engine, statements)
            server.append(sum(t for _, t in breakdown))
    finally:
        clock.detach(engine)
    return {
        "chips": chips,
        "ours_wall": median(ours_wall),
        "ours_db": median(ours_db),
        "ours_server": median(server),
        "ours_queries": queries,
        "seed_wall": median(seed_wall),
        "seed_db": median(seed_db),
        "seed_queries": seed_queries,
        "seed_pc_wall": median(seed_pc_wall),
        "seed_pc_queries": seed_pc_queries,
        "plan": {
            "replace": len(the_plan.replace),
            "promote_ready": len(the_plan.promote_ready),
            "promote_active": len(the_plan.promote_active),
            "provision": the_plan.provision,
        },
        "seed_plan": seed,
        "breakdown": breakdown,
    }


def run(engine: sa.Engine, sizes: list[int], runs: int) -> list[dict]:
    """Measure every size and print the table (and the per-query breakdown at the largest)."""
    results = [measure_size(engine, n, runs) for n in sizes]
    rows = [
        [
            f"{r['chips']:,}",
            f"{r['chips'] * 10:,}",
            ms(r["ours_wall"]),
            ms(r["ours_db"]),
            ms(r["ours_server"]),
            r["ours_queries"],
            ms(r["seed_wall"]),
            r["seed_queries"],
            f"{r['seed_wall'] / r['ours_wall']:.0f}x",
            ms(r["seed_pc_wall"]),
            r["seed_pc_queries"],
            f"{r['seed_pc_wall'] / r['ours_wall']:.0f}x",
        ]
        for r in results
    ]
    print_table(
        f"Planning one cycle (medians of {runs} runs, ms)",
        [
            "chips",
            "conversations",
            "plan wall",
            "plan db (client)",
            "plan db (server)",
            "queries",
            "seed wall",
            "queries",
            "seed / plan",
            "seed + per-change reads",
            "queries",
            "ratio",
        ],
        rows,
    )
    last = results[-1]
    print_table(
        f"Plan's queries at {last['chips']:,} chips (EXPLAIN ANALYZE, one run, ms)",
        ["query", "server ms"],
        [[q, ms(t)] for q, t in last["breakdown"]],
    )
    print(f"plan decided {last['plan']}; seed would decide {last['seed_plan']}")
    return results
