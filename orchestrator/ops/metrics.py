"""Prometheus metrics: `chip-orchestrator metrics`, a process of its own beside the workers.

The workers are prefork children, so metrics kept in their memory would need prometheus-client's
multiprocess mode. Instead this process reads the state where it already lives: a few aggregate
queries on PostgreSQL and one Redis hash, the last cycle's timing (ops/metrics_read.py). A
custom collector reads at scrape time, at most once per `interval` seconds (a small cache), so
many scrapers never multiply the load on the database.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.ops.metrics_read import CycleReading, DatabaseReading, read_cycle, read_database

log = logging.getLogger(__name__)

#: Metric name prefix.
NS = "chip_orchestrator"
#: Pool health as a number, worst highest (alert on `>= 2`).
HEALTH_LEVELS = {"saudavel": 0, "atencao": 1, "critico": 2}


@dataclass
class _Cache:
    read_at: float = float("-inf")
    database: DatabaseReading | None = None
    cycle: CycleReading | None = None
    errors: dict[str, int] = field(default_factory=lambda: {"database": 0, "redis": 0})


class PoolCollector(Collector):
    """Reads PostgreSQL and Redis at scrape time, at most once per interval."""

    def __init__(
        self,
        engine: sa.Engine,
        redis_client: redis.Redis,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine, self._redis, self._interval, self._clock = (
            engine,
            redis_client,
            interval,
            clock,
        )
        self._cache = _Cache()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """The metric families for one scrape."""
        with self._lock:
            if self._clock() - self._cache.read_at >= self._interval:
                self._refresh()
            cache = self._cache
            yield from _database_metrics(cache.database)
            yield from _cycle_metrics(cache.cycle)
            yield _errors_metric(cache.errors)

    def _refresh(self) -> None:
        self._cache.read_at = self._clock()
        try:
            self._cache.database = read_database(self._engine)
        except sa.exc.SQLAlchemyError as error:
            self._cache.database = None
            self._cache.errors["database"] += 1
            log.warning("metrics: database read failed: %s", type(error).__name__)
        try:
            self._cache.cycle = read_cycle(self._redis)
        except (redis.RedisError, ValueError) as error:
            self._cache.cycle = None
            self._cache.errors["redis"] += 1
            log.warning("metrics: redis read failed: %s", type(error).__name__)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NS}_{name}", doc, value=value)


def _database_metrics(reading: DatabaseReading | None) -> Iterator[Metric]:
    yield _gauge("up", "1 if the last database read succeeded, else 0.", float(reading is not None))
    if reading is None:
        return  # no stale numbers: the series disappear and absent()/up alerts fire
    per_status = GaugeMetricFamily(f"{NS}_chips", "Chips per status.", labels=["status"])
    for status, n in reading.chips.items():
        per_status.add_metric([status], n)
    yield per_status
    if reading.health is not None:
        yield _gauge(
            "pool_health",
            "Pool health: 0 saudavel, 1 atencao, 2 critico (seed semantics).",
            HEALTH_LEVELS[reading.health],
        )
        state = GaugeMetricFamily(
            f"{NS}_pool_health_state", "1 for the pool's current health state.", labels=["state"]
        )
        for name in HEALTH_LEVELS:
            state.add_metric([name], float(name == reading.health))
        yield state
    ops = CounterMetricFamily(
        f"{NS}_operations",
        "Rows in orchestrator_operations by operacao and sucesso.",
        labels=["operacao", "sucesso"],
    )
    for (operacao, sucesso), n in sorted(reading.operations.items()):
        ops.add_metric([operacao, sucesso], n)
    yield ops
    yield _gauge(
        "provisioning_in_flight",
        "Numbers being bought at Salvy (chips in status provisioning).",
        reading.chips["provisioning"],
    )
    yield _gauge(
        "provisioning_overdue",
        "Purchases still provisioning past their deadline (reconciliation pending).",
        reading.provisioning_overdue,
    )
    yield _gauge(
        "stranded_conversations",
        "Open conversations on chips that are not active (the cycle moves them).",
        reading.stranded_conversations,
    )
    yield _gauge(
        "active_trust_score_mean", "Average trust_score of active chips.", reading.trust_mean
    )
    yield _gauge(
        "outbox_pending", "Slack messages waiting in notification_outbox.", reading.outbox_pending
    )
    yield _gauge(
        "outbox_oldest_pending_seconds",
        "Age of the oldest undelivered Slack message (0 when none is pending).",
        reading.outbox_oldest_seconds,
    )
    yield from _outbox_delivery_metrics(reading)
    yield from _planning_metrics(reading)
    yield from _tally_metrics(reading)


def _tally_metrics(reading: DatabaseReading) -> Iterator[Metric]:
    """The cached counts' checks against `chips` (drift: rows changed without the triggers)."""
    if not reading.tally_checks:
        return  # never checked yet: no series (an absent() rule notices checks never running)
    drift = GaugeMetricFamily(
        f"{NS}_status_tally_drift",
        "Chips found missing (+) or extra (-) in the cached count at its last check, by status.",
        labels=["status"],
    )
    corrections = CounterMetricFamily(
        f"{NS}_status_tally_corrections",
        "Times the cached count of a status was found wrong and corrected.",
        labels=["status"],
    )
    for status, (_, last, fixed) in sorted(reading.tally_checks.items()):
        drift.add_metric([status], last)
        corrections.add_metric([status], fixed)
    yield drift
    yield corrections
    yield _gauge(
        "status_tally_check_age_seconds",
        "Seconds since the status checked longest ago was last recounted from chips.",
        max(age for age, _, _ in reading.tally_checks.values()),
    )


