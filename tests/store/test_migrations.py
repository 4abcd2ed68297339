"""The schema: migrations apply, re-apply as a no-op, and the database refuses nonsense."""

import pytest
import sqlalchemy as sa
from alembic import command

from orchestrator.domain.pool import Counts
from orchestrator.ops import checker
from orchestrator.services import growth
from orchestrator.store import migrate
from orchestrator.store import repository as repo
from tests.factories import add_conversations, chip_row, make_chip

pytestmark = pytest.mark.db


def test_migrate_twice_changes_nothing(database_url: str) -> None:
    before, after = migrate.upgrade(database_url)
    assert before == after == migrate.head_revision(database_url)


def test_disconnection_time_is_recorded_by_the_database(clean_db: sa.Engine) -> None:
    chip = make_chip(clean_db)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = false WHERE id = :id"), {"id": chip}
        )
    assert chip_row(clean_db, chip).evolution_disconnected_at is not None
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET msgs_enviadas_hoje = 5 WHERE id = :id"), {"id": chip}
        )
    first = chip_row(clean_db, chip).evolution_disconnected_at
    assert first is not None, "an unrelated update keeps the disconnection time"
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = true WHERE id = :id"), {"id": chip}
        )
    assert chip_row(clean_db, chip).evolution_disconnected_at is None


@pytest.mark.parametrize(
    "assignment",
    [
        "producao_min = -1",
        "producao_min = 30, producao_max = 20",
        "trust_min_for_ready = 101",
        "trust_degraded_threshold = -5",
        "replace_storm_fraction = 0",
        "warmup_buffer = -2",
    ],
)
def test_database_refuses_a_nonsensical_pool_config(clean_db: sa.Engine, assignment: str) -> None:
    with pytest.raises(sa.exc.IntegrityError), clean_db.begin() as conn:
        conn.execute(sa.text(f"UPDATE pool_config SET {assignment}"))


def test_pool_config_has_exactly_one_row(clean_db: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), clean_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO pool_config (id) VALUES (2)"))


def test_seed_columns_alone_make_a_valid_pool_config(clean_db: sa.Engine) -> None:
    with clean_db.begin() as conn:
        conn.execute(sa.text("DELETE FROM pool_config"))
        conn.execute(
            sa.text(
                "INSERT INTO pool_config (producao_min, producao_max, ready_min, warmup_buffer,"
                " warmup_days, trust_min_for_ready, trust_degraded_threshold, auto_provision,"
                " default_ddd) VALUES (5, 10, 2, 4, 21, 85, 60, true, 21)"
            )
        )
        row = conn.execute(sa.text("SELECT * FROM pool_config")).mappings().one()
    assert (row["max_provisions_per_cycle"], row["disconnect_grace_minutes"]) == (3, 30)
    assert (
        row["replace_storm_fraction"],
        row["auto_cancel_banned"],
        row["alert_cooldown_minutes"],
    ) == (0.5, False, 30)
    assert (
        row["flap_max_per_hour"],
        row["number_monthly_cost"],
        row["service_level"],
        row["auto_size"],
    ) == (6, None, 0.95, False)


@pytest.mark.parametrize(
    "assignment",
    [
        "flap_max_per_hour = -1",
        "number_monthly_cost = -0.01",
        "service_level = 1",
        "service_level = 0",
    ],
)
def test_database_refuses_a_nonsensical_planning_setting(
    clean_db: sa.Engine, assignment: str
) -> None:
    with pytest.raises(sa.exc.IntegrityError), clean_db.begin() as conn:
        conn.execute(sa.text(f"UPDATE pool_config SET {assignment}"))


@pytest.mark.parametrize(
    "values",
    [{"status": "zombie"}, {"trust_score": 120}, {"trust_score": -1}],
)
def test_database_refuses_a_nonsensical_chip(clean_db: sa.Engine, values: dict) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        make_chip(clean_db, **{"status": "active", **values})


def test_0005_counts_the_chips_and_notes_the_stranded_ones_already_there(empty_url: str) -> None:
    # Given a database at 0004 with chips of several statuses and conversations left open on a
    # degraded and a cancelled chip
    command.upgrade(migrate.alembic_config(empty_url), "0004_purchases")
    engine = sa.create_engine(empty_url, poolclass=sa.pool.NullPool)
    try:
        for status in ("active", "active"):
            add_conversations(engine, make_chip(engine, status), 2)
        make_chip(engine, "ready")
        make_chip(engine, "warming")
        stranded = sorted(make_chip(engine, status) for status in ("degraded", "cancelled"))
        for chip in stranded:
            add_conversations(engine, chip, 1)
        # When it is upgraded to head
        migrate.upgrade(empty_url)
        # Then the tally counts every chip, and the two stranded chips are noted
        with engine.connect() as conn:
            assert repo.status_counts(conn) == Counts(
                active=2, ready=1, warming=1, degraded=1, cancelled=1
            )
            assert repo.noted_stranded(conn, 100)[0] == stranded
        kinds = {v.kind for v in checker.find_violations(engine)}
        assert not kinds & {"status_tally_drift", "stranded_unnoted"}
    finally:
        engine.dispose()


def test_growth_slots_are_exactly_as_many_as_the_code_counts_on(clean_db: sa.Engine) -> None:
    with clean_db.connect() as conn:
        slots = conn.execute(sa.text("SELECT count(*) FROM pool_growth_slots")).scalar_one()
    assert slots == growth.GROWTH_SLOTS
    with pytest.raises(sa.exc.IntegrityError), clean_db.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO pool_growth_slots VALUES ({growth.GROWTH_SLOTS + 1})"))
