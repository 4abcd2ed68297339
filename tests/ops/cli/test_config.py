"""`config` and `config set` run as ops type them: a subprocess on the real database."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from orchestrator.store.schema import operations, outbox, pool_config
from tests.ops.cli.conftest import Cli
from tests.ops.cli.test_commands import db_snapshot

pytestmark = pytest.mark.db

#: The pool_config row as `INSERT INTO pool_config DEFAULT VALUES` writes it (clean_db).
DEFAULTS = {
    "producao_min": 10,
    "producao_max": 20,
    "ready_min": 3,
    "warmup_buffer": 10,
    "warmup_days": 21,
    "trust_min_for_ready": 85.0,
    "trust_degraded_threshold": 60.0,
    "auto_provision": True,
    "default_ddd": 11,
    "max_provisions_per_cycle": 3,
    "disconnect_grace_minutes": 30,
    "replace_storm_fraction": 0.5,
    "auto_cancel_banned": False,
    "alert_cooldown_minutes": 30,
    "flap_max_per_hour": 6,
    "number_monthly_cost": None,
    "service_level": 0.95,
    "auto_size": False,
    "max_purchases_per_day": None,
    "rehab_after_minutes": 60,
}


def settings(engine: sa.Engine) -> dict:
    with engine.connect() as conn:
        row = conn.execute(sa.select(pool_config)).mappings().one()
    return {name: row[name] for name in DEFAULTS}


def config_operations(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(operations).where(operations.c.operacao == "config_change")
        ).all()


def messages(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(outbox.c.canal, outbox.c.texto))]


def test_config_shows_every_pool_config_setting(clean_db: sa.Engine, cli: Cli) -> None:
    # Given the default pool_config row
    # When ops read it as JSON and as a table
    as_json = cli("config", "--json")
    table = cli("config", COLUMNS="120")
    # Then the JSON holds every column by the table's names, in its order, with the row's values
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert list(data) == list(DEFAULTS)
    assert data == DEFAULTS
    # and the table lists each one, NULL saying what it means
    assert table.returncode == 0, table.stderr
    for name in DEFAULTS:
        assert name in table.stdout
    assert "NULL (no cap)" in table.stdout and "NULL (unknown)" in table.stdout


def test_config_set_changes_the_row_records_one_operation_and_tells_operacoes(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given the default pool_config row
    # When ops change five settings of four types at once
    out = cli(
        "config",
        "set",
        "producao_min=12",
        "producao_max=30",
        "auto_size=on",
        "number_monthly_cost=29.90",
        "trust_min_for_ready=87.5",
    )
    # Then the row holds them
    assert out.returncode == 0, out.stderr
    after = settings(clean_db)
    assert after == {
        **DEFAULTS,
        "producao_min": 12,
        "producao_max": 30,
        "auto_size": True,
        "number_monthly_cost": Decimal("29.90"),
        "trust_min_for_ready": 87.5,
    }
    # and exactly one config_change operation records them, before and after
    [op] = config_operations(clean_db)
    assert op.chip_id is None and op.sucesso is True
    assert op.metadata == {
        "antes": {
            "producao_min": 10,
            "producao_max": 20,
            "auto_size": False,
            "number_monthly_cost": None,
            "trust_min_for_ready": 85.0,
        },
        "depois": {
            "producao_min": 12,
            "producao_max": 30,
            "auto_size": True,
            "number_monthly_cost": 29.9,
            "trust_min_for_ready": 87.5,
        },
    }
    # and exactly one message tells #operacoes what changed
    [(canal, texto)] = messages(clean_db)
    assert canal == "operacoes"
    assert "Configuracao do pool alterada" in texto
    for line in (
        "`producao_min`: 10 -> 12",
        "`producao_max`: 20 -> 30",
        "`auto_size`: desligado -> ligado",
        "`number_monthly_cost`: NULL -> 29.9",
        "`trust_min_for_ready`: 85 -> 87.5",
    ):
        assert line in texto
    # and the command says what it did
    assert "producao_min: 10 -> 12" in out.stdout
    assert f"recorded as operation {op.id}" in out.stdout


def test_config_set_records_only_what_changed_and_null_clears_a_nullable_setting(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given the default row (producao_min 10, rehab_after_minutes 60)
    # When ops set producao_min to what it is and rehab_after_minutes to NULL
    out = cli("config", "set", "producao_min=10", "rehab_after_minutes=NULL")
    # Then only rehab_after_minutes changed, and only it is recorded
    assert out.returncode == 0, out.stderr
    assert settings(clean_db)["rehab_after_minutes"] is None
    [op] = config_operations(clean_db)
    assert op.metadata == {
        "antes": {"rehab_after_minutes": 60},
        "depois": {"rehab_after_minutes": None},
    }
    assert "producao_min: already 10 (unchanged)" in out.stdout


def test_config_set_to_the_same_values_records_nothing_and_says_so(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given the default row
    before = db_snapshot(clean_db)  # pool_config's updated_at included
    # When ops set values it already holds (spelled differently)
    out = cli("config", "set", "producao_min=10", "auto_provision=TRUE", "service_level=0.950")
    # Then nothing is written, recorded or sent, and the command says so
    assert out.returncode == 0, out.stderr
    assert db_snapshot(clean_db) == before
    assert "pool_config unchanged: nothing recorded" in out.stdout


@pytest.mark.parametrize(
    ("assignments", "says"),
    [
        (("producao_min=25",), "producao_min must not exceed producao_max"),
        (("producao_min=5", "producao_max=4"), "producao_min must not exceed producao_max"),
        (("default_ddd=5",), "default_ddd must be a Brazilian area code (11..99)"),
        (("trust_degraded_threshold=101",), "trust thresholds must be between 0 and 100"),
        (("warmup_days=-1",), "sizes, days and minutes must not be negative"),
        (("service_level=1",), "service_level must be between 0 and 1, exclusive"),
        (("flap_max_per_hour=-2",), "flap_max_per_hour must not be negative"),
        (("number_monthly_cost=-1",), "number_monthly_cost must not be negative"),
        (("max_purchases_per_day=-1",), "max_purchases_per_day must not be negative"),
        (("ready_min=4", "producao_typo=1"), "unknown setting 'producao_typo'"),
        (("ready_min=four",), "config set ready_min=four: not an integer"),
        (("auto_size=maybe",), "not true, false, on or off"),
        (("producao_min=NULL",), "producao_min cannot be NULL"),
        (("number_monthly_cost=9.999",), "at most 2 decimal places"),
        (("producao_max=3000000000",), "out of range for an integer column"),
        (("replace_storm_fraction=nan",), "not a finite number"),
        (("ready_min",), "'ready_min' is not NAME=VALUE"),
        (("ready_min=4", "ready_min=5"), "ready_min given twice"),
    ],
)
def test_a_refused_config_set_is_one_line_exit_2_and_changes_nothing(
    clean_db: sa.Engine, cli: Cli, assignments: tuple[str, ...], says: str
) -> None:
    # Given the default row
    before = db_snapshot(clean_db)
    # When ops ask for a change the column types or the database's constraints refuse
    out = cli("config", "set", *assignments)
    # Then one readable line, exit 2, and the row, operations and outbox are as they were
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("chip-orchestrator: config set") and says in line, line
    assert "violates check constraint" not in line
    assert db_snapshot(clean_db) == before
