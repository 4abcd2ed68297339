"""The what-if simulator: the cycle's own plan in simulated time, checked by hand."""

from __future__ import annotations

import pytest

from orchestrator.domain import whatif
from orchestrator.domain.pool import PoolConfig

#: A small pool worked out by hand in docs/capacity.md: one cycle a day, 3 days of warm-up.
SMALL = PoolConfig(
    producao_min=2,
    producao_max=4,
    ready_min=1,
    warmup_buffer=2,
    warmup_days=3,
    number_monthly_cost=30,
)


def test_without_bans_the_pipeline_refills_exactly_as_worked_out_by_hand() -> None:
    # Given 2 active, 1 ready, 2 warming chips that start warming on day 0, and no bans
    start = whatif.StartPool(active=2, ready=1, warming_ages=(0.0, 0.0))
    # When ten days are played with one cycle a day
    out = whatif.simulate(SMALL, whatif.Scenario(days=10, cycles_per_day=1), start)
    # Then day 3 promotes both, day 4 buys 2 (warming from day 4), day 7 promotes, day 8 buys 2
    assert out.ready == [1, 1, 1, 3, 3, 3, 3, 5, 5, 5]
    assert out.warming == [2, 2, 2, 0, 2, 2, 2, 0, 2, 2]  # warming + being bought
    assert out.production == [2] * 10
    assert (out.bought, out.cancelled, out.replacements, out.no_ready) == (4, 0, 0, 0)
    assert (out.days_below_min, out.lowest_production) == (0, 2)
    # and 9 numbers each billed one month at 30
    assert (out.number_months, out.cost) == (9, 270)


def test_a_ban_with_no_ready_chip_leaves_production_short_until_one_warms() -> None:
    # Given no ready chip, one warming chip 2 days into a 3-day warm-up, and bans so frequent
    # that both active chips go on day 0
    start = whatif.StartPool(active=2, ready=0, warming_ages=(2.0,))
    config = PoolConfig(**{**vars(SMALL), "warmup_buffer": 1, "auto_cancel_banned": True})
    out = whatif.simulate(config, whatif.Scenario(days=2, ban_rate=1e6, cycles_per_day=1), start)
    # Then both bans find no ready chip, and production is 0 on both days (the warmed chip
    # becomes ready on day 1 and is banned as soon as it serves)
    assert out.no_ready >= 2
    assert out.lowest_production == 0
    assert out.days_below_min == 2
    # and the banned numbers are cancelled (auto_cancel_banned), each billed a whole month
    assert out.cancelled >= 2
    assert out.cost == out.number_months * 30


def test_a_seed_gives_the_same_run_twice_and_another_seed_another() -> None:
    scenario = whatif.Scenario(days=60, ban_rate=0.05, warmup_loss=0.1, seed=7)
    start = whatif.StartPool.at_target(PoolConfig())
    first = whatif.simulate(PoolConfig(), scenario, start)
    again = whatif.simulate(PoolConfig(), scenario, start)
    other = whatif.simulate(PoolConfig(), whatif.Scenario(**{**vars(scenario), "seed": 8}), start)
    assert vars(first) == vars(again)
    assert vars(first) != vars(other)


def test_bans_arrive_at_the_rate_asked_for() -> None:
    # Given 10 active chips banned at 0.1 per chip per day for a year, with ready chips to spare
    config = PoolConfig(warmup_buffer=30)
    scenario = whatif.Scenario(days=365, ban_rate=0.1, seed=3)
    out = whatif.simulate(config, scenario, whatif.StartPool.at_target(config))
    # Then about 365 bans were handled (Poisson: sd 19)
    assert out.replacements + out.no_ready == pytest.approx(365, abs=60)
    assert out.no_ready == 0


def test_the_recommended_config_keeps_production_where_the_default_falls_short() -> None:
    # Given bans at 0.05 per active chip per day (0.5 a day for 10 active) and 10% warm-up loss
    scenario = whatif.Scenario(days=180, ban_rate=0.05, warmup_loss=0.1, seed=1)
    config = PoolConfig(number_monthly_cost=25)
    runs = whatif.compare(config, scenario, whatif.StartPool.at_target(config))
    # Then the recommendation (pipeline 12, ready 7) never lets production fall below 10
    assert (runs["recommended"].warmup_buffer, runs["recommended"].ready_min) == (12, 7)
    assert runs["recommended"].days_below_min == 0
    # while the default's pipeline of 10 yields 9 chips per 21 days against 10.5 needed
    assert runs["current"].days_below_min > 0
    assert runs["current"].no_ready > 0


def test_nonsense_scenarios_are_named() -> None:
    bad = whatif.Scenario(days=0, ban_rate=-1, warmup_loss=1, cycles_per_day=7)
    assert len(bad.problems()) == 4
    assert whatif.Scenario().problems() == []


def test_numbers_are_billed_per_calendar_month_held_as_the_report_bills_them() -> None:
    from datetime import UTC, datetime

    def day(month: int, d: int) -> datetime:
        return datetime(2026, month, d, tzinfo=UTC)

    assert whatif._months_billed(day(1, 1), day(1, 31)) == 1
    assert whatif._months_billed(day(1, 31), day(2, 1)) == 1  # held until the 1st, exclusive
    assert whatif._months_billed(day(1, 31), day(2, 2)) == 2  # cancelled on the 1st: February too
    assert whatif._months_billed(day(1, 5), day(1, 5)) == 1  # bought and cancelled at once
    assert whatif._months_billed(day(1, 1), day(7, 1)) == 6
