"""Adopting the seed-era tables other services created, while they keep writing to them.

Each test has a database of its own holding what the seed document's code creates and writes
(tests/support/seed_era.py): migrate must add what 0001 has around those rows without losing or
changing one, without failing one of the other services' statements, and refuse, changing
nothing, while a row breaks a constraint.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url

from orchestrator import adoption, adoption_run, baseline, cycle, db, lifecycle, migrate
from orchestrator.adoption_run import AdoptionLockTimeout, Event, Options
from orchestrator.settings import ROOT
from tests.support import seed_era

pytestmark = pytest.mark.db

CHIPS = 240


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


def seed(engine: sa.Engine, **variant: bool) -> None:
    """The seed-era tables with rows (chips of every status, conversations, one pool_config)."""
    with engine.begin() as conn:
        seed_era.create_seed_schema(conn, **variant)
        seed_era.fill(conn, CHIPS, conversations_per_chip=2)
        if variant.get("operations"):
            conn.exec_driver_sql(
                "INSERT INTO orchestrator_operations (operacao, chip_id, motivo)"
                " SELECT 'promotion_ready_active', id, 'seed era' FROM chips LIMIT 5"
            )


def state(engine: sa.Engine) -> tuple[dict, dict]:
    """(catalog fingerprint, every row): equal before and after means nothing changed."""
    with engine.connect() as conn:
        return seed_era.fingerprint(conn), seed_era.all_rows(conn)


def seed_rows(engine: sa.Engine) -> dict[str, dict[str, tuple]]:
    with engine.connect() as conn:
        return {t: seed_era.snapshot(conn, t) for t in seed_era.SEED_COLUMNS}


def scalar(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


# -- the other services ---------------------------------------------------------------------------


class OtherServices:
    """Plain autocommit statements, as the services that created the tables send them.

    Each writer touches only rows it owns (chips it inserted, chips reserved for it) and records
    what it wrote, so the test knows every row's expected end state exactly.
    """

    def __init__(self, url: str, flip_ids: list[str], warm_ids: list[str], chip_ids: list[str]):
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_size=10)
        self.stop = threading.Event()
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.inserted: dict[str, tuple] = {}
        self.flipped: dict[str, bool] = {}
        self.trust: dict[str, int] = {}
        self.messages: collections.Counter[str] = collections.Counter()
        self.conversations: dict[str, str] = {}
        self.warmup_buffer: int | None = None
        self.probes: list[tuple[threading.Thread, dict]] = []
        self._flip, self._warm, self._chips = flip_ids, warm_ids, chip_ids
        self._threads = [
            threading.Thread(target=self._loop, args=(name, fn), daemon=True)
            for name, fn in (
                ("provision", self._provision),
                ("evolution", self._evolution),
                ("warmup", self._warmup),
                ("conversations", self._conversation),
                ("admin", self._admin),
            )
        ]

    def start(self) -> OtherServices:
        for t in self._threads:
            t.start()
        self.wait_progress()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        for t, _ in self.probes:
            t.join(30)
        self.engine.dispose()

    def _loop(self, name: str, write: Callable[[sa.Connection, random.Random], None]) -> None:
        rng = random.Random(name)
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                try:
                    write(conn, rng)
                    self.counts[name] += 1
                except Exception as error:  # recorded: the test asserts there is none
                    self.errors.append(f"{name}: {type(error).__name__}: {error}")
                    return
                time.sleep(0.003)  # pacing (two shared cores), not synchronisation

    def insert_chip(self, conn: sa.Connection, connected: bool, trust: int) -> str:
        """A chip with only the seed's columns: integer trust_score, status 'warming'."""
        values = {
            "telefone": f"+5511{uuid.uuid4().int % 10**9:09d}",
            "instance_name": f"svc-{uuid.uuid4().hex[:8]}",
            "status": "warming",
            "trust_score": trust,
            "trust_level": "baixo",
            "fase_warmup": "primeiros_contatos",
            "evolution_connected": connected,
            "msgs_enviadas_hoje": 0,
        }
        chip_id = conn.execute(
            sa.text(
                "INSERT INTO chips (telefone, instance_name, status, trust_score, trust_level,"
                " fase_warmup, warming_started_at, evolution_connected, msgs_enviadas_hoje)"
                " VALUES (:telefone, :instance_name, :status, :trust_score, :trust_level,"
                " :fase_warmup, now(), :evolution_connected, :msgs_enviadas_hoje) RETURNING id"
            ),
            values,
        ).scalar_one()
        return str(chip_id)

    def _provision(self, conn: sa.Connection, rng: random.Random) -> None:
        trust = rng.randint(0, 100)
        chip_id = self.insert_chip(conn, connected=True, trust=trust)
        self.inserted[chip_id] = (trust, True)

    def _evolution(self, conn: sa.Connection, rng: random.Random) -> None:
        chip_id, value = rng.choice(self._flip), rng.random() < 0.5
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = :v WHERE id = :id"),
            {"v": value, "id": chip_id},
        )
        self.flipped[chip_id] = value

    def _warmup(self, conn: sa.Connection, rng: random.Random) -> None:
        chip_id, trust = rng.choice(self._warm), rng.randint(0, 100)
        conn.execute(
            sa.text(
                "UPDATE chips SET trust_score = :t, msgs_enviadas_hoje = msgs_enviadas_hoje + 1"
                " WHERE id = :id"
            ),
            {"t": trust, "id": chip_id},
        )
        self.trust[chip_id] = trust
        self.messages[chip_id] += 1

    def _conversation(self, conn: sa.Connection, rng: random.Random) -> None:
        conversation, chip_id = f"svc-{uuid.uuid4().hex}", rng.choice(self._chips)
        conn.execute(
            sa.text("INSERT INTO conversation_chips (conversation_id, chip_id) VALUES (:c, :chip)"),
            {"c": conversation, "chip": chip_id},
        )
        self.conversations[conversation] = chip_id

    def _admin(self, conn: sa.Connection, rng: random.Random) -> None:
        value = rng.randint(5, 15)
        conn.execute(sa.text("UPDATE pool_config SET warmup_buffer = :n"), {"n": value})
        self.warmup_buffer = value

    def wait_progress(self, timeout: float = 60) -> None:
        """Until every writer has committed another statement (they run between our steps)."""
        start = dict(self.counts)
        deadline = time.monotonic() + timeout
        while any(self.counts[n] <= start.get(n, 0) for n in self._names()):
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"writers stalled: {dict(self.counts)}"
            time.sleep(0.005)

    def _names(self) -> list[str]:
        return ["provision", "evolution", "warmup", "conversations", "admin"]

    def probe_while_locked(self) -> None:
        """A disconnected chip inserted while migrate holds its lock: it waits, then lands."""
        result: dict = {}
        ready = threading.Event()

        def insert() -> None:
            with self.engine.connect() as conn:
                result["pid"] = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                ready.set()
                try:
                    result["id"] = self.insert_chip(conn, connected=False, trust=42)
                except Exception as error:
                    result["error"] = repr(error)

        thread = threading.Thread(target=insert, daemon=True)
        thread.start()
        self.probes.append((thread, result))
        assert ready.wait(10)
        with self.engine.connect() as conn:  # forced: the insert is seen waiting on the lock
            deadline = time.monotonic() + 30
            while conn.exec_driver_sql(
                f"SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity"
                f" WHERE pid = {result['pid']}"
            ).scalar():
                assert time.monotonic() < deadline, "the probe never waited on the lock"
                time.sleep(0.005)


