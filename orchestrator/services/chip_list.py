"""`chip-orchestrator chips`: one page of chips, by status in lifecycle order, DDD and phone.

Read-only, one snapshot: the page (store/repository/chip_list.py) and, without --ddd, how many
chips match (the per-status tally, a few rows), so a page that was cut says of how many.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from orchestrator.domain.config import STATUSES
from orchestrator.errors import Rejected
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from orchestrator.store.repository import chip_list

#: Chips listed unless --limit says otherwise.
DEFAULT_LIMIT = 100
#: Most chips one page lists (a page's cost grows with it, never with the pool).
MAX_LIMIT = 10_000
#: Brazilian area codes (as chips.ddd's CHECK).
DDD_MIN, DDD_MAX = 11, 99


@dataclass(frozen=True)
class ChipPage:
    """The chips listed, whether more matched, and how many match when the tally says so."""

    chips: list[dict]
    truncated: bool
    matching: int | None


def list_chips(
    engine: sa.Engine, status: str | None = None, ddd: int | None = None, limit: int = DEFAULT_LIMIT
) -> ChipPage:
    """Up to `limit` chips (of one status, of one DDD); Rejected for a bad filter."""
    if status is not None and status not in STATUSES:
        raise Rejected(f"--status must be one of {', '.join(STATUSES)}", code="malformed")
    if ddd is not None and not DDD_MIN <= ddd <= DDD_MAX:
        raise Rejected(f"--ddd must be between {DDD_MIN} and {DDD_MAX}", code="malformed")
    if not 1 <= limit <= MAX_LIMIT:
        raise Rejected(f"--limit must be between 1 and {MAX_LIMIT}", code="malformed")
    statuses = [status] if status else list(STATUSES)
    with transaction(engine) as conn:
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        rows = chip_list.list_chips(conn, statuses, ddd, limit + 1)
        counts = repo.status_counts(conn) if ddd is None else None
    matching = None if counts is None else sum(getattr(counts, s) for s in statuses)
    return ChipPage([_plain(row) for row in rows[:limit]], len(rows) > limit, matching)


def _plain(row: Mapping) -> dict:
    """A listed chip as JSON holds it (the id as text)."""
    return {**row, "id": str(row["id"])}
