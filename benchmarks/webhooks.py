"""The webhook receiver: ban webhook -> swap committed, and the requests/s it sustains.

`python -m benchmarks.webhooks [--quick]`: a scratch database with a pool, one worker (4 prefork
processes), the receiver as ops run it (`python -m orchestrator webhooks`, one uvicorn process),
and real HTTP requests from this process.

- Latency: one `connection.update close 403` at a time for an active chip, idle workers; the
  clock runs from just before the POST until the chip's auto_replace row is visible (polled every
  millisecond on a connection of its own): HTTP, the receiver's transaction, the broker, the
  worker's swap and its commit. Several runs; the table gives each run's p50/p99 and the medians.
- Throughput: a flood of `open` events for connected chips (auth, JSON, one upsert of the
  chip's last-event time per request) and of unknown events (auth and JSON only), from a pool of
  client threads with keep-alive sessions, for a fixed time. On 2 cores the clients share the
  CPU with the receiver and PostgreSQL, so the figure is a floor.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests
import sqlalchemy as sa

from benchmarks import workers
from benchmarks.common import (
    base_urls,
    engine_for,
    free_redis_db,
    median,
    ms,
    percentile,
    print_table,
    scratch_database,
)
from benchmarks.datagen import generate_pool, vacuum_analyze
from orchestrator.dev.receiver_process import ReceiverProcess

TOKEN = "bench-token"


@contextlib.contextmanager
def running_receiver(database_url: str, redis_url: str) -> Iterator[ReceiverProcess]:
    """The receiver on a free port (its log in a temporary file, removed afterwards)."""
    env = workers.worker_env(database_url, redis_url, WEBHOOK_TOKEN=TOKEN)
    log = Path(tempfile.mkstemp(prefix="bench-receiver-", suffix=".log")[1])
    proc = ReceiverProcess(env, log)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        log.unlink(missing_ok=True)


def _event(instance: str, state: str, code: int, event: str = "connection.update") -> dict:
    return {
        "event": event,
        "instance": instance,
        "data": {"instance": instance, "state": state, "statusReason": code},
        "date_time": datetime.now(UTC).isoformat(),
    }


def _active_instances(engine: sa.Engine, n: int) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id::text, instance_name FROM chips WHERE status = 'active'"
                " AND evolution_connected ORDER BY random() LIMIT :n"
            ),
            {"n": n},
        )
        return [tuple(r) for r in rows]


def _replaced(conn: sa.Connection, chip_id: str) -> bool:
    query = sa.text(
        "SELECT 1 FROM orchestrator_operations WHERE operacao = 'auto_replace' AND chip_id = :c"
    )
    return conn.execute(query, {"c": chip_id}).first() is not None


def _one_ban(session: requests.Session, url: str, conn: sa.Connection, chip: tuple) -> tuple:
    chip_id, instance = chip
    time.sleep(0.02)  # idle workers, as a ban arrives on its own
    start = time.perf_counter()
    answer = session.post(f"{url}/webhooks/evolution", json=_event(instance, "close", 403))
    answered = time.perf_counter() - start
    assert answer.status_code == 200 and answer.json()["replace"] == "banned", answer.text
    deadline = start + 30
    while not _replaced(conn, chip_id):
        assert time.perf_counter() < deadline, f"chip {chip_id} not replaced in 30 s"
        time.sleep(0.001)
    return answered, time.perf_counter() - start


def latency(engine: sa.Engine, url: str, bans: int, runs: int, warmup: int = 8) -> dict:
    """Ban webhook -> auto_replace committed, `runs` runs of `bans` bans each."""
    chips = _active_instances(engine, warmup + bans * runs)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    per_run = []
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        for chip in chips[:warmup]:  # fresh worker processes connect on their first task
            _one_ban(session, url, conn, chip)
        for n in range(runs):
            batch = chips[warmup + n * bans : warmup + (n + 1) * bans]
            timings = [_one_ban(session, url, conn, chip) for chip in batch]
            swap = [t for _, t in timings]
            answer = [a for a, _ in timings]
            per_run.append(
                {
                    "p50": percentile(swap, 50),
                    "p99": percentile(swap, 99),
                    "answer_p50": percentile(answer, 50),
                    "answer_p99": percentile(answer, 99),
                }
            )
    session.close()
    keys = ("p50", "p99", "answer_p50", "answer_p99")
    row = {k: median([r[k] for r in per_run]) for k in keys}
    print_table(
        f"Ban webhook -> swap committed ({runs} runs of {bans} bans, idle workers, ms)",
        ["run", "swap p50", "swap p99", "HTTP answer p50", "HTTP answer p99"],
        [[str(i + 1), *(ms(r[k]) for k in keys)] for i, r in enumerate(per_run)]
        + [["median", *(ms(row[k]) for k in keys)]],
    )
    return {**row, "runs": per_run, "bans": bans}


def answer_times(engine: sa.Engine, url: str, n: int) -> dict:
    """One request at a time (idle receiver): the answer's time by what the event does."""
    chips = _active_instances(engine, n)
    kinds = {
        "ignored event (no SQL)": lambda i: _event(i, "open", 200, "messages.upsert"),
        "open (lookup + claim, no change)": lambda i: _event(i, "open", 200),
        "close 428 (flag, trigger, flap count)": lambda i: _event(i, "close", 428),
    }
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    rows = {}
    for name, body in kinds.items():
        took = []
        for _, instance in chips:
            start = time.perf_counter()
            assert session.post(f"{url}/webhooks/evolution", json=body(instance)).ok
            took.append(time.perf_counter() - start)
        rows[name] = {"p50": percentile(took, 50), "p99": percentile(took, 99)}
    session.close()
    print_table(
        f"Receiver answer, one request at a time ({n} each, ms)",
        ["event", "p50", "p99"],
        [[name, ms(r["p50"]), ms(r["p99"])] for name, r in rows.items()],
    )
    return rows


