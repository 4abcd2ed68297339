"""What-if: the pool played forward in simulated time, decided by the cycle's own plan.

Every simulated cycle builds a pool.Snapshot from the simulated chips and calls
pool.plan_cycle, the function the real cycle calls (with the seed's buying rule for the `seed`
run), then applies the plan as the tasks would:
replacements take the first ready chip, warmed chips become ready, purchases arrive after
`purchase_days` and warm for `warmup_days`. Bans are a Poisson process of `ban_rate` per active
chip per day; a share `warmup_loss` of the numbers is lost while warming. Pure and
deterministic for a seed (random.Random); no database. Cost: `number_monthly_cost` per number
per calendar month in which it was held (the report's rule: a cancelled number is billed its
whole month); simulated time starts on EPOCH, the first of a month.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from orchestrator.domain.buying import RESERVE, SEED
from orchestrator.domain.forecast import Recommendation, recommend
from orchestrator.domain.pool import ChipView, Counts, PoolConfig, Snapshot, plan_cycle

#: Simulated time starts here (any fixed instant: only differences matter).
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
#: Trust of every simulated chip (fit to serve and to be promoted under the default config).
TRUST = 95.0


@dataclass(frozen=True)
class Scenario:
    """The world the pool lives in."""

    days: int = 90
    ban_rate: float = 0.0  # bans per active chip per day
    warmup_loss: float = 0.0  # share of numbers lost while warming
    purchase_days: float = 0.0  # purchase -> warming
    cycles_per_day: int = 24  # must divide 1440 (cycles on whole minutes)
    seed: int = 0

    def problems(self) -> list[str]:
        """What makes this scenario nonsensical."""
        found = []
        if self.days < 1:
            found.append("days must be at least 1")
        if self.ban_rate < 0:
            found.append("ban rate is negative")
        if not 0 <= self.warmup_loss < 1:
            found.append("warm-up loss outside [0, 1)")
        if self.purchase_days < 0:
            found.append("purchase delay is negative")
        if self.cycles_per_day < 1 or 1440 % self.cycles_per_day:
            found.append("cycles per day must divide 1440")
        return found


@dataclass(frozen=True)
class StartPool:
    """The pool on day 0: chips per tier; warming chips by days already warmed."""

    active: int
    ready: int
    warming_ages: tuple[float, ...] = ()
    provisioning: int = 0

    @classmethod
    def spread(cls, active: int, ready: int, warming: int, warmup_days: int, provisioning: int = 0):
        """Warming chips spread evenly over the warm-up (the oldest graduates first)."""
        ages = tuple(warmup_days * (warming - i) / (warming + 1) for i in range(warming))
        return cls(active, ready, ages, provisioning)

    @classmethod
    def at_target(cls, config: PoolConfig) -> StartPool:
        """A pool exactly at the config's targets."""
        active = min(config.producao_min, config.producao_max)
        return cls.spread(active, config.ready_min, config.warmup_buffer, config.warmup_days)


@dataclass
class Outcome:
    """One run: what ops would feel, and the daily series (end of day)."""

    warmup_buffer: int
    ready_min: int
    rule: str = RESERVE  # the buying rule: ours (the reserve) or the seed's
    days_below_min: int = 0
    lowest_production: int | None = None
    bought: int = 0
    cancelled: int = 0
    replacements: int = 0
    no_ready: int = 0
    lost_in_warmup: int = 0
    number_months: int = 0
    cost: float | None = None
    #: Ready chip-days above ready_min: sum over days of max(0, ready at end of day - ready_min).
    idle_ready_days: int = 0
    production: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    warming: list[int] = field(default_factory=list)


def _months_billed(start: datetime, end: datetime) -> int:
    """Calendar months (UTC) in which a number held from start until end was held at any
    instant: the report's billing rule (domain/report.py), so a cancelled number pays its month."""
    last = max(start, end - timedelta(microseconds=1))
    return (last.year - start.year) * 12 + last.month - start.month + 1


