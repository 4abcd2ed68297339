"""Capacity planning maths for the reserve policy: measured demand, lead time and warm-up loss
-> the reserve target to hold, and its split into warmup_buffer and ready_min.

Pure: the history comes in as plain numbers (services/forecast.py reads it). The method, with a
worked example, is in docs/capacity.md:

- demand lambda: ready chips consumed per day (a serving chip that had to go and took, or found
  no, ready chip; a ready chip lost), less the chips returned to service (the cycle does not buy
  those again). A number lost while warming is warm-up loss q, never demand;
- lead time L: days from the purchase of a number to its chip being ready (measured);
- the cycle buys on the reserve (ready + warming + provisioning) up to S = ready_min +
  warmup_buffer: a base-stock policy. Every ready chip consumed and every number lost warming is
  bought again at once, so the pipeline holds the last L days' purchases, Poisson with mean
  lambda * L / (1 - q), and ready = S - pipeline. A replacement finds a ready chip when the
  pipeline holds fewer than S: S is the smallest with P(Poisson(lambda L / (1 - q)) <= S - 1)
  >= service level;
- split: warmup_buffer = ceil(lambda L / (1 - q)), the pipeline's mean; ready_min = the rest of
  S, the safety stock (at least one chip while there is demand);
- a loss above LOSS_CAP is flagged and planned as LOSS_CAP: buying more numbers does not fix a
  warm-up that loses most of them (the old 0.99 clamp let the buffer reach 100x the demand).
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
#: Warm-up loss above this is flagged, and planned at this: the pipeline is at most doubled.
LOSS_CAP = 0.5


@dataclass(frozen=True)
class History:
    """What the history says, as counts (services/forecast.py measures it)."""

    window_days: int
    #: Whole days of history inside the window (0: none at all).
    history_days: int
    #: The same span in fractional days (the rate's denominator).
    span_days: float = 0.0
    #: Ready chips consumed in those days (a serving chip that needed one, a ready chip lost).
    replacements: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    #: Degraded chips returned to ready in those days (return to service).
    returned: int = 0
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
    def demand(self) -> float | None:
        """Ready chips consumed per day net of the chips returned to service: what the cycle
        buys again (None with too little history)."""
        if self.rate is None:
            return None
        return max(0, self.replacements - self.returned) / max(
            self.span_days, float(self.history_days)
        )

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
    mean_demand: float  # lambda * L: ready chips consumed while one purchase warms
    lead_time_days: float
    #: The warm-up loss the maths used (the measured one, at most LOSS_CAP).
    planned_loss: float = 0.0
    #: The measured loss was above LOSS_CAP: flagged, planned at LOSS_CAP.
    loss_flagged: bool = False

    @property
    def target(self) -> int:
        """The reserve target: ready_min + warmup_buffer."""
        return self.ready_min + self.warmup_buffer


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


def planned_loss(loss_rate: float | None) -> float:
    """The warm-up loss to plan on: the measured share, bounded to [0, LOSS_CAP]."""
    return min(max(loss_rate or 0.0, 0.0), LOSS_CAP)


def loss_flagged(loss_rate: float | None) -> bool:
    """True when the measured warm-up loss is too high to plan on (above LOSS_CAP)."""
    return loss_rate is not None and loss_rate > LOSS_CAP


def pipeline_mean(rate: float, lead_time_days: float, loss_rate: float | None) -> float:
    """Numbers on their way under the reserve policy, on average: lambda * L / (1 - q)."""
    return rate * lead_time_days / (1 - planned_loss(loss_rate))


def recommend(
    rate: float, lead_time_days: float, loss_rate: float | None, service_level: float
) -> Recommendation:
    """The reserve's base stock over the lead time, split into pipeline (mean) and safety."""
    pipeline = pipeline_mean(rate, lead_time_days, loss_rate)
    stock = base_stock(pipeline, service_level)
    buffer = math.ceil(pipeline - 1e-9)
    # One ready chip at least while there is demand: the one the next replacement takes.
    ready = max(stock - buffer, 1 if rate > 0 else 0)
    return Recommendation(
        warmup_buffer=buffer,
        ready_min=ready,
        base_stock=buffer + ready,
        mean_demand=rate * lead_time_days,
        lead_time_days=lead_time_days,
        planned_loss=planned_loss(loss_rate),
        loss_flagged=loss_flagged(loss_rate),
    )


def p_no_ready(
    rate: float,
    lead_time_days: float,
    loss_rate: float | None,
    warmup_buffer: int,
    ready_min: int,
    max_per_day: int | None = None,
) -> float:
    """Probability that a replacement finds no ready chip with this config (long run).

    The cycle holds the reserve at S = ready_min + warmup_buffer: a replacement finds none when
    the pipeline (Poisson, mean lambda L / (1 - q)) holds S or more. How S is split does not
    matter. A daily purchase cap below what the demand and the losses need leaves at least that
    share unserved, whatever S is.
    """
    held = ready_min + warmup_buffer
    risk = 1 - poisson_cdf(held - 1, pipeline_mean(rate, lead_time_days, loss_rate))
    if max_per_day is not None and rate > 0:
        supplied = max_per_day * (1 - planned_loss(loss_rate))
        risk = max(risk, 1 - min(1.0, supplied / rate))
    return min(1.0, max(0.0, risk))


def sized(config: PoolConfig, rec: Recommendation | None) -> PoolConfig:
    """auto_size: max(configured, recommended) for warmup_buffer and ready_min; the purchase
    caps (max_provisions_per_cycle, max_purchases_per_day) stay as configured."""
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
    if history.demand is None:
        return None
    lead, _ = lead_time_or_assumed(history, config)
    return recommend(history.demand, lead, history.loss_rate, config.service_level)


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
