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
    # Given 0.1 replacements/day, 20 days of lead time, 20% lost while warming, 95%
    rec = fc.recommend(0.1, 20, 0.2, 0.95)
    # Then S = 6; the pipeline carries ceil(2 / 0.8) = 3, which yields floor(2.4) = 2 ready
    assert (rec.base_stock, rec.mean_demand) == (6, pytest.approx(2.0))
    assert rec.warmup_buffer == 3
    # and the ready tier holds the other 4
    assert rec.ready_min == 4


def test_the_recommended_config_meets_its_own_service_level() -> None:
    for rate, lead, loss in ((0.1, 20, 0.2), (4, 23, 0.1), (0.5, 21, 0.0), (37, 25, 0.3)):
        rec = fc.recommend(rate, lead, loss, 0.95)
        risk = fc.p_no_ready(rate, lead, loss, rec.warmup_buffer, rec.ready_min)
        assert risk <= 0.05 + 1e-12, (rate, lead, loss, risk)
        # one chip fewer in the ready tier misses it
        assert fc.p_no_ready(rate, lead, loss, rec.warmup_buffer, rec.ready_min - 1) > 0.05


def test_a_pipeline_too_small_to_keep_up_is_at_risk_whatever_the_ready_tier_holds() -> None:
    # Given 4 replacements/day over 23 days (mean 92) and a pipeline of 46: half the demand
    risk = fc.p_no_ready(4, 23, 0.0, warmup_buffer=46, ready_min=1000)
    # Then at least half of the replacements find no ready chip in the long run
    assert risk == pytest.approx(0.5)


def test_p_no_ready_by_hand() -> None:
    # 2 held (ready 1 + a pipeline of 1 with no loss) against a mean of 0.5: 1 - P(N <= 1)
    assert fc.p_no_ready(0.025, 20, 0.0, 1, 1) == pytest.approx(1 - 1.5 * math.exp(-0.5))


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
