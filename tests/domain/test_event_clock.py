"""Placing gateway events on our clock when the gateway's clock is hours off or absent. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.domain.event_clock import CLOCK_JUMP, EventClock, place

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
#: A Sao Paulo server: its wall clock labelled Z, 3 h behind.
SAO_PAULO = timedelta(hours=3)
MS = timedelta(milliseconds=1)
S = timedelta(seconds=1)


def _run(*events: tuple[datetime | None, datetime]) -> list[bool]:
    """Feed (date_time, received) in arrival order; which were fresh."""
    clock, fresh = None, []
    for sent, received in events:
        placed = place(clock, sent, received)
        fresh.append(placed.fresh)
        if placed.fresh:
            clock = placed.clock
    return fresh


def test_an_event_without_date_time_then_a_ban_from_a_clock_3h_behind_are_both_fresh() -> None:
    # The sequence: `open` without date_time, then a 403 dated by a Sao Paulo server
    assert _run((None, NOW), (NOW + S - SAO_PAULO, NOW + S + 5 * MS)) == [True, True]


def test_events_of_one_clock_hours_off_compare_as_their_date_times_do() -> None:
    sent = NOW - SAO_PAULO
    assert _run(
        (sent, NOW + 5 * MS),  # close
        (sent + 2 * S, NOW + 2 * S + 5 * MS),  # open
        (sent + S, NOW + 9 * S),  # the close's retry, sent before the open: stale
        (sent + 3 * S, NOW + 3 * S + 5 * MS),  # a newer close
    ) == [True, True, False, True]


def test_a_clock_ahead_of_ours_never_hides_a_later_event_without_date_time() -> None:
    ahead = NOW + timedelta(hours=9)  # a server east of UTC, labelled Z
    assert _run((ahead, NOW), (None, NOW + S), (ahead + 2 * S, NOW + 2 * S)) == [True] * 3


def test_an_event_without_date_time_is_never_older_than_what_came_before() -> None:
    # Whatever the delays, what is kept never passes its own receive time
    clock = None
    for i, (sent, delay) in enumerate([(NOW - SAO_PAULO, 900 * MS), (NOW - SAO_PAULO + S, MS)]):
        received = NOW + i * S + delay
        placed = place(clock, sent, received)
        assert placed.clock.applied_at <= received
        clock = placed.clock
    assert place(clock, None, NOW + 2 * S).fresh


def test_a_late_event_is_placed_by_its_senders_clock_after_an_event_without_one() -> None:
    # Given the offset learned (3 h + 5 ms) and then an event with no date_time at t+10 s
    first = place(None, NOW - SAO_PAULO, NOW + 5 * MS).clock
    dateless = place(first, None, NOW + 10 * S).clock
    # A close sent at t+2 s (delivered late, at t+60 s) is older than the dateless event
    assert not place(dateless, NOW - SAO_PAULO + 2 * S, NOW + 60 * S).fresh
    # A close sent at t+20 s is newer
    assert place(dateless, NOW - SAO_PAULO + 20 * S, NOW + 20 * S + 5 * MS).fresh


def test_a_faster_delivery_does_not_make_a_newer_event_look_stale() -> None:
    # The first event took 2 s to arrive, the second 1 ms: the offset shrinks, order holds
    first = place(None, NOW - SAO_PAULO, NOW + 2 * S).clock
    second = place(first, NOW - SAO_PAULO + S, NOW + S + MS)
    assert second.fresh and second.clock.offset == SAO_PAULO + MS


def test_a_sender_clock_moved_back_is_a_new_clock_not_an_old_event() -> None:
    # A clock 3 h behind fixed to UTC jumps forward: its next event simply looks newer
    first = place(None, NOW - SAO_PAULO, NOW + 5 * MS).clock
    fixed = place(first, NOW + S, NOW + S + 5 * MS)
    assert fixed.fresh
    # A clock 9 h ahead fixed to UTC: its date_times go back 9 h, more than CLOCK_JUMP
    ahead = place(None, NOW + timedelta(hours=9), NOW).clock
    moved = place(ahead, NOW + S, NOW + S + 5 * MS)
    assert moved.fresh and moved.clock.offset == 5 * MS
    # But a delivery late by less than CLOCK_JUMP is an old event
    late = place(ahead, NOW + timedelta(hours=9) - S, NOW + CLOCK_JUMP - timedelta(minutes=1))
    assert not late.fresh


def test_a_repeat_of_the_newest_event_is_fresh_again() -> None:
    first = place(None, NOW - SAO_PAULO, NOW + 5 * MS).clock
    assert place(first, NOW - SAO_PAULO, NOW + 30 * S).fresh  # Evolution's retry after a 503


def test_the_first_event_of_a_chip_is_fresh_and_learns_the_offset() -> None:
    placed = place(None, NOW - SAO_PAULO, NOW + 5 * MS)
    assert placed == place(None, NOW - SAO_PAULO, NOW + 5 * MS)
    assert placed.fresh and placed.clock == EventClock(NOW + 5 * MS, SAO_PAULO + 5 * MS)
    assert place(None, None, NOW).clock == EventClock(NOW, None)
