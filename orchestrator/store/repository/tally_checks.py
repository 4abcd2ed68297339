"""Cached counts checked against `chips`: recount some statuses, correct the tally, note it.

One statement (chip_status_tally_check, migration 0008) does it all, so the recount, the cached
sums it is compared with and the correction share one snapshot: a status change committed meanwhile is either in both (and its
delta already in the tally) or in neither (its delta lands after, on top of the correction), so
a correction never double-counts a concurrent writer. A correction is one more delta row, like
the triggers' (compaction folds it later).

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.store.schema import chip_status_tally_checks

#: Recount the given statuses, append (true - cached) for each that drifted, note the check:
#: migration 0008's SECURITY DEFINER function (the workers' role only reads the tally).
CHECK_AND_CORRECT = sa.text(
    "SELECT status, counted, cached FROM chip_status_tally_check(CAST(:statuses AS text[]))"
)


def check_and_correct(conn: sa.Connection, statuses: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Recount `statuses` in `chips`, correct the tally where it drifted; {status: (cached, true)}."""
    rows = conn.execute(CHECK_AND_CORRECT, {"statuses": list(statuses)})
    return {status: (int(cached), int(counted)) for status, counted, cached in rows}


def tally_checked_at(conn: sa.Connection) -> dict[str, datetime]:
    """When each status's cached count was last checked against `chips`."""
    table = chip_status_tally_checks
    rows = conn.execute(sa.select(table.c.status, table.c.checked_at))
    return {status: checked_at for status, checked_at in rows}


def tally_check_rows(conn: sa.Connection) -> list[sa.Row]:
    """Every status's check record (for the metrics): checked_at, last_drift, corrections..."""
    table = chip_status_tally_checks
    return list(conn.execute(sa.select(table).order_by(table.c.status)))
