"""What one metrics scrape reads from PostgreSQL: the same figures as a recount, at a cost that does
not grow with the operations history."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.ops import metrics_read
from tests.factories import make_chip

pytestmark = pytest.mark.db


def _relations(plan: dict) -> Iterator[str]:
    """Every table or index a plan node reads, recursively."""
    for key in ("Relation Name", "Index Name"):
        if key in plan:
            yield plan[key]
    for child in plan.get("Plans", []):
        yield from _relations(child)


def relations_read_by_a_scrape(engine: sa.Engine) -> set[str]:
    """The tables and indexes in the plans of every statement read_database sends."""
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        metrics_read.read_database(engine)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    found: set[str] = set()
    with engine.connect() as conn:
        for statement, parameters in sent:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            [plan] = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).one()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            found |= set(_relations(plan[0]["Plan"]))
    return found


def test_a_scrape_reads_the_operation_tally_never_the_history(clean_db: sa.Engine) -> None:
    # Given a history of operations
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orchestrator_operations (operacao, sucesso)"
                " SELECT 'auto_replace', g % 4 <> 0 FROM generate_series(1, 200) AS g"
            )
        )
    # When a scrape reads the database
    read = relations_read_by_a_scrape(clean_db)
    # Then its statements read the tally, and no plan touches orchestrator_operations
    assert "operation_tally" in read
    assert not {r for r in read if r.startswith(("orchestrator_operations", "idx_orchestrator"))}


def test_the_exported_operation_counts_equal_a_recount_after_other_services_inserts(
    clean_db: sa.Engine,
) -> None:
    # Given operations other services wrote with plain SQL: one by one (sucesso NULL counts as
    # success, as it always did), several per statement, in bulk, and one batch deleted
    chip = make_chip(clean_db, "degraded")
    statements = [
        "INSERT INTO orchestrator_operations (operacao, chip_id) VALUES ('cancel', :c)",
        "INSERT INTO orchestrator_operations (operacao, chip_id, sucesso)"
        " VALUES ('cancel', :c, NULL), ('auto_provision', :c, false)",
        "INSERT INTO orchestrator_operations (operacao, sucesso)"
        " SELECT (ARRAY['migration', 'demotion'])[1 + g % 2], g % 3 <> 0"
        " FROM generate_series(1, 90) AS g",
        "DELETE FROM orchestrator_operations WHERE operacao = 'demotion' AND NOT sucesso",
    ]
    for sql in statements:
        with clean_db.begin() as conn:
            conn.execute(sa.text(sql), {"c": chip})
    # When a scrape reads the database
    reading = metrics_read.read_database(clean_db)
    # Then every (operacao, sucesso) carries the recount, and every known operacao is exported
    truth: dict[tuple[str, str], int] = {}
    with clean_db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT operacao, sucesso, count(*) FROM orchestrator_operations GROUP BY 1, 2")
        )
        for op, ok, n in rows:
            pair = (op, "false" if ok is False else "true")
            truth[pair] = truth.get(pair, 0) + n
    zeros = {(op, ok): 0 for op in metrics_read.OPERACOES for ok in ("true", "false")}
    assert reading.operations == zeros | truth
    assert reading.operations[("cancel", "true")] == 2
    assert reading.operations[("demotion", "false")] == 0
    assert reading.operations[("migration", "false")] == 15
