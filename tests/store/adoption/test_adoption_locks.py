"""Adoption run twice, interrupted, or against other services' locks: it resumes, gives way,
retries, and never queues their writes behind it."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import sqlalchemy as sa
from alembic import command

from orchestrator.store import migrate
from orchestrator.store.adoption import assess as adoption
from orchestrator.store.adoption import baseline
from orchestrator.store.adoption import run as adoption_run
from orchestrator.store.adoption.run import AdoptionLockTimeout, Event, Options
from tests.support import seed_era
from tests.support.adoption import (
    VIOLATIONS,
    catalog_by_table,
    scalar,
    seed,
    state,
)

pytestmark = pytest.mark.db


# -- twice, interrupted, locks ---------------------------------------------------------------------


def test_migrate_twice_is_a_no_op_on_an_adopted_and_on_a_fresh_database(
    url: str, engine: sa.Engine, database_url: str
) -> None:
    seed(engine)
    migrate.upgrade(url)
    adopted = state(engine)
    with engine.connect() as conn:  # the planner sees nothing left to do
        left = adoption.plan(adoption.inspect(conn))
    assert (left.steps, left.checks, left.problems) == ([], [], [])
    assert migrate.upgrade(url) == (migrate.head_revision(url),) * 2
    assert state(engine) == adopted
    fresh = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with fresh.connect() as conn:
            first = seed_era.fingerprint(conn)
        migrate.upgrade(database_url)
        with fresh.connect() as conn:
            assert seed_era.fingerprint(conn) == first
    finally:
        fresh.dispose()


class Crash(BaseException):
    """A process killed mid-way (no except Exception handler runs: nothing is undone)."""


def test_an_interrupted_adoption_resumes_where_it_stopped(url: str, engine: sa.Engine) -> None:
    # Given an adoption killed in the middle of its online steps (an index build half done)
    seed(engine)
    steps = itertools.count()

    def crash(event: Event) -> None:
        if event.kind == "before" and next(steps) == 12:
            raise Crash

    with pytest.raises(Crash):
        migrate.upgrade(url, Options(progress=crash))
    assert migrate.current_revision(url) is None
    # When migrate runs again, it finishes: the same schema as an adoption that never stopped
    migrate.upgrade(url)
    with engine.connect() as conn:
        resumed = catalog_by_table(seed_era.fingerprint(conn))
    unrecorded = "SELECT count(*) FROM chips WHERE NOT evolution_connected AND evolution_disconnected_at IS NULL"
    assert scalar(engine, unrecorded) == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    seed(engine)
    migrate.upgrade(url)
    with engine.connect() as conn:
        assert catalog_by_table(seed_era.fingerprint(conn)) == resumed


def test_a_long_transaction_delays_migrate_without_queueing_writers_behind_it(
    url: str, engine: sa.Engine
) -> None:
    # Given a service's transaction that has read chips and stays open (holds ACCESS SHARE)
    seed(engine)
    before = state(engine)
    holder = engine.connect()
    holder.exec_driver_sql("SELECT count(*) FROM chips").scalar()
    pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    writes: list[str] = []

    def between_attempts(event: Event) -> None:
        # While migrate waits between two attempts, another service's write goes straight in.
        if event.kind == "retry":
            with engine.begin() as conn:
                writes.append(
                    conn.exec_driver_sql(
                        "INSERT INTO chips (telefone, status, trust_score)"
                        f" VALUES ('+55119{len(writes):08d}', 'warming', 1) RETURNING id::text"
                    ).scalar_one()
                )

    try:
        # When migrate cannot get its short lock
        options = Options(lock_timeout_ms=100, attempts=3, progress=between_attempts)
        with pytest.raises(AdoptionLockTimeout) as gave_up:
            migrate.upgrade(url, options)
    finally:
        holder.rollback()
        holder.close()
    # Then it gave up naming the transaction that holds the lock, having changed nothing, and
    # writers went through while it waited
    assert f"pid {pid}" in gave_up.value.reason and "nothing was changed" in gave_up.value.reason
    assert len(writes) == 3
    fingerprint, _ = state(engine)
    assert fingerprint == before[0]
    # ... and once that transaction ended, migrate goes through
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision(url)


def test_an_invalid_index_left_by_a_failed_build_is_rebuilt(url: str, engine: sa.Engine) -> None:
    # Given a unique index build that failed on a duplicate (left INVALID), duplicate since fixed
    seed(engine)
    with engine.begin() as conn:
        dup = conn.exec_driver_sql(VIOLATIONS["duplicate telefone"][0]).scalar_one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql(
                "CREATE UNIQUE INDEX CONCURRENTLY chips_telefone_key ON chips (telefone)"
            )
        conn.execute(sa.text("DELETE FROM chips WHERE id = :i"), {"i": dup})
    # When migrate runs, it drops the leftover first and builds the index again
    assert "drop invalid index chips_telefone_key" in [s.what for s in migrate.check(url).steps]
    migrate.upgrade(url)
    assert scalar(
        engine, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'chips_telefone_key'::regclass"
    )
    assert (
        scalar(engine, "SELECT count(*) FROM pg_constraint WHERE conname = 'chips_telefone_key'")
        == 1
    )


def test_a_revision_that_cannot_get_its_lock_is_retried_then_given_up(url: str) -> None:
    # Given a database at 0003 (0004 alters chips) and a long transaction that has read chips
    migrate.upgrade(url)
    command.downgrade(migrate.alembic_config(url), "0003_fit")
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    holder = eng.connect()
    holder.exec_driver_sql("SELECT count(*) FROM chips").scalar()
    retries: list[str] = []
    try:
        # When migrate runs with a short lock timeout
        options = Options(
            lock_timeout_ms=100, attempts=2, progress=lambda e: retries.append(e.kind)
        )
        with pytest.raises(AdoptionLockTimeout, match="a revision could not take its locks"):
            migrate.upgrade(url, options)
        # Then it tried twice, each time rolling 0004 back instead of waiting behind the holder
        assert retries.count("retry") == 2
        assert migrate.current_revision(url) == "0003_fit"
    finally:
        holder.rollback()
        holder.close()
        eng.dispose()
    # ... and goes through once the holder is gone
    assert migrate.upgrade(url) == ("0003_fit", migrate.head_revision(url))


def test_locks_are_taken_referencing_table_first_as_a_foreign_key_insert_takes_them() -> None:
    order = adoption_run.LOCK_ORDER
    for table in baseline.TABLES:
        for fk in table.foreign_keys:
            assert order.index(table.name) < order.index(fk.references), fk.name


def wait_until_waiting_on_a_lock(engine: sa.Engine, pid: int) -> None:
    deadline = time.monotonic() + 30
    with engine.connect() as conn:
        while conn.exec_driver_sql(
            f"SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = {pid}"
        ).scalar():
            assert time.monotonic() < deadline, f"pid {pid} never waited on a lock"
            time.sleep(0.005)


def test_in_a_lock_cycle_with_another_service_migrate_gives_way(
    url: str, engine: sa.Engine
) -> None:
    # Given a service's open transaction that updated a chip and will update pool_config next
    seed(engine)
    service = engine.connect()
    service.exec_driver_sql(
        "UPDATE chips SET msgs_enviadas_hoje = msgs_enviadas_hoje"
        " WHERE id = (SELECT id FROM chips ORDER BY id LIMIT 1)"
    )
    pid = service.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    outcome: dict = {}

    def second_write() -> None:
        try:
            service.exec_driver_sql("UPDATE pool_config SET warmup_buffer = warmup_buffer")
            service.commit()
            outcome["ok"] = True
        except Exception as error:
            outcome["error"] = repr(error)

    threads: list[threading.Thread] = []

    def hook(event: Event) -> None:
        # Forced cycle: migrate holds pool_config; the service asks for it and waits first; then
        # migrate asks for chips, which the service holds.
        if event.kind == "holding" and event.what == "pool_config" and not threads:
            threads.append(threading.Thread(target=second_write, daemon=True))
            threads[0].start()
            wait_until_waiting_on_a_lock(engine, pid)

    # When migrate adopts the tables
    try:
        migrate.upgrade(url, Options(progress=hook))
    finally:
        threads[0].join(30)
        service.close()
    # Then migrate gave way (retried) and the service's transaction went through: no deadlock
    # victim among the other services
    assert outcome == {"ok": True}
    assert migrate.current_revision(url) == migrate.head_revision(url)