def _planning_metrics(reading: DatabaseReading) -> Iterator[Metric]:
    """What the counts are compared with, and why purchases may be held back."""
    if reading.targets:
        targets = GaugeMetricFamily(
            f"{NS}_pool_target",
            "pool_config targets: producao_min, producao_max, ready_min, warmup_buffer "
            "(absent when pool_config is invalid).",
            labels=["target"],
        )
        for name, n in reading.targets.items():
            targets.add_metric([name], n)
        yield targets
    yield _gauge(
        "purchases_paused_seconds",
        "Seconds left of the purchase back-off after failed purchases (0: purchases open).",
        reading.purchases_paused_seconds,
    )
    yield _gauge(
        "purchase_consecutive_failures",
        "Failed purchases in a row the back-off counts (0 after a success).",
        reading.purchase_failures,
    )


def _outbox_delivery_metrics(reading: DatabaseReading) -> Iterator[Metric]:
    errors = GaugeMetricFamily(
        f"{NS}_outbox_last_error",
        "1 per canal whose waiting messages last failed with this Slack error code "
        "(e.g. token_revoked, channel_not_found, http_503); absent when nothing failed.",
        labels=["canal", "code"],
    )
    for canal, code in sorted(reading.outbox_last_errors.items()):
        errors.add_metric([canal, code], 1)
    yield errors
    if reading.outbox_last_delivered is not None:
        yield _gauge(
            "outbox_last_delivered_timestamp_seconds",
            "Unix time of the newest delivered outbox message (Slack, or the log).",
            reading.outbox_last_delivered,
        )


def _cycle_metrics(reading: CycleReading | None) -> Iterator[Metric]:
    if reading is None or reading.finished_at is None:
        return
    yield _gauge(
        "last_cycle_timestamp_seconds",
        "Unix time the last orchestrator.run_cycle finished planning and dispatching.",
        reading.finished_at,
    )
    if reading.duration_seconds is not None:
        yield _gauge(
            "cycle_duration_seconds",
            "How long the last orchestrator.run_cycle took (plan + alerts + dispatch).",
            reading.duration_seconds,
        )


def _errors_metric(errors: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        f"{NS}_scrape_errors",
        "Failed reads by this metrics process, by source (database, redis).",
        labels=["source"],
    )
    for source, n in errors.items():
        family.add_metric([source], n)
    return family


def build_registry(
    engine: sa.Engine, redis_client: redis.Redis, interval: float
) -> CollectorRegistry:
    """A registry holding only the pool collector (no per-process metrics of this exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(engine, redis_client, interval))
    return registry


def serve(
    engine: sa.Engine,
    host: str,
    port: int,
    interval: float,
    redis_client: redis.Redis | None = None,
) -> int:
    """Serve /metrics on host:port until SIGTERM or Ctrl-C; returns the exit code (0)."""
    if redis_client is None:
        from orchestrator.app import bootstrap

        redis_client = bootstrap.redis_client()
    server, thread = start_http_server(
        port, addr=host, registry=build_registry(engine, redis_client, interval)
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bound = server.server_port  # port 0: the one the kernel gave
    print(
        f"metrics on http://{host}:{bound}/metrics (database read every {interval:g}s)", flush=True
    )
    while not stop.wait(0.5):
        pass
    server.shutdown()
    thread.join(timeout=5)
    return 0
