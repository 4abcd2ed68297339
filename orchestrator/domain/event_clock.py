"""Ordering a gateway's events when its clock cannot be trusted. Pure.

Evolution API stamps `date_time` with its server's local wall clock labelled `Z`
(`new Date(Date.now() - tzoffset).toISOString()`): hours off UTC on a server outside UTC, and some
events carry none. So an event's `date_time` is never compared with our clock, only with another
`date_time` of the same chip's gateway, through the offset between the two clocks:

- Each chip keeps the newest applied event's time on OUR clock (`applied_at`) and the offset from
  the sender's clock to ours (`offset` = our receive time - `date_time`), learned from the events:
  the smallest seen, since a slow delivery only adds to it.
- An event with a `date_time` is placed at `date_time + offset` (the offset known before it), so
  two events of one sender clock compare as their `date_time`s do, whatever the offset is.
- An event without one is placed at its receive time. Every stored `applied_at` is at most its
  own event's receive time, so an event without `date_time` never looks older than one before it.
- A sender clock that moved back by more than CLOCK_JUMP (a timezone fixed, the instance moved to
  another server) is a new clock, not an event that old: the offset is relearned and the event
  placed at its receive time. A clock moving forward needs nothing: its events look newer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: A sender-clock sample this much above the offset known is a clock moved back, not a late
#: delivery: above Evolution's whole retry schedule (10 tries over about 20 minutes).
CLOCK_JUMP = timedelta(minutes=30)


@dataclass(frozen=True)
class EventClock:
    """What a chip keeps between events: the newest applied event's time on our clock, the offset."""

    applied_at: datetime
    offset: timedelta | None = None


@dataclass(frozen=True)
class Placed:
    """An event placed on our clock: whether it is the newest, and the clock to keep if so."""

    fresh: bool
    clock: EventClock


def place(previous: EventClock | None, sent_at: datetime | None, received: datetime) -> Placed:
    """Place one event (sender's `date_time` or None, our receive time) after `previous`."""
    known = previous.offset if previous is not None else None
    if sent_at is None:
        at, kept, offset = received, received, known
    else:
        sample = received - sent_at
        if known is None or sample - known > CLOCK_JUMP:
            at, offset = received, sample
        else:
            # Compared with the offset known before it (the previous event's footing); kept on
            # the smaller one, so that what is kept never passes its own receive time.
            at, offset = sent_at + known, min(known, sample)
        kept = sent_at + offset
    fresh = previous is None or at >= previous.applied_at
    return Placed(fresh, EventClock(kept, offset))
