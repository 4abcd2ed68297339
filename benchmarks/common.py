"""What every benchmark shares: a scratch database, a free Redis DB, the machine, statistics."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa

from orchestrator.app.settings import Settings
from orchestrator.dev import scratch
from orchestrator.store import db

#: Key that marks a Redis DB number as taken by a benchmark run.
REDIS_CLAIM = "chiporch:bench-claim"


def base_urls() -> tuple[str, str]:
    """DATABASE_URL and REDIS_URL (falling back to the embedded servers, as the tests do)."""
    from orchestrator.app import bootstrap

    settings = Settings.from_env()
    return bootstrap.database_url(settings), bootstrap.redis_url(settings)


def scratch_database(base_url: str) -> contextlib.AbstractContextManager[str]:
    """A fresh database on base_url's server, migrated to head, dropped afterwards."""
    return scratch.scratch_database(base_url, prefix="chiporch_bench")


@contextlib.contextmanager
def free_redis_db(base_url: str) -> Iterator[str]:
    """A Redis DB number nobody uses (claimed with SET NX), flushed afterwards."""
    base = base_url.rsplit("/", 1)[0]
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base}/{number}")
        if client.dbsize() == 0 and client.set(REDIS_CLAIM, "1", nx=True, ex=3600):
            try:
                yield f"{base}/{number}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no free Redis DB number (1..15) for the benchmark")


def engine_for(url: str, **kwargs: object) -> sa.Engine:
    """The same engine the workers build (orchestrator.store.db.create_engine), its connections
    named `chiporch-bench` (so CPU accounting can tell them from the workers')."""
    engine = db.create_engine(url, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _name(dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET application_name = 'chiporch-bench'")
        dbapi_connection.commit()

    return engine


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _memory_gib() -> float:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
        return kib / 2**20
    return 0.0


def describe_machine(engine: sa.Engine) -> dict[str, str]:
    """CPU, cores, memory, PostgreSQL and Redis versions, and the settings that bound commits."""
    with engine.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        settings = {
            name: conn.execute(sa.text(f"SHOW {name}")).scalar_one()
            for name in ("shared_buffers", "synchronous_commit", "work_mem")
        }
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{_memory_gib():.1f} GiB",
        "python": platform.python_version(),
        "postgresql": version,
        "postgresql settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
        "kernel": platform.release(),
    }


def median(values: Sequence[float]) -> float:
    """The median (0 for no values)."""
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass
class QueryClock:
    """Times every statement an engine sends (cursor execute: server time plus round trip)."""

    seconds: float = 0.0
    statements: list[tuple[str, object, float]] = field(default_factory=list)
    _started: dict[int, float] = field(default_factory=dict)

    def attach(self, engine: sa.Engine) -> QueryClock:
        """Start listening on engine."""
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        return self

    def detach(self, engine: sa.Engine) -> None:
        """Stop listening."""
        sa.event.remove(engine, "before_cursor_execute", self._before)
        sa.event.remove(engine, "after_cursor_execute", self._after)

    def reset(self) -> None:
        """Forget what was measured so far."""
        self.seconds, self.statements = 0.0, []

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        took = time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())
        self.seconds += took
        self.statements.append((statement, parameters, took))


def ms(seconds: float) -> str:
    """Seconds as milliseconds, 1 decimal (or 2 below 10 ms)."""
    value = seconds * 1000
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table (Markdown-compatible, so it can be pasted into docs/benchmarks.md)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n### {title}\n")
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(flush=True)
