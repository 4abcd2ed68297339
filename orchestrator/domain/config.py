"""The pool's settings (the pool_config row) and its counts per status: plain data.

A leaf of the domain: pool.py (the rules) and buying.py (what to buy) both build on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal

#: Every status a chip can have, in lifecycle order.
STATUSES = ("provisioning", "warming", "ready", "active", "degraded", "banned", "cancelled")


@dataclass(frozen=True)
class PoolConfig:
    """The single pool_config row."""

    producao_min: int = 10
    producao_max: int = 20
    ready_min: int = 3
    warmup_buffer: int = 10
    warmup_days: int = 21
    trust_min_for_ready: float = 85
    trust_degraded_threshold: float = 60
    auto_provision: bool = True
    default_ddd: int = 11
    max_provisions_per_cycle: int = 3
    disconnect_grace_minutes: int = 30
    replace_storm_fraction: float = 0.5
    auto_cancel_banned: bool = False
    alert_cooldown_minutes: int = 30
    #: Disconnections within an hour that make a chip flapping (replaced); 0 turns it off.
    flap_max_per_hour: int = 6
    #: BRL per number per month; None: unknown (reports and the simulator say so).
    number_monthly_cost: float | None = None
    #: Target probability that a replacement finds a ready chip (the forecast's recommendation).
    service_level: float = 0.95
    #: The cycle uses max(configured, recommended) for warmup_buffer and ready_min.
    auto_size: bool = False
    #: Numbers bought in any 24 hours, at most; None: no cap.
    max_purchases_per_day: int | None = None
    #: A degraded chip fit to serve again returns to ready after this long; None: never.
    rehab_after_minutes: int | None = 60

    @classmethod
    def from_mapping(cls, row: Mapping[str, object]) -> PoolConfig:
        """Build from a database row, ignoring columns we do not model (numeric -> float)."""
        values = {f.name: row[f.name] for f in fields(cls) if f.name in row}
        if isinstance(values.get("number_monthly_cost"), Decimal):
            values["number_monthly_cost"] = float(values["number_monthly_cost"])
        return cls(**values)

    def problems(self) -> list[str]:
        """What makes this config nonsensical (the database's CHECKs, repeated as a last line)."""
        found = []
        sizes = ("producao_min", "producao_max", "ready_min", "warmup_buffer", "warmup_days")
        found += [f"{name} is negative" for name in sizes if getattr(self, name) < 0]
        if self.producao_min > self.producao_max:
            found.append("producao_min exceeds producao_max")
        for name in ("trust_min_for_ready", "trust_degraded_threshold"):
            if not 0 <= getattr(self, name) <= 100:
                found.append(f"{name} outside 0..100")
        if not 0 < self.replace_storm_fraction <= 1:
            found.append("replace_storm_fraction outside (0, 1]")
        if self.flap_max_per_hour < 0:
            found.append("flap_max_per_hour is negative")
        if self.number_monthly_cost is not None and self.number_monthly_cost < 0:
            found.append("number_monthly_cost is negative")
        if not 0 < self.service_level < 1:
            found.append("service_level outside (0, 1)")
        for name in ("max_purchases_per_day", "rehab_after_minutes"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                found.append(f"{name} is negative")
        return found


@dataclass(frozen=True)
class Counts:
    """How many chips are in each status."""

    provisioning: int = 0
    warming: int = 0
    ready: int = 0
    active: int = 0
    degraded: int = 0
    banned: int = 0
    cancelled: int = 0

    @classmethod
    def from_pairs(cls, pairs: Mapping[str, int]) -> Counts:
        """Build from {status: count}; statuses missing from the mapping count zero."""
        return cls(**{s: int(pairs.get(s, 0)) for s in STATUSES})
