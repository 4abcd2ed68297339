"""The worker as it was before the status tally: `celery -A benchmarks.before_app worker`.

Only for the side-by-side figures of benchmarks/scale.py: the active count read under the
pool_config lock is `count(*)` over the chips table again (what issue 13 measured); everything
else, including the triggers the database now runs on every write, is today's.
"""

import sqlalchemy as sa

from orchestrator import repository
from tasks import app

__all__ = ["app"]


def count_active_by_counting(conn: sa.Connection) -> int:
    """The previous repository.count_active: every active chip counted."""
    stmt = sa.select(sa.func.count()).where(repository.chips.c.status == "active")
    return conn.execute(stmt).scalar_one()


repository.count_active = count_active_by_counting
