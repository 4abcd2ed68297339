"""Which statuses' cached counts the cycle checks against `chips` this time (pure).

The counts every decision uses come from a tally kept by triggers; rows changed without firing
them (a restore with triggers disabled, `session_replication_role = replica`, a disabled
trigger) make it lie. Recounting every status costs a scan of the whole table (~70-110 ms at 1M
chips), so each cycle recounts `active` (what promotions and producao_max decide on, cheap: the
serving part of the pool) and, beyond it, the statuses checked longest ago while their cached
counts fit in a row budget (always at least one): every status is recounted within a few cycles
at a cost per cycle that stays flat.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from orchestrator.domain.pool import STATUSES, Counts

#: Chips (by their cached counts) the cycle recounts beyond `active`, at most, unless one
#: status alone holds more: ~15 ms of index-only scan on a 2-core machine.
ROW_BUDGET = 250_000
#: Always recounted: the count promotions and producao_max are decided on.
ALWAYS = "active"


def statuses_to_check(
    counts: Counts,
    checked_at: Mapping[str, datetime | None],
    *,
    budget: int = ROW_BUDGET,
) -> list[str]:
    """`active`, then the statuses checked longest ago (never checked first) within budget."""
    rest = [s for s in STATUSES if s != ALWAYS]
    never = [s for s in rest if checked_at.get(s) is None]
    others = never + sorted((s for s in rest if s not in never), key=lambda s: checked_at[s])
    chosen, spent = [ALWAYS], 0
    for status in others:
        cost = max(0, getattr(counts, status))
        if len(chosen) > 1 and spent + cost > budget:
            break
        chosen.append(status)
        spent += cost
    return chosen
