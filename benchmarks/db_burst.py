"""The database side of a burst of bans, without Celery: what the swap itself costs by pool size.

300 banned chips replaced by 4 threads calling `services.replacement.replace_chip` in this
process (a busy answer is retried at once, as the worker's short retry would), today's way and
the previous way (benchmarks/before_code.py). Besides swaps/s: CPU per swap in this process and
in the PostgreSQL backends, and the WAL written per swap, which do not depend on what else the
machine is running.
"""

from __future__ import annotations

import queue
import threading
import time

import sqlalchemy as sa

from benchmarks import before_code, workers
from orchestrator.errors import TransientError
from orchestrator.services import replacement
from orchestrator.store import db

THREADS = 4


def backend_cpu(engine: sa.Engine) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend of this database but the benchmark's."""
    with engine.connect() as conn:
        pids = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend'"
                " AND application_name NOT LIKE 'chiporch-bench%'"
            )
        ).scalars()
        return {pid: workers.cpu_seconds(pid) for pid in pids}


def _wal_lsn(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_current_wal_lsn()::text")).scalar_one()


def _swap_all(engine: sa.Engine, ids: list[str]) -> int:
    todo: queue.Queue[str] = queue.Queue()
    for chip in ids:
        todo.put(chip)
    replaced = []

    def work() -> None:
        while True:
            try:
                chip = todo.get_nowait()
            except queue.Empty:
                return
            while True:
                try:
                    result = replacement.replace_chip(engine, chip, "banned")
                    break
                except TransientError:
                    continue
            replaced.append(result["status"] == "replaced")

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(replaced)


def db_burst(engine: sa.Engine, ids: list[str], before: bool = False) -> dict:
    """Replace every (already banned) chip in ids; figures per swap."""
    # The swaps' own engine: its connections are not named chiporch-bench, so they count.
    url = engine.url.render_as_string(hide_password=False)
    swapper = db.create_engine(url, pool_size=THREADS, max_overflow=0)
    try:
        with swapper.connect() as conn:  # connected before the clock starts
            conn.execute(sa.text("SELECT 1"))
        lsn, backends = _wal_lsn(engine), backend_cpu(engine)
        cpu, start = time.process_time(), time.perf_counter()
        if before:
            with before_code.patched():
                replaced = _swap_all(swapper, ids)
        else:
            replaced = _swap_all(swapper, ids)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        after = backend_cpu(engine)
        with engine.connect() as conn:
            wal = conn.execute(
                sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:lsn AS pg_lsn))"),
                {"lsn": lsn},
            ).scalar_one()
    finally:
        swapper.dispose()
    swaps = max(replaced, 1)
    return {
        "replaced": replaced,
        "per_second": replaced / seconds,
        "client_cpu_ms": cpu * 1000 / swaps,
        "postgres_cpu_ms": sum(t - backends.get(pid, 0.0) for pid, t in after.items())
        * 1000
        / swaps,
        "wal_kib": float(wal) / 1024 / swaps,
    }
