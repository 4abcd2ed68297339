"""When banned numbers are released (domain/release.py): pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from orchestrator.domain import release
from orchestrator.domain.release import (
    PENDING,
    REACTIVATED,
    RELEASE_WINDOW,
    UNBLOCKED,
    kept_at_salvy,
    month_turns_at,
    next_release,
    release_due,
)

SAO_PAULO = timezone(timedelta(hours=-3))


@pytest.mark.parametrize(
    ("now", "turns"),
    [
        (datetime(2026, 3, 15, 12, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2028, 2, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
        # 22:00 on Jan 31st in São Paulo is already February in UTC: the UTC month counts
        (datetime(2026, 1, 31, 22, tzinfo=SAO_PAULO), datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_the_billing_month_turns_at_the_first_instant_of_the_next_utc_month(
    now: datetime, turns: datetime
) -> None:
    assert month_turns_at(now) == turns


def test_banned_numbers_are_released_only_in_the_last_day_before_the_month_turns() -> None:
    turn = datetime(2026, 4, 1, tzinfo=UTC)
    assert timedelta(hours=24) == RELEASE_WINDOW
    # Mid-month and a moment before the window: held (the appeal window stays open)
    assert not release_due(datetime(2026, 3, 2, tzinfo=UTC))
    assert not release_due(datetime(2026, 3, 15, 12, tzinfo=UTC))
    assert not release_due(turn - RELEASE_WINDOW - timedelta(microseconds=1))
    # From the window's first instant to the month's last: released
    assert release_due(turn - RELEASE_WINDOW)
    assert release_due(turn - timedelta(microseconds=1))
    # The next month's first instant starts a new month: held again
    assert not release_due(turn)


def test_the_window_is_inside_the_same_month_in_sao_paulo_too() -> None:
    # Every instant of the window is in March both in UTC and in São Paulo (UTC-3)
    turn = datetime(2026, 4, 1, tzinfo=UTC)
    for moment in (turn - RELEASE_WINDOW, turn - timedelta(microseconds=1)):
        assert release_due(moment)
        assert moment.astimezone(UTC).month == 3
        assert moment.astimezone(SAO_PAULO).month == 3


def test_the_next_release_is_the_windows_opening_or_now_inside_it() -> None:
    mid = datetime(2026, 3, 15, 12, tzinfo=UTC)
    assert next_release(mid) == datetime(2026, 3, 31, tzinfo=UTC)
    inside = datetime(2026, 3, 31, 8, tzinfo=UTC)
    assert next_release(inside) == inside


@pytest.mark.parametrize(
    ("status", "canceled_at", "blocked", "kept"),
    [
        # A WhatsApp ban leaves the line active at Salvy: released
        ("active", None, False, None),
        ("blocked", None, False, None),
        ("blocked", None, True, None),
        ("canceled", "2026-03-02T10:00:00Z", False, None),
        # Salvy brought it back: kept
        ("pending", None, False, PENDING),
        ("active", "2026-03-02T10:00:00Z", False, REACTIVATED),
        ("active", None, True, UNBLOCKED),
    ],
)
def test_a_number_salvy_brought_back_is_kept(
    status: str, canceled_at: str | None, blocked: bool, kept: str | None
) -> None:
    assert kept_at_salvy(status, canceled_at, blocked) == kept


def test_every_kept_reason_has_a_text_for_ops() -> None:
    from orchestrator.domain.messages import KEPT_TEXT

    assert set(KEPT_TEXT) == {release.PENDING, release.REACTIVATED, release.UNBLOCKED}