def adopt_under_writers(url: str, engine: sa.Engine) -> OtherServices:
    """Run migrate while the other services write; every online step waits for their progress."""
    with engine.connect() as conn:
        ids = [str(i) for i in conn.exec_driver_sql("SELECT id FROM chips ORDER BY id").scalars()]
    services = OtherServices(url, ids[:20], ids[20:40], ids[40:]).start()

    def hook(event: Event) -> None:
        if event.kind == "before":  # between two online steps: every writer got through
            services.wait_progress()
        elif event.kind == "locked":  # inside a short locked transaction: writers wait
            services.probe_while_locked()

    try:
        migrate.upgrade(url, Options(progress=hook))
        services.wait_progress()
    finally:
        services.finish()
    return services


def relfilenodes(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT relname, relfilenode FROM pg_class WHERE relname IN"
            " ('chips', 'conversation_chips', 'pool_config')"
        )
        return dict(rows.all())


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
        result = lifecycle.replace_chip(eng, old, "low_trust")
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


def catalog_by_table(fp: dict) -> dict:
    """Names and definitions an adopted database must share with a fresh one."""
    casts = lambda d: d.replace("::double precision", "").replace("(", "").replace(")", "")  # noqa: E731
    return {
        "constraints": {
            (t, n, casts(d), v) for t, n, d, v in fp["constraints"] if t != "alembic_version"
        },
        "indexes": {(n, d, v) for n, d, v in fp["indexes"]},
        "triggers": set(fp["triggers"]),
        "functions": set(fp["functions"]),
        "not_null": {(t, c) for t, c, _, nn, _, _ in fp["columns"] if nn},
        "with_default": {(t, c) for t, c, _, _, d, ident in fp["columns"] if d or ident},
        "columns": {(t, c) for t, c, *_ in fp["columns"]},
        "types": {(t, c): ty for t, c, ty, *_ in fp["columns"]},
    }


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


