"""pool_config and the counts the decisions need: chips per status (the tally), active chips, growth slots.

Chips per status come from chip_status_tally, kept exact by triggers under any writer
(migrations/versions/0005_scale.py), not from a count over the chips table.

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import sqlalchemy as sa

from orchestrator.domain.pool import Counts, PoolConfig
from orchestrator.errors import ConfigError
from orchestrator.store.repository.candidates import fit_ready_clauses
from orchestrator.store.schema import (
    chip_status_tally,
    chips,
    pool_config,
    pool_growth_slots,
)


def load_config(conn: sa.Connection, *, lock: bool = False) -> PoolConfig:
    """The pool_config row (FOR UPDATE when lock: serialises changes to the active count)."""
    stmt = sa.select(pool_config)
    if lock:
        stmt = stmt.with_for_update()
    return config_from_row(conn.execute(stmt).mappings().first())


def load_config_and_active(conn: sa.Connection) -> tuple[PoolConfig, int]:
    """The pool_config row (not locked) and how many chips are active, in one statement."""
    stmt = sa.select(pool_config, active_sum().scalar_subquery().label("active_now"))
    row = conn.execute(stmt).mappings().first()
    return config_from_row(row), int(row["active_now"])


def config_from_row(row: Mapping | None) -> PoolConfig:
    """A PoolConfig from a pool_config row; ConfigError when there is none or it is invalid."""
    if row is None:
        raise ConfigError("pool_config has no row; run `chip-orchestrator migrate`")
    config = PoolConfig.from_mapping(row)
    if problems := config.problems():
        raise ConfigError("pool_config invalid: " + "; ".join(problems))
    return config


def status_counts(conn: sa.Connection) -> Counts:
    """Chips per status, exact at the statement's snapshot, summed from a few tally rows."""
    tally = chip_status_tally
    rows = conn.execute(sa.select(tally.c.status, sa.func.sum(tally.c.n)).group_by(tally.c.status))
    return Counts.from_pairs({status: int(n) for status, n in rows})


def active_sum() -> sa.Select:
    """How many chips are active: the sum of the tally's rows for `active` (a select to embed)."""
    tally = chip_status_tally
    return sa.select(sa.func.coalesce(sa.func.sum(tally.c.n), 0)).where(tally.c.status == "active")


def count_active(conn: sa.Connection) -> int:
    """How many chips are active right now (exact; cost independent of the pool's size)."""
    return int(conn.execute(active_sum()).scalar_one())


def active_trust_mean(conn: sa.Connection) -> float:
    """Mean trust of the active chips (reads each one: for status and metrics, not the cycle)."""
    stmt = sa.select(sa.func.avg(chips.c.trust_score)).where(chips.c.status == "active")
    mean = conn.execute(stmt).scalar_one()
    return float(mean) if mean is not None else 0.0


#: One free growth slot, locked (built once: every growing swap runs it).
def lock_growth_slots(conn: sa.Connection) -> None:
    """Lock every growth slot: waits for the swaps holding one, keeps new ones out until commit."""
    conn.execute(
        sa.select(pool_growth_slots.c.slot).order_by(pool_growth_slots.c.slot).with_for_update()
    ).all()


def count_by_status(conn: sa.Connection) -> tuple[Counts, float]:
    """Chips per status and the average trust of active chips."""
    return status_counts(conn), active_trust_mean(conn)


def compact_status_tally(conn: sa.Connection) -> int:
    """Fold the tally's deltas into one row per status (sums unchanged); rows folded."""
    return int(conn.execute(sa.select(sa.func.chip_status_tally_compact())).scalar_one())


def count_active_disconnected(conn: sa.Connection) -> tuple[int, int]:
    """Active chips, and how many of them are disconnected now (the storm brake's inputs).

    The tally gives the first; the second reads only the disconnected active chips (a partial
    index, idx_chips_active_disconnected).
    """
    disconnected = sa.select(sa.func.count()).where(
        chips.c.status == "active", sa.not_(chips.c.evolution_connected)
    )
    stmt = sa.select(active_sum().scalar_subquery(), disconnected.scalar_subquery())
    row = conn.execute(stmt).one()
    return int(row[0]), int(row[1])


def count_fit_ready(conn: sa.Connection, config: PoolConfig, at_most: int | None = None) -> int:
    """Ready chips fit to serve (a range of idx_chips_ready_fit), counted up to at_most: the
    cycle needs no more than its reserve's target plus what it takes this cycle (a pool with
    thousands of idle ready chips is not counted one by one every minute)."""
    fit = sa.select(chips.c.id).where(*fit_ready_clauses(config))
    if at_most is not None:
        fit = fit.limit(at_most)
    stmt = sa.select(sa.func.count()).select_from(fit.subquery())
    return int(conn.execute(stmt).scalar_one())


def purchases_last_day(conn: sa.Connection) -> tuple[int, datetime | None]:
    """Numbers bought or being bought in the last 24 hours, and when the oldest turns 24 hours
    old (intents and bought numbers keep their provisioning_name; failed ones leave no row)."""
    since = sa.func.now() - timedelta(days=1)
    stmt = sa.select(sa.func.count(), sa.func.min(chips.c.created_at) + timedelta(days=1)).where(
        chips.c.provisioning_name.is_not(None), chips.c.created_at > since
    )
    n, frees_at = conn.execute(stmt).one()
    return int(n), frees_at
