"""A swap and a cycle at 10k / 100k / 1M chips, now and before, with the seed's way beside them.

`python -m benchmarks.scale [--sizes 10000,100000,1000000] [--runs 3]`, or `run_all --only scale`.

Each size is the `scale` pool of benchmarks/datagen.py (10% active, ten conversations per chip,
open on the active ones: 10M conversation rows at 1M chips) with the same due work at every
size: one low-trust and one disconnected chip to replace, and 5 degraded chips holding 2 open
conversations each. Two workers (4 prefork children each) run side by side on their own queues:
today's code, and `benchmarks.before_app` (the active count under the pool_config lock is
count(*) again). Runs alternate between them; each run measures ban-to-swap latency (one ban at
a time, idle workers) and a burst of simultaneous bans, then puts the pool back as it was. The
cycle is `runner.run_cycle` in-process (tasks collected, not sent), now and with the previous read
side (`GROUP BY status` over chips, the mean trust, the stranded join over every open row), and
the seed's `executar_ciclo` read side (benchmarks/seed_way.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Iterator

import redis
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.dialects import postgresql

from benchmarks import workers
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
    timed,
)
from benchmarks.datagen import SWAP_TABLES, generate_pool, vacuum_analyze
from benchmarks.db_burst import backend_cpu, db_burst
from benchmarks.seed_way import seed_cycle
from orchestrator.adapters import locks
from orchestrator.domain.pool import Counts, Plan, PoolConfig, Snapshot, plan_cycle
from orchestrator.domain.status import status_from
from orchestrator.services import cycle
from orchestrator.services import dispatch as runner
from orchestrator.store import repository as repo

SIZES = (10_000, 100_000, 1_000_000)
#: Variant -> (worker app, queue). "watched" is today's code with task events on, as while Flower
#: watches (benchmarks.watched_app): what Flower's per-task events cost a burst.
VARIANTS = {
    "now": ("tasks", "bench_now"),
    "before": ("benchmarks.before_app", "bench_before"),
    "watched": ("benchmarks.watched_app", "bench_watched"),
}
STRANDED_CHIPS, STRANDED_ROWS = 5, 2
#: The cycle's stranded query before 0005: every open row joined with its chip.
STRANDED_JOIN = """
SELECT cc.chip_id FROM conversation_chips cc JOIN chips c ON c.id = cc.chip_id
 WHERE cc.active AND c.status <> 'active' GROUP BY cc.chip_id ORDER BY cc.chip_id"""

# -- the pool ---------------------------------------------------------------------------------


def add_due_work(engine: sa.Engine) -> None:
    """Open rows on a few degraded chips (the same number at every size)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO conversation_chips (conversation_id, chip_id, active)"
                " SELECT 'stranded-' || c.id || '-' || k, c.id, true"
                "   FROM (SELECT id FROM chips WHERE status = 'degraded' ORDER BY id LIMIT :chips) c"
                "  CROSS JOIN generate_series(1, :rows) AS k"
            ),
            {"chips": STRANDED_CHIPS, "rows": STRANDED_ROWS},
        )


def checkpoint(engine: sa.Engine) -> None:
    """Flush what loading the pool wrote, so its writes do not land in the measurements."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SET statement_timeout = 0"))
        try:
            conn.execute(sa.text("CHECKPOINT"))
        except sa.exc.DBAPIError:  # not a superuser: measure anyway
            pass
        finally:
            conn.execute(sa.text("RESET statement_timeout"))


def victims(engine: sa.Engine, n: int) -> list[str]:
    """n healthy active chips, at random."""
    with engine.connect() as conn:
        ids = conn.execute(
            sa.text(
                "SELECT id::text FROM chips WHERE status = 'active' AND evolution_connected"
                " AND trust_score >= 65 ORDER BY random() LIMIT :n"
            ),
            {"n": n},
        ).scalars()
        chosen = list(ids)
    assert len(chosen) == n, f"only {len(chosen)} healthy active chips"
    return chosen


def ban(engine: sa.Engine, ids: list[str]) -> None:
    """What other services do: flip chips to banned (one statement, one commit)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET status = 'banned' WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": ids},
        )


