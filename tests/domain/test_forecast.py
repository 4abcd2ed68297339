"""The capacity maths, checked against numbers worked out by hand (docs/capacity.md)."""

from __future__ import annotations

import math

import pytest

from orchestrator.domain import forecast as fc
from orchestrator.domain.pool import PoolConfig

E2 = math.exp(-2)


def test_the_poisson_cdf_matches_the_hand_sums() -> None:
    # P(N <= k) for N ~ Poisson(2): e^-2 (1 + 2 + 2 + 4/3 + 2/3 + 4/15)
    assert fc.poisson_cdf(-1, 2) == 0
    assert fc.poisson_cdf(0, 2) == pytest.approx(E2)
    assert fc.poisson_cdf(2, 2) == pytest.approx(5 * E2)
    assert fc.poisson_cdf(4, 2) == pytest.approx(7 * E2)  # 0.9473
    assert fc.poisson_cdf(5, 2) == pytest.approx((7 + 4 / 15) * E2)  # 0.9834
    assert fc.poisson_cdf(3, 0) == 1


def test_the_cdf_stays_finite_for_a_mean_whose_first_terms_underflow() -> None:
    # e^-20000 is 0.0 in floating point; the log-space sum still reaches the median
    assert fc.poisson_cdf(20_000, 20_000) == pytest.approx(0.5, abs=0.01)


def test_the_base_stock_is_the_smallest_stock_that_meets_the_service_level() -> None:
    # Given a mean demand of 2 over the lead time: P(N <= 4) = 0.947, P(N <= 5) = 0.983
    assert fc.base_stock(2, 0.95) == 6
    assert fc.base_stock(2, 0.90) == 5
    # With no demand one chip serves the next replacement
    assert fc.base_stock(0, 0.95) == 1
    with pytest.raises(ValueError):
        fc.base_stock(2, 1.0)


def test_the_recommendation_splits_the_base_stock_into_pipeline_and_safety() -> None:
    # Given 0.1 ready chips consumed a day, 20 days of lead time, 20% lost while warming, 95%
    rec = fc.recommend(0.1, 20, 0.2, 0.95)
    # Then the pipeline holds 2 / 0.8 = 2.5 numbers on average: P(Poisson(2.5) <= 4) = 0.891,
    # P(<= 5) = 0.958, so the reserve's base stock is S = 6
    assert (rec.base_stock, rec.mean_demand, rec.target) == (6, pytest.approx(2.0), 6)
    # split: warmup_buffer = ceil(2.5) = 3 (the pipeline's mean), ready_min = 6 - 3 = 3
    assert (rec.warmup_buffer, rec.ready_min) == (3, 3)
    assert (rec.planned_loss, rec.loss_flagged) == (0.2, False)


def test_the_recommendation_for_one_ban_a_day_over_21_days() -> None:
    # P(Poisson(21) <= 28) = 0.944, P(<= 29) = 0.963: S = 30, split 21 + 9
    rec = fc.recommend(1.0, 21, 0.0, 0.95)
    assert (rec.warmup_buffer, rec.ready_min, rec.base_stock) == (21, 9, 30)


def test_a_warm_up_loss_too_high_to_plan_on_is_flagged_and_bounded() -> None:
    # Given 1 ready chip consumed a day, 21 days of lead time and 99% of numbers lost warming
    rec = fc.recommend(1.0, 21, 0.99, 0.95)
    # Then the loss is flagged and planned at 50%: the pipeline is 21 / 0.5 = 42, twice the
    # demand over the lead time (0.99 would have asked for ceil(21 / 0.01) = 2100, 100x)
    assert (rec.loss_flagged, rec.planned_loss) == (True, fc.LOSS_CAP)
    assert rec.warmup_buffer == 42
    # (the same as planning on 50% itself, flagged)
    assert vars(rec) == {**vars(fc.recommend(1.0, 21, fc.LOSS_CAP, 0.95)), "loss_flagged": True}
    # and a loss at the cap, or unknown, is not flagged
    assert not fc.loss_flagged(0.5) and not fc.loss_flagged(None) and fc.loss_flagged(0.51)


def test_the_recommended_config_meets_its_own_service_level() -> None:
    for rate, lead, loss in ((0.1, 20, 0.2), (4, 23, 0.1), (0.5, 21, 0.0), (37, 25, 0.3)):
        rec = fc.recommend(rate, lead, loss, 0.95)
        risk = fc.p_no_ready(rate, lead, loss, rec.warmup_buffer, rec.ready_min)
        assert risk <= 0.05 + 1e-12, (rate, lead, loss, risk)
        # one chip fewer in the ready tier misses it
        assert fc.p_no_ready(rate, lead, loss, rec.warmup_buffer, rec.ready_min - 1) > 0.05


