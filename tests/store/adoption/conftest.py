"""A database of each adoption test's own: empty (not migrated), without XML, dropped afterwards.

`engine` here is that database's, not the session's migrated one (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.dev.scratch import scratch_database
from tests.support.noxml import without_xml


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    """An empty database of its own (not migrated), dropped afterwards.

    Its XML functions refuse, as on a server built without libxml (the embedded one, some
    production ones): adoption and what these tests check must not need them.
    """
    with scratch_database(database_url, prefix="chiporch_adopt", migrated=False) as url:
        without_xml(url)
        yield url


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    yield eng
    eng.dispose()
