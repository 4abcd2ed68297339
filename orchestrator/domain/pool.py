"""Pure pool decisions: health, deficits, degradation, fitness, the storm brake, the plan.

No database, Redis, Celery or HTTP here: plain data in, plain data out. The repository fetches
a superset of candidates with indexed SQL; these functions make the final call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The settings, counts and buying rules, here too for the modules that import them from pool.
from orchestrator.domain.buying import (  # noqa: F401
    BACKOFF_CAP_MINUTES,
    OTHER,
    OUT_OF_STOCK,
    REFUSED_TOKEN,
    RESERVE,
    SEED,
    Deficits,
    PurchaseGate,
    backoff_minutes,
    deficits,
    purchases_to_make,
    reserve,
    reserve_target,
)
from orchestrator.domain.config import STATUSES, Counts, PoolConfig  # noqa: F401

#: Degradation reasons, strongest first.
BANNED, LOW_TRUST, DISCONNECTED = "banned", "low_trust", "disconnected"
#: Replaced for dropping flap_max_per_hour times within an hour (the storm brake holds it too).
FLAPPING = "flapping"


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
    ready_fit: int | None = None  # ready chips fit to serve; None: every ready chip is
    purchase_gate: PurchaseGate = field(default_factory=PurchaseGate)


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
    #: Fit ready chips this cycle's swaps and promotions take, and the reserve left after them.
    ready_used: int = 0
    ready_left: int | None = None  # fit ready chips left after them (None: not counted)
    reserve: int = 0
    reserve_target: int = 0
    purchase_gate: PurchaseGate = field(default_factory=PurchaseGate)


def health(config: PoolConfig, counts: Counts, ready_fit: int | None = None) -> str:
    """Pool health: critico below producao_min; atencao when ready < ready_min or the reserve is
    short of its target by more than warmup_buffer // 2 (the seed's "warming < warmup_buffer //
    2" when ready = ready_min); else saudavel. Idle ready chips never raise a false atencao."""
    if counts.active < config.producao_min:
        return "critico"
    short = reserve_target(config) - reserve(counts, ready_fit)
    if counts.ready < config.ready_min or short > config.warmup_buffer // 2:
        return "atencao"
    return "saudavel"


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


def plan_cycle(snap: Snapshot, *, rule: str = RESERVE) -> Plan:
    """Decide the whole cycle from one snapshot; rule: how to buy (SEED only for simulate)."""
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
    promote_active = spare_ready[: max(0, room)]
    # Each swap takes a fit ready chip while one is left; each promotion takes one.
    used = min(len(replace), len(fit)) + len(promote_active)
    return Plan(
        health=health(config, counts, snap.ready_fit),
        deficits=need,
        replace=tuple(replace),
        promote_ready=tuple(c.id for c in snap.warming if is_ready_eligible(c, config, now)),
        promote_active=tuple(promote_active),
        provision=purchases_to_make(
            config,
            counts,
            snap.purchase_gate,
            now,
            ready_fit=snap.ready_fit,
            ready_used=used,
            rule=rule,
        ),
        cancel=tuple(cancellable) if config.auto_cancel_banned else (),
        migrate=tuple(c for c in snap.stranded if c not in replacing),
        storm=storm or bool(held),
        held_for_storm=tuple(held),
        purchase_gate=snap.purchase_gate,
        ready_used=used,
        ready_left=None if snap.ready_fit is None else max(0, snap.ready_fit - used),
        reserve=reserve(counts, snap.ready_fit, used),
        reserve_target=reserve_target(config),
    )
