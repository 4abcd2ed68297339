"""A database of each adoption test's own: empty (not migrated), dropped afterwards.

`engine` here is that database's, not the session's migrated one (tests/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    """An empty database of its own (not migrated), dropped afterwards."""
    base = make_url(database_url)
    name = f"chiporch_adopt_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    yield eng
    eng.dispose()
