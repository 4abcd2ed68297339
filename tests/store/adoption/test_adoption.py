"""Adopting the seed-era tables other services created, while they keep writing to them.

Each test has a database of its own holding what the seed document's code creates and writes
(tests/support/seed_era.py): migrate must add what 0001 has around those rows without losing or
changing one, without failing one of the other services' statements, and refuse, changing
nothing, while a row breaks a constraint.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orchestrator.services import cycle, replacement
from orchestrator.store import db, migrate
from orchestrator.store.adoption import baseline
from tests.support import seed_era
from tests.support.adoption import (
    adopt_under_writers,
    catalog_by_table,
    relfilenodes,
    scalar,
    seed,
    seed_rows,
)

pytestmark = pytest.mark.db


# -- adoption --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        {},  # exactly the seed code's columns; no orchestrator_operations yet
        {"operations": True, "rich": True, "serial_ids": True},  # + the seed's migration
    ],
    ids=["seed-columns", "with-seed-operations"],
)
def test_adoption_keeps_every_row_and_every_writer_statement(
    url: str, engine: sa.Engine, variant: dict
) -> None:
    # Given the seed-era tables with rows, and other services writing to them all the time
    seed(engine, **variant)
    before, files = seed_rows(engine), relfilenodes(engine)
    with engine.connect() as conn:
        operations = (
            conn.exec_driver_sql("SELECT * FROM orchestrator_operations ORDER BY id").all()
            if variant
            else []
        )

    # When migrate adopts them while the services keep writing
    services = adopt_under_writers(url, engine)

    # Then no statement of theirs failed; each got through between every two steps
    assert services.errors == []
    assert min(services.counts.values()) > 0
    assert migrate.current_revision(url) == migrate.head_revision(url)
    # ... no table was rewritten (columns added with constant defaults: catalog only)
    assert relfilenodes(engine) == files
    # ... no row lost or changed, beyond what the services themselves wrote
    after = seed_rows(engine)
    columns = seed_era.SEED_COLUMNS["chips"]
    for chip_id, row in before["chips"].items():
        expected = dict(zip(columns, row, strict=True))
        if chip_id in services.flipped:
            expected["evolution_connected"] = services.flipped[chip_id]
        if chip_id in services.trust:
            expected["trust_score"] = services.trust[chip_id]
            expected["msgs_enviadas_hoje"] += services.messages[chip_id]
        assert after["chips"][chip_id] == tuple(expected.values())
    assert {
        k: v for k, v in after["conversation_chips"].items() if k in before["conversation_chips"]
    } == before["conversation_chips"]
    [config] = after["pool_config"].values()
    [old_config] = before["pool_config"].values()
    assert config == (*old_config[:4], services.warmup_buffer, *old_config[5:])
    # ... every row they inserted is there as they wrote it
    with engine.connect() as conn:
        inserted = dict(
            conn.execute(
                sa.text(
                    "SELECT id::text, (trust_score, evolution_connected)::text FROM chips"
                    " WHERE id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": list(services.inserted)},
            ).all()
        )
        conversations = dict(
            conn.execute(
                sa.text(
                    "SELECT conversation_id, chip_id::text FROM conversation_chips"
                    " WHERE conversation_id = ANY(:ids) AND active"
                ),
                {"ids": list(services.conversations)},
            ).all()
        )
        if operations:
            assert (
                conn.exec_driver_sql("SELECT * FROM orchestrator_operations ORDER BY id").all()[
                    : len(operations)
                ]
                == operations
            )
    assert inserted == {k: f"({t},{'t' if c else 'f'})" for k, (t, c) in services.inserted.items()}
    assert conversations == services.conversations
    # ... a chip inserted while migrate held its lock waited, then landed, seen by the trigger
    assert services.probes and all("id" in r for _, r in services.probes), services.probes
    first_probe = services.probes[0][1]["id"]
    assert scalar(
        engine,
        "SELECT evolution_disconnected_at IS NOT NULL FROM chips WHERE id = :i",
        i=first_probe,
    )
    # ... and chips disconnected before adoption got a since-when (they can be replaced)
    untouched = set(before["chips"]) - set(services.flipped)
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM chips WHERE NOT evolution_connected"
            " AND evolution_disconnected_at IS NULL AND id = ANY(CAST(:ids AS uuid[]))",
            ids=list(untouched),
        )
        == 0
    )


def test_the_other_services_statements_work_after_adoption(url: str, engine: sa.Engine) -> None:
    # Given an adopted seed-era database
    seed(engine)
    migrate.upgrade(url)
    with engine.begin() as conn:
        # When a service inserts a chip with only the seed's columns (integer trust, 'warming')
        chip = conn.execute(
            sa.text(
                "INSERT INTO chips (telefone, instance_name, status, trust_score, trust_level,"
                " fase_warmup, warming_started_at, msgs_enviadas_hoje, evolution_connected)"
                " VALUES ('+5511900001111', 'svc', 'warming', 70, 'medio', 'expansao', now(), 0,"
                " true) RETURNING id"
            )
        ).scalar_one()
        # ... a conversation with only conversation_id and chip_id
        conn.execute(
            sa.text("INSERT INTO conversation_chips (conversation_id, chip_id) VALUES ('c-1', :c)"),
            {"c": chip},
        )
        # ... and flips evolution_connected with a plain UPDATE
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = false WHERE id = :c"), {"c": chip}
        )
    # Then the rows are complete, and the database recorded since when the chip is disconnected
    with engine.connect() as conn:
        row = (
            conn.execute(sa.text("SELECT * FROM chips WHERE id = :c"), {"c": chip}).mappings().one()
        )
        conversation = (
            conn.execute(sa.text("SELECT * FROM conversation_chips WHERE conversation_id = 'c-1'"))
            .mappings()
            .one()
        )
    assert row["trust_score"] == 70 and row["created_at"] and row["updated_at"]
    assert row["evolution_disconnected_at"] is not None
    assert conversation["active"] is True and conversation["created_at"] is not None
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = true WHERE id = :c"), {"c": chip}
        )
    assert (
        scalar(engine, "SELECT evolution_disconnected_at FROM chips WHERE id = :c", c=chip) is None
    )
    # ... and a second pool_config row is refused, whatever its id (id serial kept)
    with pytest.raises(sa.exc.IntegrityError, match=baseline.ONE_ROW_INDEX), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO pool_config (id) VALUES (2)"))


def test_our_use_cases_run_on_an_adopted_database(url: str, engine: sa.Engine) -> None:
    # Given an adopted seed-era database: an active chip losing trust with open conversations, a
    # ready chip fit to serve (integer trust scores, integer pool_config thresholds)
    seed(engine)
    migrate.upgrade(url)
    eng = db.create_engine(url)
    try:
        with eng.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE chips SET status = 'degraded' WHERE status IN ('active', 'ready')"
            )
            old = conn.exec_driver_sql(
                "INSERT INTO chips (telefone, status, trust_score, ready_at, promoted_to_active_at)"
                " VALUES ('+5511911110000', 'active', 30, now(), now()) RETURNING id::text"
            ).scalar_one()
            new = conn.exec_driver_sql(
                "INSERT INTO chips (telefone, status, trust_score, ready_at, fase_warmup)"
                " VALUES ('+5511911110001', 'ready', 97, now(), 'operacao') RETURNING id::text"
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO conversation_chips (conversation_id, chip_id) SELECT 'x-' || g, :c FROM generate_series(1, 3) g"
                ),
                {"c": old},
            )
        # When the cycle plans and replace_chip runs
        the_plan, _status, config = cycle.plan(eng)
        result = replacement.replace_chip(eng, old, "low_trust")
        # Then they work as on a fresh database
        assert old in [r.chip_id for r in the_plan.replace]
        assert config.trust_min_for_ready == 85
        assert result["status"] == "replaced" and result["replacement_id"] == new
        assert result["conversas_migradas"] == 3
        assert (
            scalar(
                engine,
                "SELECT count(*) FROM orchestrator_operations WHERE chip_id = :c AND operacao = 'auto_replace'",
                c=old,
            )
            == 1
        )
    finally:
        eng.dispose()


def test_an_adopted_database_matches_a_fresh_one(
    url: str, engine: sa.Engine, database_url: str
) -> None:
    # Given a fresh database at head (the session's) and an adopted seed-era one
    seed(engine, operations=True)
    migrate.upgrade(url)
    fresh_engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with fresh_engine.connect() as conn:
            fresh = catalog_by_table(seed_era.fingerprint(conn))
    finally:
        fresh_engine.dispose()
    with engine.connect() as conn:
        adopted = catalog_by_table(seed_era.fingerprint(conn))
    # Then they have the same constraints by name (all validated), indexes, trigger, function
    one_row_check = {c for c in fresh["constraints"] if c[1] == baseline.ONE_ROW_CHECK}
    assert adopted["constraints"] == fresh["constraints"] - one_row_check
    assert {n for n, _, v in adopted["indexes"] if v} == {n for n, _, _ in fresh["indexes"]} | {
        baseline.ONE_ROW_INDEX
    }
    assert fresh["indexes"] <= adopted["indexes"]
    assert adopted["triggers"] == fresh["triggers"] and adopted["functions"] == fresh["functions"]
    # ... the same columns, NOT NULL where fresh has it, a default wherever fresh has one
    assert fresh["columns"] <= adopted["columns"]
    assert fresh["not_null"] <= adopted["not_null"]
    assert fresh["with_default"] - {("pool_config", "id")} <= adopted["with_default"]
    # ... and the other services' column types where changing them would rewrite the table
    assert adopted["types"][("chips", "trust_score")] == "integer"
    assert adopted["types"][("pool_config", "id")] == "integer"
    for table in baseline.TABLES:
        for column in table.columns:
            assert (
                adopted["types"][(table.name, column.name)].split("(")[0] in column.accepted
                or table.create
            )
