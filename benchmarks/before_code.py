"""The swap as it was before issue 13, for side-by-side figures (benchmarks/scale.py).

A swap that adds an active chip took the pool_config row exclusively (no growth slots) and
counted the active chips with `count(*)` over the chips table under that lock, as issue 13
measured; everything else, including the triggers the database now runs on every write, is
today's. `patched()` swaps it in for a while (in-process); `benchmarks.before_app` for good (a
worker).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa

from orchestrator.domain.pool import PoolConfig
from orchestrator.services import growth
from orchestrator.store import repository
from orchestrator.store.schema import chips


def count_active_by_counting(conn: sa.Connection) -> int:
    """The previous repository.count_active: every active chip counted."""
    stmt = sa.select(sa.func.count()).where(chips.c.status == "active")
    return conn.execute(stmt).scalar_one()


def exclusive_growth(conn: sa.Connection) -> tuple[str, PoolConfig]:
    """The previous lock for a growing swap: the pool_config row, always."""
    return growth.EXACT, repository.load_config(conn, lock=True)


def apply() -> None:
    """From now on, in this process, swaps run the previous way."""
    repository.count_active = count_active_by_counting
    growth.growth_locks = exclusive_growth


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Swaps run the previous way inside the block."""
    saved = repository.count_active, growth.growth_locks
    apply()
    try:
        yield
    finally:
        repository.count_active, growth.growth_locks = saved
