"""The what-if simulator: the cycle's own plan in simulated time, checked by hand."""

from __future__ import annotations

import pytest

from orchestrator.domain import whatif
from orchestrator.domain.pool import PoolConfig

#: A small pool worked out by hand in the tests below: one cycle a day, 3 days of warm-up.
SMALL = PoolConfig(
    producao_min=2,
    producao_max=4,
    ready_min=1,
    warmup_buffer=2,
    warmup_days=3,
    number_monthly_cost=30,
)


def test_without_bans_the_reserve_is_topped_up_once_as_worked_out_by_hand() -> None:
    # Given 2 active, no ready and 2 warming chips that start warming on day 0, and no bans
    start = whatif.StartPool(active=2, ready=0, warming_ages=(0.0, 0.0))
    # When ten days are played with one cycle a day, buying on the reserve
    out = whatif.simulate(SMALL, whatif.Scenario(days=10, cycles_per_day=1), start)
    # Then day 0 buys 1: the reserve (0 ready + 2 warming) is 1 short of 1 + 2; the three
    # become ready on day 3 (the purchase warms from day 0), and the reserve, 3 ready, then
    # holds its target: nothing more is bought
    assert out.ready == [0, 0, 0, 3, 3, 3, 3, 3, 3, 3]
    assert out.warming == [3, 3, 3, 0, 0, 0, 0, 0, 0, 0]  # warming + being bought
    assert out.production == [2] * 10
    assert (out.bought, out.cancelled, out.replacements, out.no_ready) == (1, 0, 0, 0)
    assert (out.days_below_min, out.lowest_production) == (0, 2)
    # idle: 3 ready against ready_min 1 on days 3..9, 7 x 2 chip-days (no ban needed them)
    assert out.idle_ready_days == 14
    # and 5 numbers (2 active, 2 warming, 1 bought) each billed one month at 30
    assert (out.number_months, out.cost) == (5, 150)


def test_the_seed_rule_on_the_same_pool_waits_then_piles_up_ready_chips() -> None:
    # Given the same pool, played with the seed's rule (buy the warming deficit only)
    start = whatif.StartPool(active=2, ready=0, warming_ages=(0.0, 0.0))
    scenario = whatif.Scenario(days=10, cycles_per_day=1)
    out = whatif.simulate(SMALL, scenario, start, whatif.SEED)
    # Then day 0 buys nothing (warming is full though no chip is ready), day 3 promotes both,
    # day 4 buys 2 (warming from day 4), day 7 promotes them, day 8 buys 2 more
    assert out.rule == whatif.SEED
    assert out.ready == [0, 0, 0, 2, 2, 2, 2, 4, 4, 4]
    assert out.warming == [2, 2, 2, 0, 2, 2, 2, 0, 2, 2]
    assert out.bought == 4
    # idle: 1 above ready_min on days 3..6, 3 on days 7..9; 8 numbers billed a month each
    assert out.idle_ready_days == 4 * 1 + 3 * 3
    assert (out.number_months, out.cost) == (8, 240)


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
    # Given 10 active chips banned at 0.1 per chip per day for a year, with a reserve of 43
    # against a pipeline of 21 on average (P(Poisson(21) >= 43) is about 1e-5)
    config = PoolConfig(warmup_buffer=40)
    scenario = whatif.Scenario(days=365, ban_rate=0.1, seed=3)
    out = whatif.simulate(config, scenario, whatif.StartPool.at_target(config))
    # Then about 365 bans were handled (Poisson: sd 19), every one by a ready chip
    assert out.replacements + out.no_ready == pytest.approx(365, abs=60)
    assert out.no_ready == 0
    # and about one number was bought per ready chip consumed (the reserve is topped up)
    assert out.bought == pytest.approx(out.replacements, abs=43)


