"""operation_tally: operations per (operacao, sucesso) kept exact by triggers, whoever writes.

Other services (and ops, by hand) insert operations with plain SQL; the tally the metrics read
must agree with a count of orchestrator_operations in every snapshot, and folding it must lose
nothing that is still in flight.
"""

from __future__ import annotations

import importlib.util
import threading
from types import ModuleType

import pytest
import sqlalchemy as sa
from alembic import command

from orchestrator.app.settings import ROOT
from orchestrator.ops import checker
from orchestrator.services import cycle
from orchestrator.store import migrate
from orchestrator.store import repository as repo
from tests.factories import make_chip
from tests.support.pg_waits import wait_until, waiting_backends

pytestmark = pytest.mark.db

Pairs = dict[tuple[str, bool], int]


def counted(engine: sa.Engine) -> Pairs:
    """The ground truth: every row of the history counted per (operacao, sucesso is not false)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT operacao, sucesso IS NOT FALSE, count(*) FROM orchestrator_operations"
                " GROUP BY 1, 2"
            )
        )
        return {(op, ok): n for op, ok, n in rows}


def tallied(engine: sa.Engine) -> Pairs:
    with engine.connect() as conn:
        return repo.operation_counts(conn)


def assert_exact(engine: sa.Engine) -> Pairs:
    """The tally equals the recount (and the checker finds no drift); returns the counts."""
    truth = counted(engine)
    assert tallied(engine) == truth
    assert "operation_tally_drift" not in {v.kind for v in checker.find_violations(engine)}
    return truth


def run(engine: sa.Engine, sql: str, **params: object) -> int:
    """Another service's statement, autocommitted; returns the rows it touched."""
    with engine.begin() as conn:
        return conn.execute(sa.text(sql), params).rowcount


def tally_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM operation_tally")).scalar_one()


INSERT_ONE = (
    "INSERT INTO orchestrator_operations (operacao, chip_id, sucesso) VALUES (:op, :chip, :ok)"
)


def test_other_services_plain_writes_keep_it_equal_to_a_recount(clean_db: sa.Engine) -> None:
    # Given operations written with plain SQL: one by one (sucesso true, false, NULL, left to its
    # default), several in one statement, and 500 in bulk
    chip = make_chip(clean_db, "active")
    for op, ok in [("auto_replace", True), ("auto_provision", False), ("cancel", None)]:
        run(clean_db, INSERT_ONE, op=op, chip=chip, ok=ok)
    run(
        clean_db,
        "INSERT INTO orchestrator_operations (operacao) VALUES ('promotion_warming_ready')",
    )
    run(
        clean_db,
        "INSERT INTO orchestrator_operations (operacao, sucesso) VALUES"
        " ('migration', true), ('migration', false), ('auto_provision', true)",
    )
    run(
        clean_db,
        "INSERT INTO orchestrator_operations (operacao, sucesso)"
        " SELECT (ARRAY['auto_replace', 'demotion', 'promotion_ready_active'])[1 + g % 3],"
        " g % 7 <> 0 FROM generate_series(1, 500) AS g",
    )
    bulk = range(1, 501)
    assert assert_exact(clean_db)[("auto_replace", True)] == 1 + sum(
        1 for g in bulk if g % 3 == 0 and g % 7 != 0
    )
    # When they flip outcomes and types in bulk, update unrelated columns, delete, and roll a
    # batch back
    run(clean_db, "UPDATE orchestrator_operations SET sucesso = false WHERE operacao = 'demotion'")
    run(clean_db, "UPDATE orchestrator_operations SET sucesso = true WHERE sucesso IS NULL")
    run(
        clean_db,
        "UPDATE orchestrator_operations SET operacao = 'cancel' WHERE operacao = 'migration'",
    )
    run(clean_db, "UPDATE orchestrator_operations SET motivo = 'revisado'")
    deleted = run(
        clean_db,
        "DELETE FROM orchestrator_operations WHERE id IN"
        " (SELECT id FROM orchestrator_operations WHERE operacao = 'promotion_ready_active'"
        " ORDER BY id LIMIT 40)",
    )
    with pytest.raises(sa.exc.IntegrityError), clean_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO orchestrator_operations (operacao) VALUES ('cancel')"))
        conn.execute(sa.text("INSERT INTO orchestrator_operations (operacao) VALUES ('bogus')"))
    # Then the tally still equals the recount, pair by pair
    counts = assert_exact(clean_db)
    assert deleted == 40
    assert counts[("demotion", False)] == sum(1 for g in bulk if g % 3 == 1)
    assert ("demotion", True) not in counts
    promotions = sum(n for (op, _), n in counts.items() if op == "promotion_ready_active")
    assert promotions == sum(1 for g in bulk if g % 3 == 2) - 40
    assert counts[("cancel", True)] == 2 and counts[("cancel", False)] == 1
    assert ("migration", True) not in counts and ("migration", False) not in counts


def test_truncate_resets_it(clean_db: sa.Engine) -> None:
    run(clean_db, INSERT_ONE, op="cancel", chip=None, ok=True)
    run(clean_db, "TRUNCATE orchestrator_operations")
    assert tallied(clean_db) == {}
    run(clean_db, INSERT_ONE, op="cancel", chip=None, ok=False)
    assert assert_exact(clean_db) == {("cancel", False): 1}


