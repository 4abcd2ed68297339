"""Pure pool decisions: health, deficits, degradation, fitness, the storm brake, the plan.

No database, Redis, Celery or HTTP here: plain data in, plain data out. The repository fetches
a superset of candidates with indexed SQL; these functions make the final call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal

#: Every status a chip can have, in lifecycle order.
STATUSES = ("provisioning", "warming", "ready", "active", "degraded", "banned", "cancelled")
#: Degradation reasons, strongest first.
BANNED, LOW_TRUST, DISCONNECTED = "banned", "low_trust", "disconnected"
#: Replaced for dropping flap_max_per_hour times within an hour (the storm brake holds it too).
FLAPPING = "flapping"
#: Why purchases failed (one back-off and one alert cool-down per cause).
OUT_OF_STOCK, REFUSED_TOKEN, OTHER = "out_of_stock", "refused_token", "other"
#: Longest purchase pause after failures, in minutes.
BACKOFF_CAP_MINUTES = 30


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


@dataclass(frozen=True)
class Deficits:
    """How far each tier is below its target (never negative)."""

    producao: int
    ready: int
    warming: int


@dataclass(frozen=True)
class ChipView:
    """What the decisions need to know about one chip."""

    id: str
    status: str
    trust_score: float
    evolution_connected: bool = True
    evolution_disconnected_at: datetime | None = None
    fase_warmup: str | None = None
    warming_started_at: datetime | None = None
    degraded_at: datetime | None = None


@dataclass(frozen=True)
class Replacement:
    """A chip that should be swapped, and why."""

    chip_id: str
    reason: str


@dataclass(frozen=True)
class PurchaseGate:
    """What may hold purchases back: a back-off after failures, or no Salvy to buy from."""

    salvy_configured: bool = True
    paused_until: datetime | None = None
    cause: str | None = None
    failures: int = 0

    def paused(self, now: datetime) -> bool:
        """True while the back-off after a failed purchase lasts."""
        return self.paused_until is not None and now < self.paused_until


@dataclass(frozen=True)
class Snapshot:
    """The pool as the cycle sees it: config, counts and candidate rows, at one instant."""

    config: PoolConfig
    counts: Counts
    now: datetime
    #: active chips that are low-trust or disconnected; banned unhandled
    serving: Sequence[ChipView] = ()
    warming: Sequence[ChipView] = ()  # warming chips in fase 'operacao' with enough trust
    ready_ranked: Sequence[ChipView] = ()  # ready chips fit to serve, best first
    cancellable: Sequence[str] = ()  # banned chips already replaced (auto_cancel_banned)
    stranded: Sequence[str] = ()  # chips not active that still hold open conversations
    flapping: Sequence[str] = ()  # active chips with >= flap_max_per_hour drops in the last hour
    purchase_gate: PurchaseGate = PurchaseGate()


@dataclass(frozen=True)
class Plan:
    """What one cycle dispatches."""

    health: str
    deficits: Deficits
    replace: tuple[Replacement, ...] = ()
    promote_ready: tuple[str, ...] = ()
    promote_active: tuple[str, ...] = ()
    provision: int = 0
    cancel: tuple[str, ...] = ()
    migrate: tuple[str, ...] = ()
    storm: bool = False
    held_for_storm: tuple[str, ...] = field(default=())
    purchase_gate: PurchaseGate = PurchaseGate()


def health(config: PoolConfig, counts: Counts) -> str:
    """The seed's pool health: critico, atencao or saudavel."""
    if counts.active < config.producao_min:
        return "critico"
    if counts.ready < config.ready_min or counts.warming < config.warmup_buffer // 2:
        return "atencao"
    return "saudavel"


def deficits(config: PoolConfig, counts: Counts) -> Deficits:
    """Deficits per tier; numbers still being bought count toward the warming buffer."""
    return Deficits(
        producao=max(0, config.producao_min - counts.active),
        ready=max(0, config.ready_min - counts.ready),
        warming=max(0, config.warmup_buffer - counts.warming - counts.provisioning),
    )


