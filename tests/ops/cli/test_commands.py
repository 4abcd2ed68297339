"""Every read-only command, run as a subprocess on the real database, as a user types it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from orchestrator.app.settings import ROOT
from orchestrator.ops.cli import build_parser
from tests.factories import add_conversations, make_chip, set_config
from tests.ops.cli.conftest import Cli

pytestmark = pytest.mark.db

#: Every table the orchestrator writes, for before/after snapshots.
TABLES = (
    "pool_config",
    "chips",
    "conversation_chips",
    "orchestrator_operations",
    "notification_outbox",
    "alert_state",
)


def commands() -> list[str]:
    """Every subcommand the parser knows."""
    actions = build_parser()._actions
    return sorted(next(a for a in actions if isinstance(a, argparse._SubParsersAction)).choices)


def db_snapshot(engine: sa.Engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {
            t: sorted(map(str, conn.execute(sa.text(f"SELECT * FROM {t}")).all())) for t in TABLES
        }


def a_pool_with_work_to_do(engine: sa.Engine) -> dict[str, str]:
    """One low-trust active chip, a ready chip, an eligible warming chip, a short warming buffer."""
    set_config(engine, producao_min=2, producao_max=4, ready_min=1, warmup_buffer=3)
    low = make_chip(engine, "active", trust=40)
    add_conversations(engine, low, 3)
    make_chip(engine, "active", trust=95)
    ready = make_chip(engine, "ready", trust=96)
    warming = make_chip(engine, "warming", trust=92)
    return {"low": low, "ready": ready, "warming": warming}


def test_migrate_twice_applies_then_says_unchanged(cli: Cli) -> None:
    # Given a database already at head (the fixture migrated it)
    # When migrate runs twice
    first, second = cli("migrate"), cli("migrate")
    # Then both succeed, and the second says nothing changed
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "database at revision" in second.stdout
    assert "(unchanged)" in second.stdout


def test_status_prints_the_pool_table(clean_db: sa.Engine, cli: Cli) -> None:
    # Given a pool with work to do
    a_pool_with_work_to_do(clean_db)
    # When status runs
    out = cli("status", COLUMNS="120")
    # Then the table shows each tier and the health
    assert out.returncode == 0, out.stderr
    for word in ("producao (active)", "ready", "warming", "degraded", "Pool:"):
        assert word in out.stdout


def test_status_json_has_the_seed_shape_without_chip_lists(clean_db: sa.Engine, cli: Cli) -> None:
    # Given two active, one ready and one warming chip, producao_min 2
    a_pool_with_work_to_do(clean_db)
    # When status --json runs
    out = cli("status", "--json")
    # Then it is the seed's obter_status_pool shape with counts against targets
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"producao", "ready", "warming", "degraded", "saude", "totais"} <= set(data)
    assert data["producao"] == {"count": 2, "min": 2, "max": 4}
    assert data["ready"]["count"] == 1 and data["ready"]["min"] == 1
    assert data["warming"]["count"] == 1 and data["warming"]["buffer"] == 3
    assert data["degraded"]["count"] == 0
    assert data["saude"] in ("saudavel", "atencao", "critico")
    assert data["totais"]["total_chips"] == 4
    assert data["totais"]["banned_retidos"]["count"] == 0
    assert "chips" not in json.dumps(data).replace("total_chips", "")


def pause_purchases(engine: sa.Engine, cause: str, minutes: int) -> None:
    """Purchases failed: paused for minutes from now (what backoff.record_failure leaves)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO purchase_backoff (scope, cause, failures, paused_until, last_error)"
                " VALUES ('purchasing', :cause, 3, now() + make_interval(mins => :m), 'x')"
            ),
            {"cause": cause, "m": minutes},
        )


