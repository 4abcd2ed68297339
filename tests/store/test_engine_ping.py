"""The engine pings a pooled connection only after it sat idle: busy ones go straight to work,
and a connection PostgreSQL dropped costs at most one retried task, never a wrong answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.errors import TransientError
from orchestrator.store import db
from orchestrator.store.db import transaction

pytestmark = pytest.mark.db


class Pings:
    """Counts the pings an engine's pool makes."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        ping = engine.dialect.do_ping

        def counted(dbapi_connection: object) -> bool:
            self.count += 1
            return ping(dbapi_connection)

        engine.dialect.do_ping = counted  # type: ignore[method-assign]


def backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def terminate(database_url: str, pid: int) -> None:
    """What a PostgreSQL restart does to one pooled connection."""
    other = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with other.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    other.dispose()


@pytest.fixture
def engines(database_url: str) -> Iterator[dict[str, sa.Engine]]:
    made = {
        # every checkout counts as idle
        "always": db.create_engine(database_url, ping_after_idle_seconds=0, pool_size=1),
        # no checkout in this test counts as idle
        "busy": db.create_engine(database_url, ping_after_idle_seconds=3600, pool_size=1),
    }
    yield made
    for engine in made.values():
        engine.dispose()


def test_a_connection_reused_before_the_idle_limit_is_not_pinged(
    engines: dict[str, sa.Engine],
) -> None:
    # Given an engine whose connection was just used
    engine = engines["busy"]
    first = backend_pid(engine)
    pings = Pings(engine)
    # When three transactions run on it
    for _ in range(3):
        with transaction(engine) as conn:
            conn.execute(sa.text("SELECT 1"))
    # Then none paid for a ping, and they used the same connection
    assert pings.count == 0
    assert backend_pid(engine) == first


def test_a_connection_idle_past_the_limit_is_pinged_and_a_dead_one_replaced_unseen(
    engines: dict[str, sa.Engine], database_url: str
) -> None:
    # Given an engine's pooled connection, which PostgreSQL then dropped while it sat idle
    engine = engines["always"]
    dead = backend_pid(engine)
    terminate(database_url, dead)
    pings = Pings(engine)
    # When a transaction checks it out
    with transaction(engine) as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    # Then the ping found it dead and the transaction ran on a new connection, no error
    assert pings.count >= 1
    assert pid != dead


def test_a_busy_connection_dropped_under_it_fails_one_transaction_as_transient(
    engines: dict[str, sa.Engine], database_url: str
) -> None:
    # Given a busy engine's connection, dropped by PostgreSQL between two transactions
    engine = engines["busy"]
    dead = backend_pid(engine)
    terminate(database_url, dead)
    # When the next transaction runs on it
    with pytest.raises(TransientError), transaction(engine) as conn:
        conn.execute(sa.text("SELECT 1"))
    # Then only that one failed (retried by its task), and the pool opened a fresh connection
    with transaction(engine) as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    assert pid != dead
