"""Buying on the pool's reserve (its inventory position), not on one tier (pure).

The seed buys whenever warming < warmup_buffer, whatever the ready tier holds: the pipeline then
delivers warmup_buffer / warmup_days chips a day whatever the demand, and the ready tier drifts
(idle numbers billed every month, or an empty tier in a ban wave). Here the cycle buys on the
reserve: ready chips fit to serve (after this cycle's swaps and promotions) + warming +
provisioning, up to ready_min + warmup_buffer; at most max_provisions_per_cycle per cycle and
max_purchases_per_day in any 24 hours. With ready at ready_min this is exactly the seed's rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.domain.config import Counts, PoolConfig

#: Why purchases failed (one back-off and one alert cool-down per cause).
OUT_OF_STOCK, REFUSED_TOKEN, OTHER = "out_of_stock", "refused_token", "other"
#: Longest purchase pause after failures, in minutes.
BACKOFF_CAP_MINUTES = 30
#: Buying rules: on the reserve (ours), or on the warming tier alone (the seed's, for simulate).
RESERVE, SEED = "reserve", "seed"


@dataclass(frozen=True)
class Deficits:
    """How far each tier is below its target (never negative)."""

    producao: int
    ready: int
    warming: int


@dataclass(frozen=True)
class PurchaseGate:
    """What may hold purchases back: a back-off after failures, or no Salvy to buy from."""

    salvy_configured: bool = True
    paused_until: datetime | None = None
    cause: str | None = None
    failures: int = 0
    #: Numbers bought (or being bought) in the last 24 hours (max_purchases_per_day counts them).
    bought_last_day: int = 0
    #: When the oldest of those turns 24 hours old (a purchase fits the daily cap again).
    day_window_frees_at: datetime | None = None

    def paused(self, now: datetime) -> bool:
        """True while the back-off after a failed purchase lasts."""
        return self.paused_until is not None and now < self.paused_until

    def left_today(self, config: PoolConfig) -> int | None:
        """Purchases max_purchases_per_day still allows in the current 24 hours (None: no cap)."""
        if config.max_purchases_per_day is None:
            return None
        return max(0, config.max_purchases_per_day - self.bought_last_day)

    def capped(self, config: PoolConfig) -> bool:
        """True while max_purchases_per_day is used up."""
        return self.left_today(config) == 0


def deficits(config: PoolConfig, counts: Counts) -> Deficits:
    """Deficits per tier; numbers still being bought count toward the warming buffer."""
    return Deficits(
        producao=max(0, config.producao_min - counts.active),
        ready=max(0, config.ready_min - counts.ready),
        warming=max(0, config.warmup_buffer - counts.warming - counts.provisioning),
    )


def reserve_target(config: PoolConfig) -> int:
    """What the reserve should hold: ready_min + warmup_buffer."""
    return config.ready_min + config.warmup_buffer


def reserve(counts: Counts, ready_fit: int | None = None, ready_used: int = 0) -> int:
    """Ready chips fit to serve left after ready_used of them are taken, + warming + provisioning.

    ready_fit None: every ready chip counts as fit (the simulator's chips always are).
    """
    ready = counts.ready if ready_fit is None else ready_fit
    return max(0, ready - ready_used) + counts.warming + counts.provisioning


def purchases_to_make(
    config: PoolConfig,
    counts: Counts,
    gate: PurchaseGate,
    now: datetime,
    *,
    ready_fit: int | None = None,
    ready_used: int = 0,
    rule: str = RESERVE,
) -> int:
    """Numbers to buy now: the reserve's shortfall (the seed's rule: the warming deficit),
    capped per cycle and by what max_purchases_per_day leaves in the last 24 hours.

    None while purchases are paused after a failure or Salvy is not configured; after failures,
    one purchase at a time (a probe) until one succeeds, so a broken provider costs one attempt
    per pause instead of max_provisions_per_cycle.
    """
    if not config.auto_provision or not gate.salvy_configured or gate.paused(now):
        return 0
    cap = (
        min(1, config.max_provisions_per_cycle)
        if gate.failures
        else config.max_provisions_per_cycle
    )
    if (left := gate.left_today(config)) is not None:
        cap = min(cap, left)
    if rule == SEED:
        need = deficits(config, counts).warming
    else:
        need = reserve_target(config) - reserve(counts, ready_fit, ready_used)
    return max(0, min(need, cap))


def backoff_minutes(failures: int, cap: int = BACKOFF_CAP_MINUTES) -> int:
    """Pause after the n-th failure in a row: 1, 2, 4, 8, 16 minutes, then the cap."""
    return min(cap, 2 ** max(0, min(failures - 1, 16)))
