"""`report` and `history` run as a user types them: a subprocess on the real database."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from orchestrator.services.replacement import replace_chip
from tests.factories import add_conversations, chip_row, make_chip, set_config
from tests.ops.cli.conftest import Cli
from tests.ops.cli.test_commands import db_snapshot
from tests.services.test_reports import EXPECTED, a_generated_month, months_ago

pytestmark = pytest.mark.db


def one_line_error(out) -> str:
    """The stderr of a failed command: exactly one line, nothing on stdout."""
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("chip-orchestrator: ")
    return lines[0]


def test_report_json_gives_the_generated_months_exact_counts(clean_db: sa.Engine, cli: Cli) -> None:
    # Given a generated month and R$ 30 per number
    month = months_ago(2)
    a_generated_month(clean_db, month)
    set_config(clean_db, number_monthly_cost=30)
    # When report --month --json runs
    out = cli("report", "--month", month.label, "--json")
    # Then the JSON has the exact counts and cost
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {k: data[k] for k in EXPECTED} == EXPECTED
    assert data["cost"]["total"] == 120.0
    assert data["cost"]["numbers_billed"] == 4
    assert data["banned_held"] == {"count": 0, "cost": 0.0, "currency": "BRL"}


def test_report_table_shows_counts_reasons_and_an_unknown_cost(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given a generated month and no number_monthly_cost
    month = months_ago(2)
    a_generated_month(clean_db, month)
    # When report runs for it
    out = cli("report", "--month", month.label, COLUMNS="140")
    # Then the table names the month, each reason, and says the cost is unknown and why
    assert out.returncode == 0, out.stderr
    for text in (
        month.label,
        "motivo: banned",
        "motivo: sem_motivo",
        "desconhecido",
        "dos quais banidos (numeros mortos)",
    ):
        assert text in out.stdout
    assert "number_monthly_cost is not set" in out.stdout


@pytest.mark.parametrize("month", ["2026-13", "novembro", "2026-1", "9999-01"])
def test_report_with_a_bad_month_is_one_line_and_changes_nothing(
    clean_db: sa.Engine, cli: Cli, month: str
) -> None:
    # Given a pool with history
    a_generated_month(clean_db, months_ago(2))
    before = db_snapshot(clean_db)
    # When report gets a month it cannot read
    line = one_line_error(cli("report", "--month", month))
    # Then one line says what is wrong, and nothing changed
    assert "month" in line
    assert db_snapshot(clean_db) == before


def test_history_json_is_newest_first_by_id_and_by_phone(clean_db: sa.Engine, cli: Cli) -> None:
    # Given an active chip replaced with its conversations
    old = make_chip(clean_db, "active")
    add_conversations(clean_db, old, 2)
    new = make_chip(clean_db, "ready", trust=95)
    replace_chip(clean_db, old, "banned")
    phone = chip_row(clean_db, new).telefone
    # When history runs by id and by phone number (as ops type it)
    by_id = cli("history", new, "--json")
    by_phone = cli("history", f"({phone[3:5]}) {phone[5:10]}-{phone[10:]}", "--json")
    # Then both give the same timeline, newest first, with the swap that brought it in
    assert by_id.returncode == 0, by_id.stderr
    assert by_phone.returncode == 0, by_phone.stderr
    data = json.loads(by_id.stdout)
    assert json.loads(by_phone.stdout) == data
    times = [e["at"] for e in data["events"]]
    assert times == sorted(times, reverse=True)
    swap = [e for e in data["events"] if e["kind"] == "operation"]
    assert [(e["operacao"], e["role"], e["other_chip_id"]) for e in swap] == [
        ("auto_replace", "destination", old)
    ]


def test_history_table_shows_the_chip_and_its_events(clean_db: sa.Engine, cli: Cli) -> None:
    old = make_chip(clean_db, "active")
    make_chip(clean_db, "ready", trust=95)
    replace_chip(clean_db, old, "banned")
    out = cli("history", old, COLUMNS="160")
    assert out.returncode == 0, out.stderr
    for text in ("Historico de", "auto_replace", "estado: degraded", "Chip banido"):
        assert text in out.stdout


@pytest.mark.parametrize(
    "ref", ["00000000-0000-4000-8000-000000000000", "+55 11 90000-0000", "nao-e-chip", "123"]
)
def test_history_of_an_unknown_chip_is_one_line(clean_db: sa.Engine, cli: Cli, ref: str) -> None:
    line = one_line_error(cli("history", ref))
    assert "chip" in line


def test_history_with_a_bad_limit_is_one_line(clean_db: sa.Engine, cli: Cli) -> None:
    chip = make_chip(clean_db, "active")
    assert "--limit" in one_line_error(cli("history", chip, "--limit", "0"))