def restore(engine: sa.Engine, ids: list[str]) -> None:
    """Swapped-out chips become fit ready chips again: the pool's make-up is as before the run."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE chips SET status = 'ready', degraded_at = NULL, trust_score = 95,"
                " evolution_connected = true, ready_at = now() WHERE id = ANY(CAST(:ids AS uuid[]))"
                " AND status = 'banned'"
            ),
            {"ids": ids},
        )
    with engine.begin() as conn:
        repo.compact_status_tally(conn)


# -- swaps (real workers) ---------------------------------------------------------------------


def latency(engine: sa.Engine, app: Celery, queue: str, ids: list[str]) -> list[float]:
    """Ban one chip, send its replace_chip, wait for the result; seconds each (idle workers)."""
    took = []
    for chip in ids:
        ban(engine, [chip])
        time.sleep(0.01)  # the workers go idle again
        sent = time.perf_counter()
        result = app.send_task(runner.REPLACE, args=[chip], queue=queue).get(timeout=60)
        took.append(time.perf_counter() - sent)
        assert result["status"] == "replaced", result
    return took


HANDLED = """
SELECT count(*) FILTER (WHERE c.degraded_at IS NOT NULL) AS handled,
       (SELECT count(*) FROM orchestrator_operations o
         WHERE o.operacao = 'auto_replace' AND o.chip_id = ANY(CAST(:ids AS uuid[]))
           AND o.created_at >= :since) AS replaced,
       (SELECT count(DISTINCT o.chip_destino_id) FROM orchestrator_operations o
         WHERE o.operacao = 'auto_replace' AND o.chip_id = ANY(CAST(:ids AS uuid[]))
           AND o.created_at >= :since) AS distinct
  FROM chips c WHERE c.id = ANY(CAST(:ids AS uuid[]))
"""


def burst(
    engine: sa.Engine,
    broker_url: str,
    queue: str,
    ids: list[str],
    worker: workers.Worker | None = None,
) -> dict:
    """Ban every chip in one statement, send their tasks as another service would (a broker-only
    client), and poll the database every 10 ms until every chip is handled.

    A light client on purpose: it shares the two cores with the worker and the database, and
    collecting 300 results over Redis pub/sub would cost the burst ~1 ms of CPU per swap.
    """
    with engine.connect() as conn:
        since = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    ban(engine, ids)
    cpu_before = (worker.cpu_seconds() if worker else 0.0), backend_cpu(engine)
    sender = Celery("bench-sender", broker=broker_url)
    start = time.perf_counter()
    with sender.producer_or_acquire() as producer:
        for chip in ids:
            sender.send_task(runner.REPLACE, args=[chip], queue=queue, producer=producer)
    sent = time.perf_counter() - start
    sender.close()
    with engine.connect() as conn:
        while True:
            row = conn.execute(sa.text(HANDLED), {"ids": ids, "since": since}).one()
            conn.rollback()
            if row.handled == len(ids) or time.perf_counter() - start > 300:
                break
            time.sleep(0.01)
    seconds = time.perf_counter() - start
    swaps = max(row.replaced, 1)
    backends = backend_cpu(engine)
    return {
        # CPU per swap, whatever else the machine runs: the worker (main + children) and the
        # PostgreSQL backends serving this database (the poll's own backend excluded).
        "worker_cpu_ms": ((worker.cpu_seconds() if worker else 0.0) - cpu_before[0]) * 1000 / swaps,
        "postgres_cpu_ms": sum(t - cpu_before[1].get(pid, 0.0) for pid, t in backends.items())
        * 1000
        / swaps,
        "seconds": seconds,
        "send_seconds": sent,
        "per_second": row.replaced / seconds,
        "statuses": {"replaced": row.replaced, "not replaced": len(ids) - row.replaced},
        # each ready chip taken once (a ready chip promoted twice would repeat here)
        "distinct_replacements": row.distinct,
    }


def warm(
    engine: sa.Engine,
    app: Celery,
    broker_url: str,
    queue: str,
    worker: workers.Worker | None = None,
    bans: int = 8,
) -> None:
    """Not counted: a few bans one at a time, then a burst of 100, each chip restored after.

    Every child has connected, prepared its statements and read a burst's pages once (a fresh
    worker's first burst costs up to ~2-4 ms more per swap).
    """
    latency(engine, app, queue, ids := victims(engine, bans))
    restore(engine, ids)
    burst(engine, broker_url, queue, ids := victims(engine, 100), worker)
    restore(engine, ids)


def active_above_max(engine: sa.Engine) -> int:
    """How far active exceeds producao_max (0 when within it), counted the slow way."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT greatest(0, (SELECT count(*) FROM chips WHERE status = 'active')"
                " - (SELECT producao_max FROM pool_config))"
            )
        ).scalar_one()