# -- refusals --------------------------------------------------------------------------------------

VIOLATIONS = {
    "trust 150": (
        "UPDATE chips SET trust_score = 150 WHERE id = (SELECT id FROM chips ORDER BY id LIMIT 1)"
        " RETURNING id::text",
        "chips_trust_score_in_range",
    ),
    "status zumbi": (
        "UPDATE chips SET status = 'zumbi' WHERE id = (SELECT id FROM chips ORDER BY id DESC"
        " LIMIT 1) RETURNING id::text",
        "chips_status_known",
    ),
    "duplicate telefone": (
        "INSERT INTO chips (telefone, status, trust_score) SELECT telefone, 'warming', 10"
        " FROM chips ORDER BY id LIMIT 1 RETURNING id::text",
        "chips_telefone_key",
    ),
    "two pool_config rows": (
        "INSERT INTO pool_config DEFAULT VALUES RETURNING id::text",
        baseline.ONE_ROW_INDEX,
    ),
    "producao_min > producao_max": (
        "UPDATE pool_config SET producao_min = 30, producao_max = 20 RETURNING id::text",
        "pool_config_producao_min_le_max",
    ),
    "status NULL": (
        "UPDATE chips SET status = NULL WHERE id = (SELECT id FROM chips ORDER BY id LIMIT 1)"
        " RETURNING id::text",
        "chips_status_not_null",
    ),
    "conversation on an unknown chip": (
        "INSERT INTO conversation_chips (conversation_id, chip_id)"
        " VALUES ('orphan', gen_random_uuid()) RETURNING id::text",
        "conversation_chips_chip_id_fkey",
    ),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_a_violating_row_is_refused_by_id_and_nothing_changes(
    url: str, engine: sa.Engine, violation: str
) -> None:
    # Given a seed-era database with one row that breaks a constraint 0001 has
    seed(engine)
    sql, constraint = VIOLATIONS[violation]
    with engine.begin() as conn:
        offending = conn.exec_driver_sql(sql).scalar_one()
    before = state(engine)
    # When migrate runs
    with pytest.raises(adoption.AdoptionBlocked) as refused:
        migrate.upgrade(url)
    # Then it names the constraint and the row's id, and nothing at all changed
    assert constraint in refused.value.reason
    details = "\n".join(refused.value.details())
    assert f"{constraint} (" in details and f"id {offending}" in details
    assert state(engine) == before


@pytest.mark.parametrize(
    "violation", ["trust 150", "duplicate telefone", "conversation on an unknown chip"]
)
def test_a_violating_row_written_while_migrate_runs_is_refused_and_everything_undone(
    url: str, engine: sa.Engine, violation: str
) -> None:
    # Given a clean seed-era database, and a service that writes a bad row right after the
    # preflight found none (forced: the hook runs between preflight and the first lock)
    seed(engine)
    before = state(engine)
    sql, constraint = VIOLATIONS[violation]
    written: list[str] = []

    def hook(event: Event) -> None:
        if event.kind == "preflight":
            with engine.begin() as conn:
                written.append(conn.exec_driver_sql(sql).scalar_one())

    # When migrate runs
    with pytest.raises(adoption.AdoptionBlocked) as refused:
        migrate.upgrade(url, Options(progress=hook))
    # Then the row is named, and what this run added was taken back: the schema is as before
    assert f"id {written[0]}" in "\n".join(refused.value.details())
    assert constraint in refused.value.reason and "removed" in refused.value.reason
    fingerprint, _ = state(engine)
    assert fingerprint == before[0]


def test_incompatible_column_types_are_refused_before_anything(url: str, engine: sa.Engine) -> None:
    seed(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE chips ALTER COLUMN trust_score TYPE text")
    before = state(engine)
    with pytest.raises(adoption.AdoptionBlocked) as refused:
        migrate.upgrade(url)
    assert "chips.trust_score is text" in "\n".join(refused.value.details())
    assert state(engine) == before


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


# -- migrate --check ------------------------------------------------------------------------------


def test_check_reports_plan_and_blockers_and_changes_nothing(url: str, engine: sa.Engine) -> None:
    seed(engine)
    clean = migrate.check(url)
    assert clean.mode.startswith("adopt") and not clean.blocked
    assert clean.pending == ["0002_outbox", "0003_fit", "0004_purchases", "0005_scale"]
    assert any(s.what == "validate constraint chips_trust_score_in_range" for s in clean.steps)
    with engine.begin() as conn:
        bad = conn.exec_driver_sql(VIOLATIONS["trust 150"][0]).scalar_one()
    before = state(engine)
    report = migrate.check(url)
    assert report.blocked
    [blocker] = report.blockers
    assert (blocker.constraint, blocker.rows[0][0]) == ("chips_trust_score_in_range", bad)
    assert state(engine) == before


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m orchestrator ARGS` (== chip-orchestrator) on this test's database."""
    env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_check_names_the_blocking_rows_and_migrate_refuses_then_adopts(
    url: str, engine: sa.Engine
) -> None:
    # Given a seed-era database with a chip whose trust is 150
    seed(engine)
    with engine.begin() as conn:
        bad = conn.exec_driver_sql(VIOLATIONS["trust 150"][0]).scalar_one()
    before = state(engine)
    # When ops run the runbook's first command
    check = run_cli(url, "migrate", "--check")
    # Then it shows the plan and the blocking row, exits 1, and changes nothing
    assert check.returncode == 1, check.stderr
    assert "adopt the existing tables" in check.stdout
    assert "[online    ] chips: validate constraint chips_trust_score_in_range" in check.stdout
    assert f"id {bad}  trust_score=150" in check.stdout
    report = json.loads(run_cli(url, "migrate", "--check", "--json").stdout)
    assert report["blocked"] and report["blockers"][0]["rows"][0]["id"] == bad
    # ... and migrate refuses: one summary line, then the rows; exit 2; nothing changed
    refused = run_cli(url, "migrate")
    assert refused.returncode == 2
    first, *rest = refused.stderr.strip().splitlines()
    assert first.startswith("chip-orchestrator: migrate refused: rows break chips_trust_score")
    assert any(bad in line for line in rest)
    assert state(engine) == before
    # When the row is fixed, check is clean and migrate adopts, then says unchanged
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE chips SET trust_score = 100 WHERE id = :i"), {"i": bad})
    clean = run_cli(url, "migrate", "--check")
    assert clean.returncode == 0 and "nothing blocks migrate" in clean.stdout
    adopted = run_cli(url, "migrate")
    assert adopted.returncode == 0, adopted.stderr
    assert "done: validate constraint chips_trust_score_in_range" in adopted.stdout
    assert "(was unversioned: adopted the existing tables)" in adopted.stdout
    assert "(unchanged)" in run_cli(url, "migrate").stdout
    up_to_date = run_cli(url, "migrate", "--check")
    assert up_to_date.returncode == 0 and "up to date" in up_to_date.stdout


def test_a_table_owned_by_another_role_is_refused_before_anything(
    url: str, engine: sa.Engine
) -> None:
    # Given seed-era tables where chips belongs to another service's role, and migrate running
    # as a role that owns the rest
    seed(engine)
    suffix = uuid.uuid4().hex[:8]
    service, migrator = f"chiporch_svc_{suffix}", f"chiporch_mig_{suffix}"
    database = make_url(url).database
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {service} NOLOGIN")
        conn.exec_driver_sql(f"CREATE ROLE {migrator} LOGIN")
        conn.exec_driver_sql(f'GRANT CREATE ON DATABASE "{database}" TO {migrator}')
        conn.exec_driver_sql(f"GRANT CREATE ON SCHEMA public TO {migrator}")
        conn.exec_driver_sql(f"ALTER TABLE pool_config OWNER TO {migrator}")
        conn.exec_driver_sql(f"ALTER TABLE conversation_chips OWNER TO {migrator}")
        conn.exec_driver_sql(f"ALTER TABLE chips OWNER TO {service}")
    before = state(engine)
    try:
        as_migrator = make_url(url).set(username=migrator).render_as_string(hide_password=False)
        with pytest.raises(adoption.AdoptionBlocked) as refused:
            migrate.upgrade(as_migrator)
        assert f"chips is owned by role {service}" in "\n".join(refused.value.details())
        assert state(engine) == before
    finally:
        with engine.begin() as conn:
            for role in (service, migrator):
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")


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