def test_on_the_reserve_only_the_target_matters_not_how_it_is_split() -> None:
    # Given 4 a day over 23 days (mean 92): a pipeline of 46 is no longer a bottleneck, since
    # the cycle buys on the whole reserve (ready + warming), not to keep warming at 46
    held = fc.p_no_ready(4, 23, 0.0, warmup_buffer=46, ready_min=1000)
    assert held == pytest.approx(0.0, abs=1e-12)
    assert fc.p_no_ready(4, 23, 0.0, 60, 60) == pytest.approx(fc.p_no_ready(4, 23, 0.0, 100, 20))


def test_a_daily_purchase_cap_below_the_demand_is_at_risk_whatever_the_target() -> None:
    # Given 2 ready chips consumed a day and at most 1 purchase a day
    risk = fc.p_no_ready(2, 21, 0.0, 1000, 1000, max_per_day=1)
    # Then at least half of the replacements find no ready chip in the long run
    assert risk == pytest.approx(0.5)


def test_p_no_ready_by_hand() -> None:
    # 2 held (ready 1 + a pipeline of 1, no loss) against a mean pipeline of 0.5: 1 - P(N <= 1)
    assert fc.p_no_ready(0.025, 20, 0.0, 1, 1) == pytest.approx(1 - 1.5 * math.exp(-0.5))
    # with 20% lost the pipeline's mean is 0.5 / 0.8 = 0.625
    assert fc.p_no_ready(0.025, 20, 0.2, 1, 1) == pytest.approx(1 - 1.625 * math.exp(-0.625))


def test_too_little_history_estimates_nothing() -> None:
    short = fc.History(window_days=60, history_days=3, span_days=3.5, replacements=9)
    assert not short.enough
    assert short.rate is None
    assert fc.recommend_from(short, PoolConfig()) is None


def test_the_rate_is_replacements_over_the_measured_span() -> None:
    history = fc.History(window_days=60, history_days=59, span_days=59.5, replacements=238)
    assert history.rate == pytest.approx(4.0)
    assert fc.History(window_days=60, history_days=10, bought=0).loss_rate is None
    assert fc.History(window_days=60, history_days=10, bought=50, lost_in_warmup=5).loss_rate == 0.1


def test_auto_size_takes_the_larger_of_configured_and_recommended() -> None:
    rec = fc.Recommendation(
        warmup_buffer=12, ready_min=2, base_stock=14, mean_demand=10.5, lead_time_days=21
    )
    on = PoolConfig(warmup_buffer=10, ready_min=3, auto_size=True)
    used = fc.sized(on, rec)
    assert (used.warmup_buffer, used.ready_min) == (12, 3)
    # Off, or nothing recommended: the configured values
    assert fc.sized(PoolConfig(warmup_buffer=10, ready_min=3), rec).warmup_buffer == 10
    assert fc.sized(on, None) == on
    # and never the purchase caps, however large the recommendation
    capped = PoolConfig(
        auto_size=True, max_provisions_per_cycle=2, max_purchases_per_day=5, warmup_buffer=1
    )
    huge = fc.recommend(50.0, 21, 0.99, 0.95)  # a pipeline of 50 * 21 / 0.5 = 2100
    big = fc.sized(capped, huge)
    assert (big.warmup_buffer, big.ready_min) == (huge.warmup_buffer, huge.ready_min)
    assert (big.max_provisions_per_cycle, big.max_purchases_per_day) == (2, 5)
    assert vars(big) == {**vars(capped), "warmup_buffer": 2100, "ready_min": huge.ready_min}
    view = fc.auto_size_view(on, used, rec)
    assert view == {
        "on": True,
        "configured": {"warmup_buffer": 10, "ready_min": 3},
        "recommended": {"warmup_buffer": 12, "ready_min": 2},
        "used": {"warmup_buffer": 12, "ready_min": 3},
    }


def test_without_a_measured_lead_time_the_warm_up_is_assumed() -> None:
    history = fc.History(window_days=60, history_days=30, span_days=30, replacements=30)
    lead, assumed = fc.lead_time_or_assumed(history, PoolConfig(warmup_days=21))
    assert (lead, assumed) == (21.0, True)
    rec = fc.recommend_from(history, PoolConfig(warmup_days=21))
    assert rec is not None and rec.mean_demand == pytest.approx(21.0)