def test_status_and_plan_say_until_when_purchases_are_paused_and_why(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given purchases paused for 4 minutes after out-of-stock failures, and a warming deficit
    a_pool_with_work_to_do(clean_db)
    pause_purchases(clean_db, "out_of_stock", 4)
    salvy = {"SALVY_API_URL": "http://127.0.0.1:9/"}
    # When ops run status and plan, as text and as JSON
    status, status_json = cli("status", COLUMNS="160", **salvy), cli("status", "--json", **salvy)
    plan, plan_json = cli("plan", COLUMNS="200", **salvy), cli("plan", "--json", **salvy)
    # Then each says purchases are paused, until when and why, and the plan buys nothing
    for out in (status, status_json, plan, plan_json):
        assert out.returncode == 0, out.stderr
    assert "purchases paused until" in status.stdout and "(out_of_stock)" in status.stdout
    assert "purchases paused until" in plan.stdout and "(out_of_stock)" in plan.stdout
    compras = json.loads(status_json.stdout)["compras"]
    assert (compras["estado"], compras["causa"], compras["falhas_seguidas"]) == (
        "pausadas",
        "out_of_stock",
        3,
    )
    assert compras["pausadas_ate"] and compras["aviso"].startswith("purchases paused until")
    planned = json.loads(plan_json.stdout)
    assert planned["plan"]["provision"] == 0 and planned["plan"]["deficits"]["warming"] > 0
    assert planned["status"]["compras"]["estado"] == "pausadas"


def test_status_without_salvy_url_says_nothing_is_bought(clean_db: sa.Engine, cli: Cli) -> None:
    # Given auto_provision on, a warming deficit, and no SALVY_API_URL in the environment
    a_pool_with_work_to_do(clean_db)
    # When ops run status and plan
    status, plan = cli("status", COLUMNS="160"), cli("plan", "--json")
    # Then both say purchases cannot happen, and the plan buys nothing
    assert "auto_provision on but SALVY_API_URL not set" in status.stdout
    planned = json.loads(plan.stdout)
    assert planned["plan"]["provision"] == 0
    assert planned["status"]["compras"]["estado"] == "sem_salvy"


def test_plan_shows_the_next_cycle_and_changes_nothing(
    clean_db: sa.Engine, cli: Cli, empty_queues
) -> None:
    # Given a pool where the next cycle would replace, promote and buy
    a_pool_with_work_to_do(clean_db)
    before = db_snapshot(clean_db)
    # When plan runs, as a table and as JSON
    table, as_json = cli("plan", COLUMNS="120"), cli("plan", "--json")
    # Then both describe the work, and no row and no queued task changed
    assert table.returncode == 0, table.stderr
    assert "replace" in table.stdout and "nada foi alterado" in table.stdout
    assert as_json.returncode == 0, as_json.stderr
    plan = json.loads(as_json.stdout)["plan"]
    assert json.dumps(plan).count("low_trust") >= 1
    assert db_snapshot(clean_db) == before
    assert sum(empty_queues.llen(q) for q in ("orchestrator", "provisioning", "celery")) == 0


@pytest.mark.parametrize("command", [None, *commands()])
def test_help_works_for_every_command(command: str | None) -> None:
    # When a user asks for help (no database needed for that)
    args = ["--help"] if command is None else [command, "--help"]
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then usage is printed and the exit code is 0
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_the_console_script_is_installed_and_answers_help() -> None:
    script = ROOT / ".venv" / "bin" / "chip-orchestrator"
    if not script.exists():
        pytest.skip("no .venv/bin/chip-orchestrator (not installed with make)")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "demo" in out.stdout and "replace" in out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("replace", "not-a-chip"),
        ("replace", "00000000-0000-0000-0000-000000000000"),
        ("replace", "+55 11 90000-0000"),
        ("cancel", "not-a-chip"),
    ],
)
def test_a_bad_chip_is_one_line_on_stderr_and_a_non_zero_exit(
    clean_db: sa.Engine, cli: Cli, empty_queues, args: tuple[str, ...]
) -> None:
    # Given an empty pool
    # When a user names a chip that does not exist
    out = cli(*args, "--wait", "--timeout", "5")
    # Then one clear line, no traceback, non-zero exit, and nothing was queued
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("chip-orchestrator: ")
    assert "Traceback" not in out.stderr + out.stdout
    assert sum(empty_queues.llen(q) for q in ("orchestrator", "provisioning", "celery")) == 0


def test_an_unreachable_database_is_one_line_and_exit_3(cli: Cli) -> None:
    # When the database cannot be reached
    out = cli(
        "status",
        DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2",
    )
    # Then the user gets one line saying so, not a traceback
    assert out.returncode == 3
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_check_exits_zero_on_a_clean_pool_and_one_with_a_violation(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given a clean pool
    clean = cli("check", "--json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout) == []
    # When a chip is cancelled with no operation recording it
    chip = make_chip(clean_db, "cancelled")
    found = cli("check", "--json")
    # Then check exits 1 and names the chip
    assert found.returncode == 1
    assert [(v["kind"], v["chip_id"]) for v in json.loads(found.stdout)] == [
        ("missing_operation", chip)
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("no-such-verb",),
        (),
        ("status", "--bogus"),
        ("report", "--month"),
        ("history",),
        ("webhooks", "--port", "not-a-port"),
        ("replace", "--timeout", "soon", "x"),
    ],
)
def test_a_bad_verb_flag_or_value_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    # When argparse itself refuses the command line (no database needed for that)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then one line naming the program, no usage block, exit 2
    assert out.returncode == 2, out
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("chip-orchestrator"), out.stderr
    assert "usage:" not in out.stderr
