"""Which statuses the cycle recounts: active every time, the rest in rotation within a budget."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from orchestrator.domain.pool import STATUSES, Counts
from orchestrator.domain.tally import ROW_BUDGET, statuses_to_check

#: The benchmarks' 1M-chip pool: 10% active, most chips long cancelled.
MILLION = Counts(active=100_000, ready=60_000, warming=150_000, degraded=90_000, cancelled=600_000)


def rotate(counts: Counts, cycles: int) -> list[list[str]]:
    """What each of `cycles` consecutive cycles checks, each noting its checks as done."""
    checked: dict[str, datetime | None] = {}
    now = datetime(2026, 12, 1, tzinfo=UTC)
    chosen = []
    for n in range(cycles):
        this = statuses_to_check(counts, checked)
        chosen.append(this)
        for status in this:
            checked[status] = now + timedelta(minutes=n)
    return chosen


def test_a_small_pool_recounts_every_status_each_cycle() -> None:
    assert sorted(statuses_to_check(Counts(active=30, ready=5), {})) == sorted(STATUSES)


def test_active_is_recounted_every_cycle_and_every_status_within_four_at_a_million_chips() -> None:
    cycles = rotate(MILLION, 4)
    assert all(this[0] == "active" for this in cycles)
    assert {s for this in cycles for s in this} == set(STATUSES)


def test_a_cycle_recounts_beyond_active_at_most_the_budget_unless_one_status_alone_is_larger() -> (
    None
):
    for this in rotate(MILLION, 20):
        others = [getattr(MILLION, s) for s in this[1:]]
        assert len(others) >= 1
        assert len(others) == 1 or sum(others) <= ROW_BUDGET


def test_the_rotation_is_fair_no_status_waits_more_than_four_cycles() -> None:
    cycles = rotate(MILLION, 40)
    for status in STATUSES:
        seen = [n for n, this in enumerate(cycles) if status in this]
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert seen[0] < 4 and max(gaps) <= 4, (status, seen)