def test_compare_runs_the_seed_rule_ours_the_recommendation_and_it_with_cancel_banned() -> None:
    # Given bans at 0.05 per active chip per day (0.5 a day for 10 active) and 10% warm-up loss
    scenario = whatif.Scenario(days=180, ban_rate=0.05, warmup_loss=0.1, seed=1)
    config = PoolConfig(number_monthly_cost=25)
    runs = whatif.compare(config, scenario, whatif.StartPool.at_target(config))
    assert list(runs) == ["seed", "current", "recommended", "recommended_cancel_banned"]
    assert [r.rule for r in runs.values()] == [whatif.SEED, whatif.RESERVE, "reserve", "reserve"]
    # Then the recommendation: a pipeline of 10.5 / 0.9 = 11.67 on average, P(Poisson(11.67)
    # <= 18) = 0.96: a reserve of 19, 12 warming + 7 ready
    rec = runs["recommended"]
    assert (rec.warmup_buffer, rec.ready_min) == (12, 7)
    assert rec.days_below_min <= 0.05 * 180
    # while the default (a reserve of 13: P(Poisson(11.67) <= 12) = 0.61) falls short often
    assert runs["current"].days_below_min > 0.15 * 180 and runs["current"].no_ready > 10
    # and cancelling banned numbers serves the same and bills fewer number-months
    cancel = runs["recommended_cancel_banned"]
    assert (cancel.days_below_min, cancel.production) == (rec.days_below_min, rec.production)
    assert cancel.cancelled > 0 and cancel.number_months < rec.number_months


#: simulate's acceptance world: 100 active chips banned at 0.01 a day each (1 a day), a year,
#: from today's pool (30 ready, 10 warming); 8 seeds, each run once per rule.
YEAR = 365
TODAY = whatif.StartPool.spread(active=100, ready=30, warming=10, warmup_days=21)
HUNDRED = PoolConfig(producao_min=100, producao_max=120, ready_min=9, warmup_buffer=21)


@pytest.fixture(scope="module")
def year_runs() -> dict[str, list[whatif.Outcome]]:
    """The recommended config (21 / 9: one ban a day over 21 days at 95%) under both rules."""
    rec = whatif.scenario_recommendation(HUNDRED, whatif.Scenario(ban_rate=0.01))
    assert (rec.warmup_buffer, rec.ready_min) == (21, 9)
    return {
        rule: [
            whatif.simulate(HUNDRED, whatif.Scenario(YEAR, ban_rate=0.01, seed=s), TODAY, rule)
            for s in range(8)
        ]
        for rule in (whatif.RESERVE, whatif.SEED)
    }


def test_from_todays_pool_the_recommendation_keeps_its_service_level(year_runs) -> None:
    ours = year_runs[whatif.RESERVE]
    # Then production is below producao_min on about 1 - 0.95 of the days, over the seeds (a
    # single year varies: a 21-day stretch of bad luck empties the ready tier for days)
    share = sum(o.days_below_min for o in ours) / (YEAR * len(ours))
    assert share <= 0.05 + 0.02, [o.days_below_min for o in ours]
    assert all(o.days_below_min <= 0.15 * YEAR for o in ours)


def test_from_todays_pool_the_ready_tier_stays_near_its_target(year_runs) -> None:
    for ours in year_runs[whatif.RESERVE]:
        # Then once the start's surplus is spent, ready never exceeds the reserve target, 30
        assert max(ours.ready[30:]) <= 30
        # and ready is within 10 (about 2 sd of the pipeline) of ready_min on most days
        assert sum(r > 9 + 10 for r in ours.ready) <= 0.10 * YEAR


def test_the_seed_rule_lets_ready_chips_pile_up_where_ours_does_not(year_runs) -> None:
    ours, seed = year_runs[whatif.RESERVE], year_runs[whatif.SEED]
    # The seed's pipeline delivers 21 / 21 = 1 chip a day whatever the demand: the ready tier
    # wanders (a random walk), above the whole reserve target in some years
    assert max(max(o.ready) for o in seed) > 45
    assert sum(o.idle_ready_days for o in seed) > 3 * sum(o.idle_ready_days for o in ours)


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