def flood(url: str, bodies: list[dict], seconds: float, clients: int) -> dict:
    """POST bodies round-robin from `clients` threads for `seconds`; answers/s and latency."""
    stop = time.monotonic() + seconds
    lock, took, errors = threading.Lock(), [], [0]

    def client(offset: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        mine, i = [], offset
        while time.monotonic() < stop:
            start = time.perf_counter()
            answer = session.post(f"{url}/webhooks/evolution", json=bodies[i % len(bodies)])
            mine.append(time.perf_counter() - start)
            if answer.status_code != 200:
                errors[0] += 1
            i += clients
        with lock:
            took.extend(mine)
        session.close()

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.monotonic() - started
    return {
        "requests": len(took),
        "per_second": len(took) / elapsed,
        "p50": percentile(took, 50),
        "p99": percentile(took, 99),
        "errors": errors[0],
    }


def throughput(engine: sa.Engine, url: str, seconds: float, clients: int) -> dict:
    """Requests/s for `open` events (a database write each) and for ignored events (none)."""
    chips = _active_instances(engine, 500)
    rows = {
        "open (one upsert)": flood(
            url, [_event(i, "open", 200) for _, i in chips], seconds, clients
        ),
        "ignored event (no SQL)": flood(
            url, [_event(i, "open", 200, "messages.upsert") for _, i in chips], seconds, clients
        ),
    }
    print_table(
        f"Receiver throughput, one uvicorn process, {clients} client threads, {seconds:g} s each",
        ["events", "requests", "requests/s", "p50 ms", "p99 ms", "non-200"],
        [
            [
                name,
                r["requests"],
                f"{r['per_second']:,.0f}",
                ms(r["p50"]),
                ms(r["p99"]),
                r["errors"],
            ]
            for name, r in rows.items()
        ],
    )
    return rows


def run(
    database_url: str,
    redis_url: str,
    engine: sa.Engine,
    *,
    chips: int,
    bans: int,
    runs: int,
    seconds: float,
    clients: int,
) -> dict:
    """The whole benchmark on an existing scratch database and Redis DB."""
    generate_pool(engine, chips, mix="serving")
    vacuum_analyze(engine)
    app = workers.client(redis_url)
    try:
        with (
            workers.running_worker(database_url, redis_url, app, 4),
            running_receiver(database_url, redis_url) as receiver,
        ):
            results = {"answer": answer_times(engine, receiver.url, 200)}
            results["latency"] = latency(engine, receiver.url, bans, runs)
            results["throughput"] = throughput(engine, receiver.url, seconds, clients)
    finally:
        app.close()
    return results


def sizes(*, quick: bool) -> dict:
    """Pool size, bans per run, runs, flood seconds and client threads."""
    if quick:
        return {"chips": 5_000, "bans": 30, "runs": 3, "seconds": 3, "clients": 8}
    return {"chips": 5_000, "bans": 100, "runs": 5, "seconds": 10, "clients": 16}


def main(argv: list[str] | None = None) -> int:
    """Run it on a scratch database; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer bans, shorter floods")
    args = parser.parse_args(argv)
    database_url, redis_base = base_urls()
    with scratch_database(database_url) as url, free_redis_db(redis_base) as redis_url:
        engine = engine_for(url)
        try:
            run(url, redis_url, engine, **sizes(quick=args.quick))
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