def poisson_draw(rng: random.Random, mean: float) -> int:
    """A Poisson(mean) draw: Knuth's product for small means, the normal approximation above."""
    if mean <= 0:
        return 0
    if mean >= 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _Pool:
    """The simulated chips, by tier, as integer ids; time in cycles (ticks)."""

    def __init__(self, start: StartPool, k: int, warmup_days: int) -> None:
        self.k, self.warmup_days, self.next_id = k, warmup_days, 0
        self.bought_at: dict[int, int] = {}
        self.ended_at: dict[int, int] = {}
        self.active = self._new(start.active, 0)
        self.ready = self._new(start.ready, 0)
        ages = sorted(start.warming_ages, reverse=True)  # oldest first: FIFO graduation
        self.warming = [
            (i, -round(a * k)) for i, a in zip(self._new(len(ages), 0), ages, strict=True)
        ]
        self.provisioning = [(i, 0) for i in self._new(start.provisioning, 0)]
        self.banned: list[int] = []  # banned, not yet replaced
        self.handled: list[int] = []  # banned or lost and dealt with: cancellable

    def _new(self, n: int, tick: int) -> list[int]:
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        self.bought_at.update(dict.fromkeys(ids, tick))
        return ids

    def now(self, tick: int) -> datetime:
        return EPOCH + timedelta(minutes=tick * (1440 // self.k))

    def counts(self) -> Counts:
        return Counts(
            provisioning=len(self.provisioning),
            warming=len(self.warming),
            ready=len(self.ready),
            active=len(self.active),
            banned=len(self.banned) + len(self.handled),
            cancelled=len(self.ended_at),
        )


def _events(pool: _Pool, scenario: Scenario, rng: random.Random, out: Outcome, tick: int) -> None:
    """What the rest of the world did since the last cycle: bans, losses, numbers delivered."""
    dt = 1 / scenario.cycles_per_day
    banned = rng.sample(
        pool.active,
        min(len(pool.active), poisson_draw(rng, scenario.ban_rate * dt * len(pool.active))),
    )
    if banned:
        gone = set(banned)
        pool.active = [c for c in pool.active if c not in gone]
        pool.banned += banned
    if scenario.warmup_loss > 0 and pool.warming:
        # A constant hazard over the warm-up that loses warmup_loss of the numbers on the way.
        hazard = -math.log(1 - scenario.warmup_loss) / max(1, pool.warmup_days) * dt
        lost = rng.sample(
            pool.warming, min(len(pool.warming), poisson_draw(rng, hazard * len(pool.warming)))
        )
        if lost:
            gone = {c for c, _ in lost}
            pool.warming = [w for w in pool.warming if w[0] not in gone]
            pool.handled += sorted(gone)
            out.lost_in_warmup += len(gone)
    due = [p for p in pool.provisioning if p[1] <= tick]
    if due:
        pool.provisioning = [p for p in pool.provisioning if p[1] > tick]
        pool.warming += due  # warming since their delivery (starts are in order)


def _snapshot(pool: _Pool, config: PoolConfig, tick: int) -> Snapshot:
    """The pool as the cycle would read it (the repository's candidate queries, simulated)."""
    now = pool.now(tick)
    serving = [ChipView(str(c), "banned", TRUST) for c in pool.banned]
    old_enough = tick - config.warmup_days * pool.k
    warming = [
        ChipView(str(c), "warming", TRUST, fase_warmup="operacao", warming_started_at=pool.now(s))
        for c, s in pool.warming
        if s <= old_enough
    ]
    deficit = max(0, min(config.producao_min, config.producao_max) - len(pool.active))
    ready = [ChipView(str(c), "ready", TRUST) for c in pool.ready[: len(serving) + deficit]]
    cancellable = [str(c) for c in pool.handled] if config.auto_cancel_banned else []
    return Snapshot(
        config=config,
        counts=pool.counts(),
        now=now,
        serving=serving,
        warming=warming,
        ready_ranked=ready,
        cancellable=cancellable,
    )


def _apply(pool: _Pool, snap: Snapshot, out: Outcome, tick: int, delay: int) -> None:
    """Carry the plan out as the tasks would (each one succeeds)."""
    plan = plan_cycle(snap, rule=out.rule)
    for item in plan.replace:
        chip = int(item.chip_id)
        pool.banned.remove(chip)
        pool.handled.append(chip)
        if pool.ready:
            pool.active.append(pool.ready.pop(0))
            out.replacements += 1
        else:
            out.no_ready += 1
    if promoted := {int(c) for c in plan.promote_active}:
        pool.active += [c for c in pool.ready if c in promoted]
        pool.ready = [c for c in pool.ready if c not in promoted]
    if graduated := {int(c) for c in plan.promote_ready}:
        pool.ready += [c for c, _ in pool.warming if c in graduated]
        pool.warming = [w for w in pool.warming if w[0] not in graduated]
    pool.provisioning += [(c, tick + delay) for c in pool._new(plan.provision, tick)]
    out.bought += plan.provision
    if cancel := {int(c) for c in plan.cancel}:
        pool.handled = [c for c in pool.handled if c not in cancel]
        pool.ended_at.update(dict.fromkeys(sorted(cancel), tick))
        out.cancelled += len(cancel)


def simulate(
    config: PoolConfig, scenario: Scenario, start: StartPool, rule: str = RESERVE
) -> Outcome:
    """Play the pool forward scenario.days days under config, buying by rule (RESERVE, ours, or
    SEED, the seed's warming deficit); deterministic for scenario.seed."""
    rng, k = random.Random(scenario.seed), scenario.cycles_per_day
    pool = _Pool(start, k, config.warmup_days)
    out = Outcome(config.warmup_buffer, config.ready_min, rule)
    floor = min(config.producao_min, config.producao_max)
    delay = round(scenario.purchase_days * k)
    for day in range(scenario.days):
        low = len(pool.active)
        for cycle in range(k):
            tick = day * k + cycle
            _events(pool, scenario, rng, out, tick)
            _apply(pool, _snapshot(pool, config, tick), out, tick, delay)
            low = min(low, len(pool.active))
        out.days_below_min += low < floor
        out.lowest_production = (
            low if out.lowest_production is None else min(out.lowest_production, low)
        )
        out.production.append(len(pool.active))
        out.ready.append(len(pool.ready))
        out.idle_ready_days += max(0, len(pool.ready) - config.ready_min)
        out.warming.append(len(pool.warming) + len(pool.provisioning))
    end = scenario.days * k
    out.number_months = sum(
        _months_billed(pool.now(t), pool.now(pool.ended_at.get(c, end)))
        for c, t in pool.bought_at.items()
    )
    if config.number_monthly_cost is not None:
        out.cost = round(out.number_months * config.number_monthly_cost, 2)
    return out


def scenario_recommendation(config: PoolConfig, scenario: Scenario) -> Recommendation:
    """The forecast's recommendation for this scenario's demand (bans of the active chips)."""
    rate = scenario.ban_rate * min(config.producao_min, config.producao_max)
    lead = config.warmup_days + scenario.purchase_days
    return recommend(rate, lead, scenario.warmup_loss, config.service_level)


def compare(
    config: PoolConfig,
    scenario: Scenario,
    start: StartPool | None = None,
    rec: Recommendation | None = None,
) -> dict[str, Outcome]:
    """Same world, same seed: the seed's buying rule on the current config (`seed`), ours on the
    current config (`current`), on the recommended one (`recommended`), and that with
    auto_cancel_banned on (`recommended_cancel_banned`). All from start (today's pool), or each
    from a pool at its own targets when start is None."""
    rec = rec or scenario_recommendation(config, scenario)
    proposed = replace(config, warmup_buffer=rec.warmup_buffer, ready_min=rec.ready_min)
    runs = (
        ("seed", config, SEED),
        ("current", config, RESERVE),
        ("recommended", proposed, RESERVE),
        ("recommended_cancel_banned", replace(proposed, auto_cancel_banned=True), RESERVE),
    )
    return {
        name: simulate(c, scenario, start or StartPool.at_target(c), rule) for name, c, rule in runs
    }