def swap_figures(
    engine: sa.Engine,
    app: Celery,
    broker_url: str,
    runs: int,
    latency_bans: int,
    burst_bans: int,
    running: dict[str, workers.Worker],
) -> dict:
    """Alternating variants, `runs` each: latency percentiles and burst throughput per run."""
    per: dict[str, dict[str, list]] = {
        v: {"p50": [], "p99": [], "rate": [], "bursts": []} for v in VARIANTS
    }
    for _, queue in VARIANTS.values():
        warm(engine, app, broker_url, queue)
    for run in range(runs):
        order = list(VARIANTS)[run % len(VARIANTS) :] + list(VARIANTS)[: run % len(VARIANTS)]
        for variant in order:
            queue = VARIANTS[variant][1]
            latency(engine, app, queue, victims(engine, 3))  # warm the children
            ids = victims(engine, latency_bans)
            took = latency(engine, app, queue, ids)
            per[variant]["p50"].append(percentile(took, 50))
            per[variant]["p99"].append(percentile(took, 99))
            restore(engine, ids)
            ids = victims(engine, burst_bans)
            result = burst(engine, broker_url, queue, ids, running[variant])
            assert result["distinct_replacements"] == result["statuses"]["replaced"], result
            per[variant]["rate"].append(result["per_second"])
            per[variant]["bursts"].append(result)
            restore(engine, ids)
            vacuum_analyze(engine, tables=SWAP_TABLES)
    return {
        v: {
            "p50": median(f["p50"]),
            "p99": median(f["p99"]),
            "rate": median(f["rate"]),
            "worker_cpu_ms": median([b["worker_cpu_ms"] for b in f["bursts"]]),
            "postgres_cpu_ms": median([b["postgres_cpu_ms"] for b in f["bursts"]]),
            "runs": f,
        }
        for v, f in per.items()
    } | {"active_above_max": active_above_max(engine)}


def db_burst_figures(engine: sa.Engine, runs: int, burst_bans: int) -> dict:
    """The burst's database side without Celery (benchmarks/db_burst.py), now and before, alternating."""
    per: dict[str, list[dict]] = {"now": [], "before": []}
    db_burst(engine, ids := victims(engine, 50))  # not counted: connections and caches warm
    restore(engine, ids)
    for run in range(runs):
        for variant in ("now", "before") if run % 2 == 0 else ("before", "now"):
            ids = victims(engine, burst_bans)
            ban(engine, ids)
            per[variant].append(db_burst(engine, ids, before=variant == "before"))
            restore(engine, ids)
            vacuum_analyze(engine, tables=SWAP_TABLES)
    return {
        variant: {key: median([r[key] for r in results]) for key in results[0]} | {"runs": results}
        for variant, results in per.items()
    }


