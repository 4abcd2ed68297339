"""What every chip use case shares: compare-and-set, "busy, retry soon", and growth under producao_max.

A swap that adds an active chip (a banned chip replaced) and a promotion must never take the pool
past producao_max. Far below it, a swap holds one of GROWTH_SLOTS rows (SKIP LOCKED) beside other
swaps; near it, and for promotions, pool_config then every slot are locked and the count is exact.
Lock order everywhere: pool_config, pool_growth_slots, chips.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from orchestrator.domain.pool import ChipView, PoolConfig
from orchestrator.domain.tally import ALWAYS
from orchestrator.errors import Rejected, TransientError
from orchestrator.services import tally
from orchestrator.store import repository as repo

#: Seconds (min, max) before retrying when other tasks hold what we need for a moment.
BUSY_RETRY_SECONDS = (0.2, 1.0)
#: Rows of pool_growth_slots (capped by its CHECK, migration 0005): at most this many swaps add
#: an active chip at once without the exclusive pool_config lock.
GROWTH_SLOTS = 16
#: How a swap that adds an active chip is kept under producao_max: far below it, holding one
#: growth slot beside other swaps (SLOT); otherwise pool_config and every slot locked (EXACT).
SLOT, EXACT = "slot", "exact"


def view(row: Mapping) -> ChipView:
    """The decision view of a chips row."""
    return ChipView(**{k: row[k] for k in ChipView.__dataclass_fields__})


def busy(what: str) -> TransientError:
    """Another task holds what we need for a moment: retry soon (jittered), not in minutes."""
    return TransientError(what, retry_after=random.uniform(*BUSY_RETRY_SECONDS))


def cas(conn: sa.Connection, chip_id: str, expected: Sequence[str], **values: object) -> Mapping:
    """repo.transition, or Rejected(conflict) when the row was not in an expected status."""
    row = repo.transition(conn, chip_id, expected, **values)
    if row is None:
        raise Rejected(f"chip {chip_id} is no longer {'/'.join(expected)}", code="conflict")
    return row


#: A swap adding an active chip tries for a growth slot (SLOT) instead of EXACT only while the
#: active count, read unlocked just before (repo.lock_first, in the statement that takes the
#: slot), is at most producao_max - SLOT_MARGIN. At most GROWTH_SLOTS swaps hold a slot, and
#: each checks (has_room) that the active count, read after taking its slot, leaves
#: GROWTH_SLOTS of room: together they cannot pass producao_max. EXACT (near the maximum,
#: every slot busy, promotions) locks pool_config, then every slot (lock_for_exact_count), so
#: it counts after the slot holders commit and none starts until it does.
SLOT_MARGIN = 2 * GROWTH_SLOTS


def lock_for_exact_count(conn: sa.Connection) -> PoolConfig:
    """pool_config, then every growth slot: the active count cannot change under us but by others.

    The cached active count is then checked against `chips` (and corrected if rows changed
    without firing the tally's triggers): what is decided next never passes producao_max.
    """
    config = repo.load_config(conn, lock=True)
    repo.lock_growth_slots(conn)
    tally.correct(conn, [ALWAYS])
    return config


def has_room(config: PoolConfig, growth: str | None, active: int) -> bool:
    """Whether this swap may add an active chip (always, when it adds none).

    active: the count read after this swap's growth locks (repo.best_ready_and_count).
    """
    if growth is None:
        return True
    if growth == EXACT:
        return active < config.producao_max
    if active > config.producao_max - GROWTH_SLOTS:  # others grew it since our first read
        raise busy("active count rose near producao_max; retry counting exactly")
    return True
