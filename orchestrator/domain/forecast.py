"""Capacity planning maths: measured demand, lead time and warm-up loss -> the buffer to hold.

Pure: the history comes in as plain numbers (services/forecast.py reads it). The method, with a
worked example, is in docs/capacity.md:

- demand: replacements per day, lambda (a serving chip that had to go and needed a ready chip);
- lead time L: days from the purchase of a number to its chip being ready (measured);
- base stock S: the smallest S with P(Poisson(lambda * L) <= S - 1) >= service level, the chance
  that a replacement arriving now finds a ready chip when S chips are held or on their way;
- split: the pipeline (warmup_buffer) carries the mean demand over L, inflated by the warm-up
  loss; the ready tier (ready_min) holds the rest of S, the safety stock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from orchestrator.domain.pool import PoolConfig

#: Fewer whole days of history than this: no rate is estimated (nothing invented).
MIN_HISTORY_DAYS = 7
#: Default look-back of the forecast, in days.
DEFAULT_WINDOW_DAYS = 60
#: Upper bound of the base-stock search (a guard against a nonsensical rate, not a real limit).
MAX_BASE_STOCK = 10_000_000


@dataclass(frozen=True)
class History:
    """What the history says, as counts (services/forecast.py measures it)."""

    window_days: int
    #: Whole days of history inside the window (0: none at all).
    history_days: int
    #: The same span in fractional days (the rate's denominator).
    span_days: float = 0.0
    #: Replacements in those days: each a serving chip that needed a ready chip.
    replacements: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    #: Median days from purchase to ready of the chips that became ready in the window.
    lead_time_days: float | None = None
    lead_time_samples: int = 0
    #: Numbers bought long enough ago to have finished warming, and those lost while warming.
    bought: int = 0
    lost_in_warmup: int = 0

    @property
    def enough(self) -> bool:
        """True when the history is long enough to estimate a rate."""
        return self.history_days >= MIN_HISTORY_DAYS

    @property
    def rate(self) -> float | None:
        """Replacements per day, or None with too little history."""
        if not self.enough:
            return None
        return self.replacements / max(self.span_days, float(self.history_days))

    @property
    def loss_rate(self) -> float | None:
        """Share of numbers lost during warm-up, or None when no bought number finished warming."""
        return self.lost_in_warmup / self.bought if self.bought else None


@dataclass(frozen=True)
class Recommendation:
    """The buffer sizes for a service level, and how they were reached."""

    warmup_buffer: int
    ready_min: int
    base_stock: int
    mean_demand: float  # lambda * L: replacements expected while one purchase warms
    lead_time_days: float


def poisson_cdf(k: int, mean: float) -> float:
    """P(Poisson(mean) <= k), summed in log space (no underflow for a large mean)."""
    if k < 0:
        return 0.0
    if mean <= 0:
        return 1.0
    start = _negligible_below(mean)
    total, log_pmf = 0.0, _log_pmf(start, mean)
    for j in range(start, k + 1):
        if j > start:
            log_pmf += math.log(mean) - math.log(j)
        total += math.exp(log_pmf)
    return min(1.0, total)


def _negligible_below(mean: float) -> int:
    """A count below which Poisson(mean) has no mass a float can hold (12 sd under the mean):
    the sums start there, so their cost grows with sqrt(mean), not with mean."""
    return max(0, math.floor(mean - 12 * math.sqrt(mean)))


def _log_pmf(k: int, mean: float) -> float:
    """log P(Poisson(mean) = k)."""
    return -mean + k * math.log(mean) - math.lgamma(k + 1)


def base_stock(mean: float, service_level: float) -> int:
    """The smallest S with P(Poisson(mean) <= S - 1) >= service_level."""
    if not 0 < service_level < 1:
        raise ValueError("service_level must be in (0, 1)")
    if mean <= 0:
        return 1  # P(Poisson(0) <= 0) = 1: one chip serves the next replacement
    start = _negligible_below(mean)
    total, log_pmf, s = 0.0, _log_pmf(start, mean), start
    while s < MAX_BASE_STOCK:
        # total is P(Poisson(mean) <= s - 1) here (the mass under `start` is below 1e-30)
        if total >= service_level and s > 0:
            return s
        if s > start:
            log_pmf += math.log(mean) - math.log(s)
        total += math.exp(log_pmf)
        s += 1
    raise ValueError(f"no base stock below {MAX_BASE_STOCK} for a mean demand of {mean:g}")


def pipeline_yield(warmup_buffer: int, loss_rate: float) -> int:
    """Chips a full pipeline of warmup_buffer delivers ready, after the warm-up loss (whole)."""
    return math.floor(warmup_buffer * (1 - loss_rate) + 1e-9)


def recommend(
    rate: float, lead_time_days: float, loss_rate: float, service_level: float
) -> Recommendation:
    """Base stock over the lead time, split into the pipeline (mean) and the ready tier (safety)."""
    mean = rate * lead_time_days
    stock = base_stock(mean, service_level)
    loss = min(max(loss_rate, 0.0), 0.99)
    buffer = math.ceil(mean / (1 - loss) - 1e-9)
    ready = max(0, stock - pipeline_yield(buffer, loss))
    return Recommendation(buffer, ready, stock, mean, lead_time_days)


def p_no_ready(
    rate: float, lead_time_days: float, loss_rate: float, warmup_buffer: int, ready_min: int
) -> float:
    """Probability that a replacement finds no ready chip with this buffer (long run).

    The config holds ready_min ready plus what its pipeline yields after losses; a replacement
    finds none when the demand over the lead time exceeds that (the base-stock formula), and
    at least the share of the demand a too-small pipeline can never supply (yield / L per day
    against lambda) goes unserved whatever the ready tier holds at the start.
    """
    mean = rate * lead_time_days
    loss = min(max(loss_rate, 0.0), 0.99)
    held = ready_min + pipeline_yield(warmup_buffer, loss)
    risk = 1 - poisson_cdf(held - 1, mean)
    if mean > 0:
        risk = max(risk, 1 - min(1.0, warmup_buffer * (1 - loss) / mean))
    return min(1.0, max(0.0, risk))


def sized(config: PoolConfig, rec: Recommendation | None) -> PoolConfig:
    """auto_size: max(configured, recommended) for warmup_buffer and ready_min."""
    if rec is None or not config.auto_size:
        return config
    return replace(
        config,
        warmup_buffer=max(config.warmup_buffer, rec.warmup_buffer),
        ready_min=max(config.ready_min, rec.ready_min),
    )


def lead_time_or_assumed(history: History, config: PoolConfig) -> tuple[float, bool]:
    """The measured lead time, or warmup_days (assumed: True) when no chip got ready yet."""
    if history.lead_time_days is not None:
        return history.lead_time_days, False
    return float(config.warmup_days), True


def recommend_from(history: History, config: PoolConfig) -> Recommendation | None:
    """The recommendation for config's service level, or None with too little history."""
    if history.rate is None:
        return None
    lead, _ = lead_time_or_assumed(history, config)
    return recommend(history.rate, lead, history.loss_rate or 0.0, config.service_level)


def auto_size_view(configured: PoolConfig, used: PoolConfig, rec: Recommendation | None) -> dict:
    """What status/plan show about auto_size: on, configured, recommended, used."""
    return {
        "on": configured.auto_size,
        "configured": {
            "warmup_buffer": configured.warmup_buffer,
            "ready_min": configured.ready_min,
        },
        "recommended": None
        if rec is None
        else {"warmup_buffer": rec.warmup_buffer, "ready_min": rec.ready_min},
        "used": {"warmup_buffer": used.warmup_buffer, "ready_min": used.ready_min},
    }