@contextlib.contextmanager
def both_workers(url: str, redis_url: str, app: Celery) -> Iterator[dict[str, workers.Worker]]:
    """One worker per variant, each on its queue, stopped on exit."""
    with contextlib.ExitStack() as stack:
        running = {
            variant: stack.enter_context(
                workers.running_worker(url, redis_url, app, 4, worker_app=worker_app, queues=queue)
            )
            for variant, (worker_app, queue) in VARIANTS.items()
        }
        time.sleep(1)
        yield running


# -- the cycle (in-process) -------------------------------------------------------------------


def read_plan_before(
    engine: sa.Engine,
    *,
    salvy_configured: bool = True,
    trust: bool = True,
    measure: object = None,
) -> tuple[Plan, dict, PoolConfig, cycle.Sweep]:
    """The cycle's read side before this change: GROUP BY status over chips with the mean trust,
    and the stranded join over every open row."""
    from orchestrator.services import backoff

    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        config = repo.load_config(conn)
        rows = conn.execute(
            sa.text("SELECT status, count(*), avg(trust_score) FROM chips GROUP BY status")
        ).all()
        counts = Counts.from_pairs({s: n for s, n, _ in rows})
        mean = next((float(a) for s, _, a in rows if s == "active"), 0.0)
        serving = repo.serving_candidates(conn, config)
        deficit = max(0, min(config.producao_min, config.producao_max) - counts.active)
        snap = Snapshot(
            config=config,
            counts=counts,
            now=repo.db_now(conn),
            serving=serving,
            warming=repo.warming_candidates(conn, config),
            ready_ranked=repo.ready_ranked(conn, config, limit=len(serving) + deficit),
            cancellable=repo.cancellable_banned(conn) if config.auto_cancel_banned else (),
            stranded=list(conn.execute(sa.text(STRANDED_JOIN + " LIMIT 500")).scalars()),
            purchase_gate=backoff.load(conn, salvy_configured=salvy_configured),
        )
    status = status_from(snap.config, snap.counts, mean, gate=snap.purchase_gate, now=snap.now)
    return plan_cycle(snap), status, snap.config, cycle.Sweep()


@contextlib.contextmanager
def cycle_before() -> Iterator[None]:
    """run_cycle with the previous read side (and nothing to tidy)."""
    saved = cycle.read_plan, cycle.tidy
    cycle.read_plan, cycle.tidy = read_plan_before, lambda engine, sweep: {}
    try:
        yield
    finally:
        cycle.read_plan, cycle.tidy = saved


def one_cycle(engine: sa.Engine, client: redis.Redis) -> tuple[float, dict]:
    """run_cycle once, tasks collected; their queued markers cleared so the next run sends them."""
    sent: list[tuple[str, list]] = []
    seconds, result = timed(
        lambda: runner.run_cycle(
            engine,
            client,
            lambda name, args, _id: sent.append((name, args)),
            period_seconds=60,
        )
    )
    for name, args in sent:
        if args:
            locks.clear_queued(client, name, args[0])
    return seconds, result


def cycle_figures(engine: sa.Engine, redis_url: str, runs: int, seed_runs: int) -> dict:
    """run_cycle now and before (alternating), the seed's cycle; medians of wall ms."""
    client = redis.Redis.from_url(redis_url)
    walls: dict[str, list[float]] = {"now": [], "before": [], "seed": []}
    try:
        one_cycle(engine, client)  # warm caches and connections
        with cycle_before():
            one_cycle(engine, client)
        for run in range(runs):
            for variant in ("now", "before") if run % 2 == 0 else ("before", "now"):
                if variant == "before":
                    with cycle_before():
                        seconds, result = one_cycle(engine, client)
                else:
                    seconds, result = one_cycle(engine, client)
                assert result["status"] == "planned", result
                walls[variant].append(seconds)
        dispatched = result["dispatched"]
        for _ in range(seed_runs):
            walls["seed"].append(timed(lambda: seed_cycle(engine))[0])
    finally:
        client.close()
    return {
        "now": median(walls["now"]),
        "before": median(walls["before"]),
        "seed": median(walls["seed"]),
        "dispatched": dispatched,
        "walls": walls,
    }


