"""A database of its own on a PostgreSQL server, dropped afterwards: for tests and benchmarks."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from orchestrator.store import migrate


@contextlib.contextmanager
def scratch_database(
    base_url: str, *, prefix: str = "chiporch_scratch", migrated: bool = True
) -> Iterator[str]:
    """A fresh database on base_url's server (migrated to head unless told not), then dropped.

    Dropped WITH (FORCE): sessions a test or a worker left open do not keep it alive.
    """
    base = make_url(base_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
