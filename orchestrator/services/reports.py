"""Read-only use cases behind `chip-orchestrator report` and `history`: one transaction each."""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.domain import report
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from orchestrator.store.repository import reports as queries

#: Operations a history shows at most (the newest); it says when older ones were left out.
HISTORY_LIMIT = 200


def month_report(engine: sa.Engine, month: str | None = None) -> dict:
    """Numbers bought, cancelled, replaced by reason, conversations moved and cost of a month.

    month: "YYYY-MM" (None: the current month, UTC, by the database's clock); Rejected if
    malformed or in the future.
    """
    with transaction(engine) as conn:
        now = repo.db_now(conn)
        chosen = report.parse_month(month, now)
        counts = queries.month_counts(conn, chosen.start, min(chosen.end, now))
        cost = queries.monthly_cost(conn)
    return report.month_report(chosen, counts, cost, now)


def chip_history(engine: sa.Engine, ref: str, limit: int = HISTORY_LIMIT) -> dict:
    """One chip's operations and state changes, newest first; Rejected for an unknown chip.

    ref: a chip id or a phone number (as `replace` takes it).
    """
    with transaction(engine) as conn:
        chip = repo.get_chip(conn, repo.find_chip_id(conn, ref))
        ops = queries.chip_operations(conn, str(chip["id"]), limit + 1)
    return report.history(chip, ops[:limit], truncated=len(ops) > limit)