def _sql(stmt: sa.Select) -> str:
    return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def query_breakdown(engine: sa.Engine, runs: int = 5) -> list[tuple[str, float]]:
    """Server time (EXPLAIN ANALYZE) of the queries that read more than a row or two."""
    with engine.connect() as conn:
        slices = cycle.backstop_slices(repo.count_active(conn))
    queries = {
        "status counts (tally)": "SELECT status, sum(n) FROM chip_status_tally GROUP BY status",
        "status counts, before (GROUP BY chips)": "SELECT status, count(*), avg(trust_score) FROM chips GROUP BY status",
        "active count, before (count(*))": "SELECT count(*) FROM chips WHERE status = 'active'",
        "mean trust of active chips (status, metrics)": "SELECT avg(trust_score) FROM chips WHERE status = 'active'",
        f"stranded: backstop slice (1 of {slices})": _sql(
            repo.stranded_in_range_query(500, slices // 2, slices)
        ),
        "stranded: the noted chips": _sql(repo.noted_stranded_query(10_000)),
        "stranded, before (join over every open row)": STRANDED_JOIN + " LIMIT 500",
    }
    found = []
    with engine.connect() as conn:
        for name, sql in queries.items():
            times = []
            for _ in range(runs):
                plan = conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql
                ).scalar_one()
                times.append(plan[0]["Execution Time"] / 1000)
            found.append((name, median(times)))
        conn.rollback()
    return found


# -- what the triggers cost the writers -------------------------------------------------------

HOT_ROW = """
CREATE TABLE IF NOT EXISTS bench_hot_counter (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO bench_hot_counter VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION bench_hot_counter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE bench_hot_counter SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END $$;
"""
OURS = ("chip_status_tally_update", "chips_note_stranded")


def _flips(engine: sa.Engine, chips: list[str], rounds: int) -> list[float]:
    """Each chip flipped ready <-> warming `rounds` times, one autocommit UPDATE each."""
    took = []
    with engine.connect() as conn:
        for _ in range(rounds):
            for chip in chips:
                start = time.perf_counter()
                with conn.begin():
                    conn.execute(
                        sa.text(
                            "UPDATE chips SET status = CASE status WHEN 'ready' THEN 'warming'"
                            " ELSE 'ready' END WHERE id = :id"
                        ),
                        {"id": chip},
                    )
                took.append(time.perf_counter() - start)
    return took


def _concurrent_flips(engine: sa.Engine, chips: list[list[str]], rounds: int) -> dict:
    results: list[list[float]] = [[] for _ in chips]

    def writer(i: int) -> None:
        results[i] = _flips(engine, chips[i], rounds)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(chips))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    every = [x for r in results for x in r]
    return {
        "per_second": len(every) / seconds,
        "p50": percentile(every, 50),
        "p99": percentile(every, 99),
    }


def _set_triggers(engine: sa.Engine, ours: bool, hot: bool) -> None:
    with engine.begin() as conn:
        for name in OURS:
            conn.execute(
                sa.text(f"ALTER TABLE chips {'ENABLE' if ours else 'DISABLE'} TRIGGER {name}")
            )
        conn.execute(sa.text("DROP TRIGGER IF EXISTS bench_hot_counter ON chips"))
        if hot:
            conn.execute(sa.text(HOT_ROW))
            conn.execute(
                sa.text(
                    "CREATE TRIGGER bench_hot_counter AFTER UPDATE ON chips FOR EACH ROW"
                    " WHEN (OLD.status IS DISTINCT FROM NEW.status)"
                    " EXECUTE FUNCTION bench_hot_counter()"
                )
            )


