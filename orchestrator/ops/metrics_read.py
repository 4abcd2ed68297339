"""What the metrics read: a few aggregate queries on PostgreSQL, and the cycle's Redis hash.

Never one row per chip, never the operations history: the metrics process runs beside the
workers against production, and its cost must not grow with the pool's age.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
import sqlalchemy as sa

from orchestrator.adapters import cycle_timing
from orchestrator.domain.pool import STATUSES, health
from orchestrator.errors import ConfigError
from orchestrator.services import backoff
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.schema import chips

#: pool_config settings exported as targets (chip_orchestrator_pool_target{target}).
TARGETS = ("producao_min", "producao_max", "ready_min", "warmup_buffer")
#: Every operacao the database accepts; exported at zero until the first one happens.
OPERACOES = (
    "auto_replace",
    "auto_provision",
    "promotion_warming_ready",
    "promotion_ready_active",
    "demotion",
    "migration",
    "cancel",
    "rehabilitation",
    "config_change",
)


@dataclass(frozen=True)
class DatabaseReading:
    """What one pass over PostgreSQL saw."""

    chips: dict[str, int]
    trust_mean: float
    health: str | None  # None when pool_config is missing or invalid
    operations: dict[tuple[str, str], int]
    provisioning_overdue: int
    outbox_pending: int
    outbox_oldest_seconds: float
    stranded_conversations: int
    outbox_last_errors: dict[str, str] = field(default_factory=dict)  # canal -> error code
    outbox_last_delivered: float | None = None  # unix time
    targets: dict[str, int] = field(default_factory=dict)  # empty when pool_config is invalid
    purchases_paused_seconds: float = 0.0  # left of the purchase back-off; 0 when open
    purchase_failures: int = 0  # consecutive failed purchases the back-off counts
    # status -> (seconds since its cached count was checked, last drift, corrections made)
    tally_checks: dict[str, tuple[float, int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class CycleReading:
    """The last planned cycle, from Redis (None fields before the first cycle)."""

    finished_at: float | None = None
    duration_seconds: float | None = None


def read_database(engine: sa.Engine) -> DatabaseReading:
    """The pool's numbers from aggregate queries only (never one row per chip)."""
    with engine.connect() as conn:
        counts, trust = repo.count_by_status(conn)
        try:
            config = repo.load_config(conn)
            pool_health: str | None = health(config, counts)
            targets = {name: getattr(config, name) for name in TARGETS}
        except ConfigError:
            pool_health, targets = None, {}
        # From the tally the triggers keep (0013): a handful of rows, never the whole history.
        ops = repo.operation_counts(conn)
        overdue = conn.execute(
            sa.select(sa.func.count()).where(
                chips.c.status == "provisioning", chips.c.provisioning_deadline < sa.func.now()
            )
        ).scalar_one()
        stranded = repo.stranded_conversations(conn)
        gate, now = backoff.load(conn), repo.db_now(conn)
        checks = {
            r.status: ((now - r.checked_at).total_seconds(), r.last_drift, r.corrections)
            for r in repo.tally_check_rows(conn)
        }
    box = outbox.read_outbox(engine)
    by_op = {(op, "true"): 0 for op in OPERACOES} | {(op, "false"): 0 for op in OPERACOES}
    for (operacao, sucesso), n in ops.items():
        by_op[(operacao, "true" if sucesso else "false")] = n
    return DatabaseReading(
        chips={s: getattr(counts, s) for s in STATUSES},
        trust_mean=trust,
        health=pool_health,
        operations=by_op,
        provisioning_overdue=overdue,
        outbox_pending=box.pending,
        outbox_oldest_seconds=box.oldest_pending_seconds,
        outbox_last_errors=box.last_errors,
        outbox_last_delivered=box.last_delivered_at,
        stranded_conversations=stranded,
        targets=targets,
        purchases_paused_seconds=(
            (gate.paused_until - now).total_seconds() if gate.paused(now) else 0.0
        ),
        purchase_failures=gate.failures or 0,
        tally_checks=checks,
    )


def read_cycle(client: redis.Redis) -> CycleReading:
    """The last cycle's finish time and duration, as the cycle left them (adapters/cycle_timing)."""
    return CycleReading(*cycle_timing.read(client))
