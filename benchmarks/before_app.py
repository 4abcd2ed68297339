"""The worker as it was before issue 13: `celery -A benchmarks.before_app worker`.

Only for the side-by-side figures of benchmarks/scale.py. A swap that adds an active chip takes
the pool_config row exclusively (no growth slots) and counts the active chips with `count(*)`
over the chips table under that lock, as issue 13 measured; everything else, including the
triggers the database now runs on every write, is today's.
"""

import sqlalchemy as sa

from orchestrator.domain.pool import PoolConfig
from orchestrator.services import growth
from orchestrator.store import repository
from tasks import app

__all__ = ["app"]


def count_active_by_counting(conn: sa.Connection) -> int:
    """The previous repository.count_active: every active chip counted."""
    stmt = sa.select(sa.func.count()).where(repository.chips.c.status == "active")
    return conn.execute(stmt).scalar_one()


def exclusive_growth(conn: sa.Connection) -> tuple[str, PoolConfig]:
    """The previous lock for a growing swap: the pool_config row, always."""
    return growth.EXACT, repository.load_config(conn, lock=True)


repository.count_active = count_active_by_counting
growth.growth_locks = exclusive_growth