def writer_costs(engine: sa.Engine, writers: int = 4, rounds: int = 50) -> dict:
    """Another service flipping chip statuses from `writers` connections at once: no trigger,
    the tally's append-only deltas (today), and one shared counter row (the rejected design)."""
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                sa.text("SELECT id::text FROM chips WHERE status = 'ready' LIMIT :n"),
                {"n": writers * 5},
            ).scalars()
        )
    chips = [ids[i::writers] for i in range(writers)]
    figures = {}
    try:
        for name, ours, hot in (
            ("no trigger", False, False),
            ("tally (today)", True, False),
            ("one counter row", False, True),
        ):
            _set_triggers(engine, ours, hot)
            _flips(engine, chips[0], 2)  # warm
            figures[name] = {
                "single": _concurrent_flips(engine, chips[:1], rounds),
                "concurrent": _concurrent_flips(engine, chips, rounds),
            }
    finally:
        _set_triggers(engine, True, False)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS bench_hot_counter"))
            conn.execute(sa.text("DROP FUNCTION IF EXISTS bench_hot_counter()"))
            conn.execute(sa.text("SELECT chip_status_tally_resync()"))
    return figures


# -- the run ------------------------------------------------------------------------------------


def measure_size(
    url: str,
    redis_url: str,
    engine: sa.Engine,
    app: Celery,
    chips: int,
    runs: int,
    latency_bans: int,
    burst_bans: int,
) -> dict:
    """Build the pool, then cycle and swap figures for one size."""
    started = time.monotonic()
    generate_pool(engine, chips, mix="scale")
    add_due_work(engine)
    vacuum_analyze(engine)
    checkpoint(engine)
    built = time.monotonic() - started
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM conversation_chips")).scalar_one()
        counts = repo.status_counts(conn)
    seed_runs = 1 if chips >= 1_000_000 else min(runs, 3)
    figures = {
        "chips": chips,
        "conversation_rows": rows,
        "active": counts.active,
        "built_seconds": built,
        "cycle": cycle_figures(engine, redis_url, max(runs, 5), seed_runs),
        "breakdown": query_breakdown(engine),
    }
    figures["db_burst"] = db_burst_figures(engine, runs, burst_bans)
    with both_workers(url, redis_url, app) as running:
        figures["swap"] = swap_figures(
            engine, app, redis_url, runs, latency_bans, burst_bans, running
        )
    print_size(figures)
    return figures


def print_size(f: dict) -> None:
    """One size's detail tables."""
    print_table(
        f"{f['chips']:,} chips ({f['active']:,} active, {f['conversation_rows']:,} conversation"
        f" rows; built in {f['built_seconds']:.0f} s): per run",
        [
            "variant",
            "swap p50 ms",
            "swap p99 ms",
            "burst swaps/s",
            "worker CPU ms/swap",
            "PostgreSQL CPU ms/swap",
            "burst statuses",
        ],
        [
            [
                v,
                ", ".join(ms(x) for x in s["runs"]["p50"]),
                ", ".join(ms(x) for x in s["runs"]["p99"]),
                ", ".join(f"{x:.0f}" for x in s["runs"]["rate"]),
                ", ".join(f"{b['worker_cpu_ms']:.1f}" for b in s["runs"]["bursts"]),
                ", ".join(f"{b['postgres_cpu_ms']:.1f}" for b in s["runs"]["bursts"]),
                "; ".join(str(b["statuses"]) for b in s["runs"]["bursts"]),
            ]
            for v, s in f["swap"].items()
            if v in VARIANTS
        ],
    )
    print_table(
        f"{f['chips']:,} chips: server time of the cycle's heavier queries (median of 5, ms)",
        ["query", "ms"],
        [[q, ms(t)] for q, t in f["breakdown"]],
    )
    print_table(
        f"{f['chips']:,} chips: the burst's database side, no Celery (4 threads): per run",
        ["variant", "swaps/s", "client CPU ms/swap", "PostgreSQL CPU ms/swap", "WAL KiB/swap"],
        [
            [
                v,
                ", ".join(f"{r['per_second']:.0f}" for r in d["runs"]),
                ", ".join(f"{r['client_cpu_ms']:.1f}" for r in d["runs"]),
                ", ".join(f"{r['postgres_cpu_ms']:.1f}" for r in d["runs"]),
                ", ".join(f"{r['wal_kib']:.1f}" for r in d["runs"]),
            ]
            for v, d in f["db_burst"].items()
        ],
    )
    print(
        f"cycle dispatched {f['cycle']['dispatched']}; active above producao_max after the"
        f" bursts: {f['swap']['active_above_max']}"
    )