def test_the_cycle_folds_it_to_one_row_per_pair_while_an_insert_is_in_flight(
    clean_db: sa.Engine,
) -> None:
    # Given 300 operations inserted one statement each (300 delta rows), and one more inserted by
    # a transaction still open
    for n in range(300):
        run(clean_db, INSERT_ONE, op="auto_replace", chip=None, ok=n % 3 != 0)
    assert tally_rows(clean_db) == 300
    open_insert = clean_db.connect()
    open_insert.begin()
    open_insert.execute(sa.text(INSERT_ONE), {"op": "auto_replace", "chip": None, "ok": False})
    try:
        # When the cycle tidies up (a wait on the open insert would end in lock_timeout)
        _plan, _status, _config, sweep = cycle.read_plan(clean_db)
        tidied = cycle.tidy(clean_db, sweep)
        # Then the 300 deltas became one row per pair, without waiting for the open insert
        assert tidied["operation_tally_rows_folded"] == 300
        assert tally_rows(clean_db) == 2
        assert assert_exact(clean_db) == {("auto_replace", True): 200, ("auto_replace", False): 100}
        # ... and the insert, once committed, counts once
        open_insert.commit()
    finally:
        open_insert.close()
    assert assert_exact(clean_db) == {("auto_replace", True): 200, ("auto_replace", False): 101}
    assert tally_rows(clean_db) == 3


def test_two_folds_at_once_take_turns_and_keep_the_sums(clean_db: sa.Engine) -> None:
    # Given deltas, and a fold done but not committed
    for ok in (True, True, False):
        run(clean_db, INSERT_ONE, op="migration", chip=None, ok=ok)
    first = clean_db.connect()
    first.begin()
    done: dict[str, int] = {}
    try:
        assert repo.compact_operation_tally(first) == 3

        def second() -> None:
            with clean_db.begin() as conn:
                done["second"] = repo.compact_operation_tally(conn)

        # When a second fold starts, and an insert commits meanwhile
        thread = threading.Thread(target=second)
        thread.start()
        wait_until(lambda: waiting_backends(clean_db) == 1)
        run(clean_db, INSERT_ONE, op="migration", chip=None, ok=True)
        first.commit()
        thread.join(20)
    finally:
        first.close()
    # Then the second waited for the first and folded its 2 rows and the new delta
    assert done["second"] == 3
    assert assert_exact(clean_db) == {("migration", True): 3, ("migration", False): 1}
    assert tally_rows(clean_db) == 2


def test_a_tally_the_triggers_did_not_see_is_reported_and_resynced(clean_db: sa.Engine) -> None:
    # Given operations written with the triggers bypassed (a restore with session_replication_role)
    run(clean_db, INSERT_ONE, op="cancel", chip=None, ok=True)
    with clean_db.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text(INSERT_ONE), {"op": "cancel", "chip": None, "ok": True})
        conn.execute(sa.text("DELETE FROM orchestrator_operations WHERE sucesso"))
        conn.execute(sa.text(INSERT_ONE), {"op": "demotion", "chip": None, "ok": False})
    # Then the checker reports the drift
    found = [v for v in checker.find_violations(clean_db) if v.kind == "operation_tally_drift"]
    assert sorted(v.detail for v in found) == [
        "cancel sucesso=True: 1 tallied, 0 counted",
        "demotion sucesso=False: 0 tallied, 1 counted",
    ]
    # And resync makes it exact again
    with clean_db.begin() as conn:
        conn.execute(sa.text("SELECT operation_tally_resync()"))
    assert assert_exact(clean_db) == {("demotion", False): 1}


def revision_0013() -> ModuleType:
    """migrations/versions/0013_operation_tally.py as a module (its SQL, run again by hand)."""
    path = ROOT / "migrations" / "versions" / "0013_operation_tally.py"
    spec = importlib.util.spec_from_file_location("revision_0013", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_0013_counts_the_history_already_there_and_is_safe_to_run_twice(empty_url: str) -> None:
    # Given a database at 0007 holding a history
    command.upgrade(migrate.alembic_config(empty_url), "0007_flaps")
    engine = sa.create_engine(empty_url, poolclass=sa.pool.NullPool)
    try:
        run(
            engine,
            "INSERT INTO orchestrator_operations (operacao, sucesso)"
            " SELECT (ARRAY['auto_replace', 'cancel'])[1 + g % 2], g % 5 <> 0"
            " FROM generate_series(1, 50) AS g",
        )
        truth = counted(engine)
        # When it is upgraded to head, and 0013's statements run once more
        migrate.upgrade(empty_url)
        revision = revision_0013()
        with engine.begin() as conn:
            conn.exec_driver_sql(revision.UPGRADE)
        run(engine, revision.BACKFILL)
        # Then the tally counts the history once, and keeps counting
        expected = {
            ("auto_replace", True): 20,
            ("auto_replace", False): 5,
            ("cancel", True): 20,
            ("cancel", False): 5,
        }
        assert truth == expected
        assert tallied(engine) == expected
        run(engine, INSERT_ONE, op="cancel", chip=None, ok=True)
        assert tallied(engine)[("cancel", True)] == 21
    finally:
        engine.dispose()
