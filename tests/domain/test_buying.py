"""Buying on the reserve (ready fit + warming + provisioning) up to ready_min + warmup_buffer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.domain.buying import (
    RESERVE,
    SEED,
    PurchaseGate,
    purchases_to_make,
    reserve,
    reserve_target,
)
from orchestrator.domain.pool import ChipView, Counts, PoolConfig, Snapshot, health, plan_cycle

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
#: The issue's pool: ready_min 3, warmup_buffer 4 -> the reserve's target is 7.
CONFIG = PoolConfig(
    producao_min=10, producao_max=12, ready_min=3, warmup_buffer=4, max_provisions_per_cycle=10
)


def buy(counts: Counts, config: PoolConfig = CONFIG, **kw: object) -> int:
    return purchases_to_make(config, counts, PurchaseGate(), NOW, **kw)


def test_idle_ready_chips_stop_purchases_that_the_seed_would_make() -> None:
    # 9 idle ready chips, warming 1 < warmup_buffer 4
    counts = Counts(active=10, ready=9, warming=1)
    assert buy(counts, rule=SEED) == 3
    assert buy(counts) == 0


def test_an_empty_ready_tier_buys_even_with_a_full_warming_tier() -> None:
    counts = Counts(active=10, ready=0, warming=4)
    assert buy(counts, rule=SEED) == 0
    assert buy(counts) == 3


@pytest.mark.parametrize("warming,provisioning", [(0, 0), (1, 2), (4, 0), (2, 5)])
def test_with_ready_at_ready_min_the_reserve_rule_is_the_seeds(
    warming: int, provisioning: int
) -> None:
    counts = Counts(active=10, ready=3, warming=warming, provisioning=provisioning)
    assert buy(counts) == buy(counts, rule=SEED)


def test_only_ready_chips_fit_to_serve_count_and_this_cycles_swaps_take_theirs_first() -> None:
    counts = Counts(active=10, ready=5, warming=2)
    assert reserve(counts) == 7 and buy(counts) == 0
    assert buy(counts, ready_fit=3) == 2  # two of the five may not serve
    assert buy(counts, ready_fit=3, ready_used=2) == 4  # and two go to this cycle's swaps
    assert reserve(counts, ready_fit=1, ready_used=4) == 2  # never below the tiers beneath


def test_the_per_cycle_cap_and_the_daily_cap_both_bound_a_purchase() -> None:
    config = PoolConfig(ready_min=3, warmup_buffer=10, max_provisions_per_cycle=4)
    assert buy(Counts(), config) == 4
    daily = PoolConfig(**{**config.__dict__, "max_purchases_per_day": 10})
    gate = PurchaseGate(bought_last_day=8)
    assert purchases_to_make(daily, Counts(), gate, NOW) == 2
    used_up = PurchaseGate(bought_last_day=10, day_window_frees_at=NOW + timedelta(hours=3))
    assert used_up.capped(daily) and purchases_to_make(daily, Counts(), used_up, NOW) == 0
    assert not PurchaseGate(bought_last_day=99).capped(config)  # no cap set


def test_the_plan_buys_what_its_swaps_and_promotions_leave_short() -> None:
    # Given 2 active below producao_min 4, 3 fit ready chips, 4 warming: target 3 + 4 = 7
    config = PoolConfig(producao_min=4, producao_max=6, ready_min=3, warmup_buffer=4)
    ready = [ChipView(id=f"r{i}", status="ready", trust_score=95) for i in range(3)]
    snap = Snapshot(
        config=config,
        counts=Counts(active=2, ready=3, warming=4),
        now=NOW,
        ready_ranked=ready,
        ready_fit=3,
    )
    plan = plan_cycle(snap)
    # Then two ready chips are promoted, and the reserve left (1 + 4) is 2 short
    assert len(plan.promote_active) == 2 and plan.ready_used == 2
    assert (plan.reserve, plan.reserve_target, plan.provision) == (5, 7, 2)


def test_health_uses_the_reserve_idle_ready_chips_raise_no_false_attention() -> None:
    config = PoolConfig(producao_min=2, producao_max=4, ready_min=2, warmup_buffer=6)
    # seed: warming 0 < 6 // 2 -> atencao; here the 8 ready chips fill the reserve
    assert health(config, Counts(active=2, ready=8, warming=0)) == "saudavel"
    # the same when ready = ready_min: short by 6 - warming - provisioning > 3
    assert health(config, Counts(active=2, ready=2, warming=2)) == "atencao"
    assert health(config, Counts(active=2, ready=2, warming=3)) == "saudavel"
    assert reserve_target(config) == 8 and RESERVE != SEED