def print_summary(results: list[dict], runs: int, latency_bans: int, burst_bans: int) -> None:
    """The one table: cost of a swap and of a cycle by pool size, now / before / the seed."""
    rows = []
    for f in results:
        now, before, c, d = f["swap"]["now"], f["swap"]["before"], f["cycle"], f["db_burst"]
        rows.append(
            [
                f"{f['chips']:,}",
                f"{f['conversation_rows']:,}",
                f"{ms(now['p50'])} / {ms(before['p50'])}",
                f"{ms(now['p99'])} / {ms(before['p99'])}",
                f"{now['rate']:.0f} / {before['rate']:.0f}",
                f"{f['swap']['watched']['rate']:.0f}",
                f"{now['worker_cpu_ms']:.1f} / {before['worker_cpu_ms']:.1f}",
                f"{d['now']['per_second']:.0f} / {d['before']['per_second']:.0f}",
                f"{d['now']['postgres_cpu_ms']:.1f} / {d['before']['postgres_cpu_ms']:.1f}",
                f"{d['now']['wal_kib']:.0f}",
                f"{ms(c['now'])} / {ms(c['before'])}",
                f"{c['seed'] * 1000:,.0f}",
            ]
        )
    print_table(
        f"Scale: now / before (medians of {runs} runs; {latency_bans} single bans and a burst of"
        f" {burst_bans} per run)",
        [
            "chips",
            "conversation rows",
            "ban->swap p50 ms",
            "ban->swap p99 ms",
            "burst swaps/s",
            "burst swaps/s, task events on",
            "worker CPU ms/swap",
            "DB-side burst swaps/s",
            "PostgreSQL CPU ms/swap",
            "WAL KiB/swap",
            "run_cycle ms",
            "seed's cycle ms",
        ],
        rows,
    )


def run(
    url: str,
    redis_url: str,
    engine: sa.Engine,
    sizes: list[int],
    runs: int,
    latency_bans: int = 100,
    burst_bans: int = 300,
    writers: bool = True,
) -> dict:
    """Every size, then the summary table and what the triggers cost writers."""
    app = workers.client(redis_url)
    try:
        results = [
            measure_size(url, redis_url, engine, app, n, runs, latency_bans, burst_bans)
            for n in sizes
        ]
    finally:
        app.close()
    print_summary(results, runs, latency_bans, burst_bans)
    out: dict = {"sizes": results}
    if writers:
        out["writers"] = writer_costs(engine)
        print_table(
            "Another service flipping statuses (autocommit UPDATEs): 1 writer, then 4 at once",
            ["trigger", "1 writer p50 ms", "flips/s", "4 writers p50 ms", "p99 ms", "flips/s"],
            [
                [
                    name,
                    ms(f["single"]["p50"]),
                    f"{f['single']['per_second']:.0f}",
                    ms(f["concurrent"]["p50"]),
                    ms(f["concurrent"]["p99"]),
                    f"{f['concurrent']['per_second']:.0f}",
                ]
                for name, f in out["writers"].items()
            ],
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Scratch database and Redis DB, the machine, then every size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-bans", type=int, default=100)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    database_url, redis_base = base_urls()
    with scratch_database(database_url) as url, free_redis_db(redis_base) as redis_url:
        engine = engine_for(url)
        try:
            print_table("Machine", ["", ""], list(describe_machine(engine).items()))
            out = run(
                url,
                redis_url,
                engine,
                [int(s) for s in args.sizes.split(",")],
                args.runs,
                args.latency_bans,
                args.burst,
            )
        finally:
            engine.dispose()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