def purchases_to_make(config: PoolConfig, counts: Counts, gate: PurchaseGate, now: datetime) -> int:
    """Numbers to buy now: the warming deficit (purchases in flight count), capped per cycle.

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
    return max(0, min(deficits(config, counts).warming, cap))


def backoff_minutes(failures: int, cap: int = BACKOFF_CAP_MINUTES) -> int:
    """Pause after the n-th failure in a row: 1, 2, 4, 8, 16 minutes, then the cap."""
    return min(cap, 2 ** max(0, min(failures - 1, 16)))


def is_disconnected_past_grace(chip: ChipView, config: PoolConfig, now: datetime) -> bool:
    """True once a chip has been disconnected for at least disconnect_grace_minutes."""
    if chip.evolution_connected or chip.evolution_disconnected_at is None:
        return False
    grace = timedelta(minutes=config.disconnect_grace_minutes)
    return now - chip.evolution_disconnected_at >= grace


def degraded_reason(chip: ChipView, config: PoolConfig, now: datetime) -> str | None:
    """Why a serving chip must be replaced (banned > low_trust > disconnected), or None."""
    if chip.status == "banned":
        return BANNED if chip.degraded_at is None else None
    if chip.status != "active":
        return None
    if chip.trust_score < config.trust_degraded_threshold:
        return LOW_TRUST
    if is_disconnected_past_grace(chip, config, now):
        return DISCONNECTED
    return None


def warmed_days(chip: ChipView, now: datetime) -> int | None:
    """Whole days since warm-up started (the seed's timedelta.days), or None if never started."""
    if chip.warming_started_at is None:
        return None
    return (now - chip.warming_started_at).days


def is_ready_eligible(chip: ChipView, config: PoolConfig, now: datetime) -> bool:
    """warming -> ready: trust >= trust_min_for_ready, fase 'operacao', warmed >= warmup_days."""
    days = warmed_days(chip, now)
    return (
        chip.status == "warming"
        and chip.fase_warmup == "operacao"
        and chip.trust_score >= config.trust_min_for_ready
        and days is not None
        and days >= config.warmup_days
    )


def is_fit_to_serve(chip: ChipView, config: PoolConfig) -> bool:
    """May take conversations: connected and trust >= trust_min_for_ready (replace, promote, plan)."""
    return chip.evolution_connected and chip.trust_score >= config.trust_min_for_ready


def is_storm(config: PoolConfig, active: int, disconnected: int) -> bool:
    """More than replace_storm_fraction of active chips disconnected: blame the gateway."""
    return active > 0 and disconnected > config.replace_storm_fraction * active


def plan_cycle(snap: Snapshot) -> Plan:
    """Decide the whole cycle from one snapshot."""
    config, counts, now = snap.config, snap.counts, snap.now
    disconnected = sum(
        1 for c in snap.serving if c.status == "active" and not c.evolution_connected
    )
    storm = is_storm(config, counts.active, disconnected)
    replace, held = [], []
    for chip in snap.serving:
        reason = degraded_reason(chip, config, now)
        if reason == DISCONNECTED and storm:
            held.append(chip.id)
        elif reason is not None:
            replace.append(Replacement(chip.id, reason))
    flap_storm = storm or is_storm(config, counts.active, len(snap.flapping))
    for chip_id in sorted(set(snap.flapping) - {r.chip_id for r in replace}):
        (held.append(chip_id) if flap_storm else replace.append(Replacement(chip_id, FLAPPING)))
    # A replaced banned chip frees a slot that its replacement fills; others swap one for one.
    refills = sum(1 for r in replace if r.reason == BANNED)
    room = min(config.producao_min, config.producao_max) - counts.active - refills
    fit = [c.id for c in snap.ready_ranked if c.status == "ready" and is_fit_to_serve(c, config)]
    spare_ready = fit[len(replace) :]
    need = deficits(config, counts)
    # A chip replaced this cycle takes its conversations with it: no second task for them.
    replacing = {r.chip_id for r in replace}
    # cancel refuses a chip with open conversations: cancel it once they have moved.
    stranded = set(snap.stranded)
    cancellable = [c for c in snap.cancellable if c not in stranded]
    return Plan(
        health=health(config, counts),
        deficits=need,
        replace=tuple(replace),
        promote_ready=tuple(c.id for c in snap.warming if is_ready_eligible(c, config, now)),
        promote_active=tuple(spare_ready[: max(0, room)]),
        provision=purchases_to_make(config, counts, snap.purchase_gate, now),
        cancel=tuple(cancellable) if config.auto_cancel_banned else (),
        migrate=tuple(c for c in snap.stranded if c not in replacing),
        storm=storm or bool(held),
        held_for_storm=tuple(held),
        purchase_gate=snap.purchase_gate,
    )
