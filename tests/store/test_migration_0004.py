"""Migration 0004 builds its orchestrator_operations index without holding chips locked.

Every deployment at 0001 runs it. The interleaving is forced: another service's open transaction
has written to orchestrator_operations, so an index build on that table must wait for it, and the
test looks at what chips writers can do while migrate waits there.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from psycopg import errors as pg_errors
from sqlalchemy.engine import make_url

from orchestrator.store import migrate
from orchestrator.store.adoption.run import Options
from tests.factories import make_chip
from tests.support.pg_waits import wait_until

pytestmark = pytest.mark.db

INDEX = "idx_orchestrator_ops_provision_name"
#: The definition 0004 always had (pg_get_indexdef): the end state must not change.
DEFINITION = (
    f"CREATE INDEX {INDEX} ON public.orchestrator_operations USING btree"
    " (((metadata ->> 'name'::text))) WHERE (operacao = 'auto_provision'::text)"
)


@pytest.fixture
def at_0003(database_url: str) -> Iterator[str]:
    """A database of its own at revision 0003_fit, dropped afterwards."""
    base = make_url(database_url)
    name = f"chiporch_m4_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    command.upgrade(migrate.alembic_config(url), "0003_fit")
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def open_operations_writer(engine: sa.Engine) -> sa.Connection:
    """Another service's transaction that wrote to orchestrator_operations and stays open.

    No chip is referenced, so it holds no lock on chips itself.
    """
    holder = engine.connect()
    holder.execute(
        sa.text(
            "INSERT INTO orchestrator_operations (operacao, motivo) VALUES ('auto_replace', 'x')"
        )
    )
    return holder


def index_state(engine: sa.Engine) -> list[tuple[str, bool]]:
    """(definition, valid) of every index named INDEX."""
    with engine.connect() as conn:
        return [
            (row[0], row[1])
            for row in conn.execute(
                sa.text(
                    "SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i"
                    " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :name"
                ),
                {"name": INDEX},
            )
        ]


def migrate_waiting_on_the_index(engine: sa.Engine) -> int | None:
    """The backend running the index statement, once it waits on a lock."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                " AND query LIKE '%' || :name || '%'"
            ),
            {"name": INDEX},
        ).scalar()


def test_chips_writers_are_not_blocked_while_0004_waits_to_build_its_index(at_0003: str) -> None:
    # Given a database at 0003 with a chip, and an open transaction that wrote an operation
    engine = sa.create_engine(at_0003, poolclass=sa.pool.NullPool)
    chip = make_chip(engine, "active")
    holder = open_operations_writer(engine)
    # (migrate's lock waits are capped below deadlock_timeout: raise both, so that it waits on
    # the writer for as long as the test looks, instead of timing out and retrying)
    patient = make_url(at_0003).update_query_dict({"options": "-c deadlock_timeout=600s"})
    options = Options(lock_timeout_ms=300_000)
    done: list[tuple[str | None, str]] = []
    run = threading.Thread(
        target=lambda: done.append(
            migrate.upgrade(patient.render_as_string(hide_password=False), options)
        )
    )
    run.start()
    try:
        # When migrate reaches 0004's index and waits for that transaction
        pid = wait_until(
            lambda: migrate_waiting_on_the_index(engine), 60, "migrate never waited on the index"
        )
        with engine.connect() as conn:
            held_on_chips = conn.execute(
                sa.text(
                    "SELECT mode FROM pg_locks WHERE pid = :pid AND relation = 'chips'::regclass"
                ),
                {"pid": pid},
            ).scalars()
            held = sorted(held_on_chips)
        # Then it holds no lock on chips, and a write to chips goes through at once (NOWAIT:
        # a lock a writer would queue behind raises instead of waiting)
        assert held == []
        with engine.begin() as writer:
            writer.execute(sa.text("LOCK TABLE chips IN ROW EXCLUSIVE MODE NOWAIT"))
            writer.execute(
                sa.text("UPDATE chips SET trust_score = 80 WHERE id = :id"), {"id": chip}
            )
    finally:
        holder.rollback()
        holder.close()
        run.join(120)
    # And once the writer is gone the index is built: valid, with the same definition as always
    assert not run.is_alive()
    assert done == [("0003_fit", migrate.head_revision(at_0003))]
    assert index_state(engine) == [(DEFINITION, True)]
    engine.dispose()


def test_an_invalid_index_left_by_an_interrupted_build_is_dropped_and_built_again(
    at_0003: str,
) -> None:
    # Given a concurrent build of the index that was interrupted (here: it gave up waiting for an
    # open writer), leaving the index INVALID
    engine = sa.create_engine(at_0003, poolclass=sa.pool.NullPool)
    holder = open_operations_writer(engine)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("SET lock_timeout = '100ms'")
            with pytest.raises(sa.exc.OperationalError) as gave_up:
                conn.exec_driver_sql(
                    f"CREATE INDEX CONCURRENTLY {INDEX} ON orchestrator_operations"
                    " ((metadata->>'name')) WHERE operacao = 'auto_provision'"
                )
            assert isinstance(gave_up.value.orig, pg_errors.LockNotAvailable)
    finally:
        holder.rollback()
        holder.close()
    assert index_state(engine) == [(DEFINITION, False)]
    # When migrate runs
    assert migrate.upgrade(at_0003) == ("0003_fit", migrate.head_revision(at_0003))
    # Then the leftover was replaced by a valid index of the same definition
    assert index_state(engine) == [(DEFINITION, True)]
    # And running migrate again, or 0004 again (as after an interruption past its index), is a
    # no-op that keeps it
    assert migrate.upgrade(at_0003) == (migrate.head_revision(at_0003),) * 2
    config = migrate.alembic_config(at_0003)
    command.stamp(config, "0003_fit")
    command.upgrade(config, "0004_purchases")
    assert index_state(engine) == [(DEFINITION, True)]
    engine.dispose()
