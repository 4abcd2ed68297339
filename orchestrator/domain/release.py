"""When a banned number is released (auto_cancel_banned): shortly before its billing month turns.

Billing rule assumed, the one `report` counts by: a number is billed one month for every
calendar month (UTC) in which it is held at any instant. A number held now is therefore already
billed for this month: cancelling it on the 2nd or on the 30th costs the same, while holding it
until the month's last day keeps the WhatsApp appeal window open the longest. So the cycle
releases banned numbers only inside RELEASE_WINDOW before the month turns. In São Paulo
(UTC-3, no daylight saving since 2019) the month turns three hours after it turns in UTC, so a
release inside the window falls in the same month under either reading of "month".

Pure: the cycle passes its instant (services/cycle.py); the Salvy verdict takes the account as
re-read by services/cancel.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: How long before the billing month turns the cycle releases banned numbers. A day leaves
#: ~1,400 one-minute cycles, and the cancel task's retries, to get each one done in time.
RELEASE_WINDOW = timedelta(hours=24)
#: Salvy's status of a line it is (re)activating: the number is not released.
SALVY_PENDING = "pending"
#: Why a number Salvy brought back is kept: being activated again, reactivated after a cancel,
#: unblocked after the block it was replaced for.
PENDING, REACTIVATED, UNBLOCKED = "pending", "reactivated", "unblocked"


def month_turns_at(now: datetime) -> datetime:
    """The first instant (UTC) of the calendar month after the one `now` falls in."""
    now = now.astimezone(UTC)
    if now.month == 12:
        return datetime(now.year + 1, 1, 1, tzinfo=UTC)
    return datetime(now.year, now.month + 1, 1, tzinfo=UTC)


def release_opens_at(now: datetime) -> datetime:
    """When this month's release window opens (RELEASE_WINDOW before the month turns)."""
    return month_turns_at(now) - RELEASE_WINDOW


def release_due(now: datetime) -> bool:
    """True inside the release window: banned numbers released now cost no extra month.

    Only `now` matters, not when a chip was banned: any number held now is billed for this
    month already, so one banned last month waits for this month's window too.
    """
    return now >= release_opens_at(now)


def next_release(now: datetime) -> datetime:
    """When the cycle next releases banned numbers: now inside the window, else its opening."""
    return now if release_due(now) else release_opens_at(now)


def kept_at_salvy(status: str, canceled_at: str | None, replaced_for_block: bool) -> str | None:
    """Why Salvy's account says a banned number is in service again (then it is not released):
    PENDING, REACTIVATED or UNBLOCKED; None when nothing says so.

    A WhatsApp ban leaves the line `active` at Salvy, so `active` alone says nothing; it means
    "back again" only after Salvy had cancelled it (`canceledAt` set: reactivated) or when the
    chip was taken out of service because Salvy blocked it (unblocked since).
    """
    if status == SALVY_PENDING:
        return PENDING
    if status == "active" and canceled_at:
        return REACTIVATED
    if status == "active" and replaced_for_block:
        return UNBLOCKED
    return None
