"""Return to service: which degraded chips go back to the ready tier (pure).

A chip replaced for a passing cause (low trust, a disconnection, flapping) is a paid number with
its warm-up done: once it is fit to serve again (connected, trust >= trust_min_for_ready, not
flapping) and was degraded at least rehab_after_minutes ago, it returns to ready and counts in
the reserve, so fewer numbers are bought. Never a banned or cancelled chip, never one replaced
for a ban at the provider (salvy_blocked) or by ops' decision (no reason, or their own words).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestrator.domain.config import PoolConfig
from orchestrator.domain.pool import DISCONNECTED, FLAPPING, LOW_TRUST, ChipView, is_fit_to_serve

#: Replacement reasons that pass: a chip replaced for one of these may come back.
PASSING = (LOW_TRUST, DISCONNECTED, FLAPPING)
#: Chips returned to ready per cycle, at most (the next cycle takes the rest).
PER_CYCLE = 100


def may_return(
    chip: ChipView, config: PoolConfig, now: datetime, *, reason: str | None, drops_last_hour: int
) -> bool:
    """A degraded chip, replaced for a passing reason, fit to serve, not flapping, degraded long
    enough ago (rehab_after_minutes; None: never)."""
    if config.rehab_after_minutes is None or chip.status != "degraded":
        return False
    if reason not in PASSING or chip.degraded_at is None:
        return False
    if config.flap_max_per_hour and drops_last_hour >= config.flap_max_per_hour:
        return False
    waited = now - chip.degraded_at >= timedelta(minutes=config.rehab_after_minutes)
    return waited and is_fit_to_serve(chip, config)
