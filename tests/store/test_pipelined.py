"""The swap's transaction block (store/pipelined.py): BEGIN with its first statement, COMMIT with
its last, and everything else a transaction promises: all or nothing, errors translated, and a
connection back in the pool exactly as it left (not in autocommit, no transaction open)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.errors import Rejected, TransientError
from orchestrator.store import db, pipelined
from orchestrator.store.schema import alert_state

pytestmark = pytest.mark.db

_INSERT = pipelined.Statement(
    sa.insert(alert_state)
    .values(key=sa.bindparam("key"), last_sent_at=sa.func.now(), times_sent=1)
    .returning(alert_state.c.key)
)
_BREAK = pipelined.Statement(
    sa.select(sa.literal_column("1") / sa.bindparam("zero", type_=sa.Integer))
)


@pytest.fixture
def engine(clean_db: sa.Engine, database_url: str) -> Iterator[sa.Engine]:
    """A workers' engine with one pooled connection (so every block reuses the same one)."""
    eng = db.create_engine(database_url, pool_size=1, max_overflow=0)
    yield eng
    eng.dispose()


def keys(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(alert_state.c.key)).scalars())


def assert_pooled_connection_is_clean(engine: sa.Engine) -> None:
    """The pool's connection: not in autocommit, no transaction open, and it still works."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw.autocommit is False
        assert raw.pgconn.transaction_status == 0  # IDLE
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_first_then_statements_through_sqlalchemy_commit_together_on_leaving(
    engine: sa.Engine,
) -> None:
    with pipelined.transaction(engine) as conn:
        assert pipelined.first(conn, _INSERT, {"key": "a"}) == {"key": "a"}
        conn.execute(sa.insert(alert_state).values(key="b", times_sent=1))
        # Inside one transaction: another connection sees neither yet
        assert keys(sa.create_engine(engine.url, poolclass=sa.NullPool)) == []
    assert keys(engine) == ["a", "b"]
    assert_pooled_connection_is_clean(engine)


def test_an_error_after_first_rolls_everything_back(engine: sa.Engine) -> None:
    with pytest.raises(Rejected), pipelined.transaction(engine) as conn:
        pipelined.first(conn, _INSERT, {"key": "a"})
        conn.execute(sa.insert(alert_state).values(key="b", times_sent=1))
        raise Rejected("changed our mind", code="conflict")
    assert keys(engine) == []
    assert_pooled_connection_is_clean(engine)


def test_a_failing_last_statement_commits_nothing(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.DataError), pipelined.transaction(engine) as conn:
        pipelined.first(conn, _INSERT, {"key": "a"})
        pipelined.last_and_commit(conn, _BREAK, {"zero": 0})
    assert keys(engine) == []
    assert_pooled_connection_is_clean(engine)


def test_last_and_commit_commits_before_the_block_ends(engine: sa.Engine) -> None:
    with pipelined.transaction(engine) as conn:
        pipelined.first(conn, _INSERT, {"key": "a"})
        pipelined.last_and_commit(conn, _INSERT, {"key": "b"})
        assert keys(sa.create_engine(engine.url, poolclass=sa.NullPool)) == ["a", "b"]
    assert_pooled_connection_is_clean(engine)


def test_a_constraint_violation_in_first_is_rejected_and_changes_nothing(
    engine: sa.Engine,
) -> None:
    with pipelined.transaction(engine) as conn:
        pipelined.first(conn, _INSERT, {"key": "a"})
    with pytest.raises(Rejected) as info, pipelined.transaction(engine) as conn:
        pipelined.first(conn, _INSERT, {"key": "a"})  # the same key again
    assert info.value.code == "constraint"
    assert keys(engine) == ["a"]
    assert_pooled_connection_is_clean(engine)


def test_a_connection_killed_mid_transaction_is_transient_and_replaced(
    engine: sa.Engine, clean_db: sa.Engine
) -> None:
    with pytest.raises(TransientError), pipelined.transaction(engine) as conn:
        pipelined.first(conn, _INSERT, {"key": "a"})
        pid = conn.connection.driver_connection.info.backend_pid
        with clean_db.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.commit()
        conn.execute(sa.insert(alert_state).values(key="b", times_sent=1))
    assert keys(engine) == []
    assert_pooled_connection_is_clean(engine)  # a new connection: the dead one was dropped


def test_a_statement_psycopg_would_parse_on_every_execution_is_refused_at_import() -> None:
    wide = sa.select(*(sa.literal_column(f"{n} AS column_number_{n}") for n in range(300)))
    with pytest.raises(ValueError, match="parse it again on every execution"):
        pipelined.Statement(wide)


def test_the_swap_statements_are_parsed_by_psycopg_once_not_on_every_execution() -> None:
    """psycopg caches its %(name)s -> $n work for queries up to its own limit, not past it."""
    from psycopg import _queries  # the limit is psycopg's own; fail loudly if it moves

    from orchestrator.store.repository import swaps

    assert pipelined.MAX_SQL_LENGTH <= _queries.MAX_CACHED_STATEMENT_LENGTH
    for statement in (swaps._LOCK_FIRST, swaps._BEST_READY, swaps._SWAP_AND_RECORD):
        assert len(statement.sql.encode()) <= pipelined.MAX_SQL_LENGTH
